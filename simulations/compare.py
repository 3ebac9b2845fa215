"""``fedmi-sim compare``: every method on identical data, splits and seeds, in one table.

For each seed the same federation folder is run with ``local``, ``pooled``, ``fedavg``,
``fedprox``, ``fedbn`` (local GroupNorm affines), ``fedmi`` (per-group harmonization
adapter + local norm corrections, label-free adaptation at holdout sites) and
``fedmi-noadapt`` (fedmi with ``adaptation = "off"``: holdouts keep identity layers) through
:func:`fedmi.simulations.runner.run`. The split and the initial weights depend only on the seed,
so every method sees the same test scans. The table gives each site's AUC (its test split;
all scans at holdout sites) and the pooled training-site and holdout AUC, as mean ± sd
over seeds, plus the share of the FedAvg-to-pooled holdout gap that each method closes.
A second table gives each holdout site at the operating point the run chose on its training
sites' histograms (report.json ``operating_point``, docs/operating-point.md): balanced
accuracy there against the best any threshold reaches at the site, sensitivity,
specificity, and ECE before and after the Platt recalibration.

Outputs: ``OUT/compare.json`` (every number, per seed), ``OUT/compare.md`` (the table) and
the individual runs in ``OUT/runs/<method>-seed<k>/``.
"""

from __future__ import annotations

import json
import logging
import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from fedmi.server.report.document import write_json
from fedmi.shared.methods import METHODS

log = logging.getLogger(__name__)

#: Rows of the comparison that are a method run with other settings: name → (method, run config)
VARIANTS: dict[str, tuple[str, dict[str, object]]] = {
    "fedmi-noadapt": ("fedmi", {"adaptation": "off"}),
}
COMPARE_METHODS = ("local", "pooled", "fedavg", "fedprox", "fedbn", "fedmi", "fedmi-noadapt")
HOLDOUT = "holdout (pooled)"
TRAIN = "train (pooled)"
#: pooled histogram AUCs with a wider bound (k-merged bins) are shown as "—"
MAX_AUC_BOUND = 0.05


def _run_dir(out_dir: Path, method: str, seed: int) -> Path:
    return out_dir / "runs" / f"{method}-seed{seed}"


def _results(report: dict) -> tuple[dict[str, float | None], dict[str, str], dict[str, str]]:
    """Per-column AUC, site roles and harmonization states of one report."""
    aucs: dict[str, float | None] = {}
    roles: dict[str, str] = {}
    used: dict[str, str] = {}
    final = report["final"]
    for r in final["per_site"]:
        # the site's own AUC of its unbinned scores; the histogram AUC only when the site
        # sent none (its bins are merged to >= k cases each, which can flatten it to 0.5)
        exact = r.get("auc")
        aucs[r["site_id"]] = exact if exact is not None else r.get("auc_histogram")
        roles[r["site_id"]] = r.get("role", "?")
        if r.get("harmonization"):
            used[r["site_id"]] = str(r["harmonization"])
    pooled = final.get("pooled") or {}
    for role, name in (("train", TRAIN), ("holdout", HOLDOUT)):
        row = pooled.get(role) or {}
        # a histogram AUC whose bins were merged to >= k cases is only bounded to
        # ± auc_histogram_bound: too coarse to compare methods by
        bound = row.get("auc_histogram_bound")
        coarse = bound is not None and float(bound) > MAX_AUC_BOUND
        aucs[name] = None if coarse else row.get("auc_histogram")
        members = [r for r in final["per_site"] if r.get("role") == role]
        if len(members) == 1 and members[0].get("auc") is not None:
            aucs[name] = members[0]["auc"]  # one site: its own AUC is the pooled one
    return aucs, roles, used


#: the operating-point figures compared per site (report.json ``operating_point``)
OP_FIGURES = ("threshold", "ba", "best_ba", "sens", "spec", "ece", "ece_platt")


def operating_point_figures(report: dict) -> dict[str, dict[str, float | None]]:
    """Per site: the threshold, balanced accuracy at it and the best any threshold gives,
    sensitivity, specificity, ECE before and after the Platt recalibration."""
    section = report.get("operating_point") or {}
    out: dict[str, dict[str, float | None]] = {}
    for row in section.get("per_site", []):
        after = row.get("calibration_recalibrated") or {}
        out[row["site_id"]] = {
            "threshold": section.get("threshold"),
            "ba": row.get("balanced_accuracy"),
            "best_ba": row.get("best_balanced_accuracy"),
            "sens": (row.get("sensitivity") or {}).get("value"),
            "spec": (row.get("specificity") or {}).get("value"),
            "ece": (row.get("calibration") or {}).get("ece"),
            "ece_platt": after.get("ece"),
        }
    return out


def operating_point_table(doc: dict) -> str:
    """Holdout sites at the federation's operating point, mean ± sd over seeds."""
    op = doc.get("operating_point") or {}
    holdouts = [c for c, r in doc["roles"].items() if r == "holdout"]
    head = [
        "method",
        "site",
        "threshold",
        "BA at op",
        "best BA",
        "sens",
        "spec",
        "ECE",
        "ECE Platt",
    ]
    lines = [
        "Holdout sites at the operating point chosen on the training sites' histograms "
        "(BA = balanced accuracy; best BA = the best any threshold gives at that site)",
        "",
        "| " + " | ".join(head) + " |",
        "|" + "---|" * len(head),
    ]
    for m in doc["methods"]:
        for site in sorted(holdouts):
            figs = op.get(m, {}).get(site)
            if not figs:
                continue
            cells = [_cell(figs[f]["mean"], figs[f]["sd"]) for f in OP_FIGURES]
            lines.append("| " + " | ".join([m, site, *cells]) + " |")
    return "\n".join(lines)


def _mean_sd(values: Sequence[float | None]) -> tuple[float | None, float | None, int]:
    v = [float(x) for x in values if x is not None and math.isfinite(float(x))]
    if not v:
        return None, None, 0
    return statistics.fmean(v), (statistics.stdev(v) if len(v) > 1 else None), len(v)


def _cell(mean: float | None, sd: float | None) -> str:
    if mean is None:
        return "—"
    return f"{mean:.3f} ± {sd:.3f}" if sd is not None else f"{mean:.3f}"


def holdout_gap(
    summary: dict[str, dict[str, dict]], column: str = HOLDOUT
) -> tuple[float, float | None] | None:
    """Pooled − FedAvg mean AUC in ``column`` and its standard error, or ``None``.

    With the same seeds on both sides the per-seed differences are paired; their standard
    error is ``sd(differences)/√n`` (``None`` with a single seed).
    """
    try:
        fedavg, pooled = summary["fedavg"][column], summary["pooled"][column]
    except KeyError:
        return None
    if fedavg["mean"] is None or pooled["mean"] is None:
        return None
    gap = pooled["mean"] - fedavg["mean"]
    a, b = pooled.get("values") or [], fedavg.get("values") or []
    pairs = [(x, y) for x, y in zip(a, b, strict=False) if x is not None and y is not None]
    if len(pairs) == len(a) == len(b) and len(pairs) > 1:
        diffs = [x - y for x, y in pairs]
        return gap, statistics.stdev(diffs) / math.sqrt(len(diffs))
    return gap, None


def gap_closed(
    summary: dict[str, dict[str, dict]], column: str = HOLDOUT
) -> dict[str, float | None]:
    """Share of the FedAvg-to-pooled gap in ``column`` closed by each method (mean AUCs).

    Only a *measurable* gap is shared out: pooled above FedAvg by more than twice the
    gap's standard error (any positive gap when a single seed gives no error). Otherwise
    every share is ``None``: dividing by a gap within seed noise gives meaningless shares.
    """
    found = holdout_gap(summary, column)
    if found is None or not _measurable(*found):
        return {m: None for m in summary}
    fedavg = summary["fedavg"][column]["mean"]
    gap = found[0]
    return {
        m: (None if s[column]["mean"] is None else (s[column]["mean"] - fedavg) / gap)
        for m, s in summary.items()
    }


def _measurable(gap: float, se: float | None) -> bool:
    return gap > 0 and (se is None or gap > 2.0 * se)


def markdown_table(doc: dict) -> str:
    """The comparison as a Markdown table (also printed)."""
    cols = doc["columns"]
    roles = doc["roles"]
    head = ["method", *[f"{c} ({roles[c]})" if c in roles else c for c in cols], "gap closed"]
    epochs = doc["local_epochs"] or "the model's default"
    lines = [
        f"AUC, mean ± sd over seeds {doc['seeds']} — task {doc['task']}, {doc['rounds']} rounds "
        f"× {epochs} local epoch(s), data {doc['data']}",
        "",
        "| " + " | ".join(head) + " |",
        "|" + "---|" * len(head),
    ]
    for m in doc["methods"]:
        s = doc["summary"][m]
        g = doc["gap_closed"].get(m)
        cells = [_cell(s[c]["mean"], s[c]["sd"]) for c in cols]
        lines.append(
            "| " + " | ".join([m, *cells, "—" if g is None else f"{100 * g:.0f} %"]) + " |"
        )
    lines.append("")
    lines.append(
        "gap closed = (method − FedAvg) / (pooled − FedAvg) of the mean pooled-holdout AUC; "
        "per-site AUCs are the sites' own exact ones; — = suppressed (fewer than k cases of "
        f"a class) or a pooled histogram AUC bounded only to more than ±{MAX_AUC_BOUND}."
    )
    if doc.get("harmonization"):
        used = ", ".join(f"{k}: {v}" for k, v in sorted(doc["harmonization"].items()))
        lines.append(f"fedmi local layers used at evaluation: {used}")
    if doc.get("notes"):
        lines.extend(doc["notes"])
    return "\n".join(lines)


def run_config(run_dir: Path, extra: dict[str, object] | None) -> dict[str, object]:
    """One run's extra run config: its own privacy ledgers unless the caller chose a folder.

    Under DP (``--config sim-default-dp=on``) every method must spend the same budget: a
    ledger shared across runs would find the budget spent after the first run and the
    sites would refuse to train. The runs' ledgers live in ``RUN/site-ledgers/<site>``.
    """
    return {"sim-ledger-root": str((run_dir / "site-ledgers").resolve()), **dict(extra or {})}


def _reused(report_path: Path, method: str, seed: int) -> dict | None:
    """A finished run of ``method`` (a row name) at ``seed`` left by an earlier compare."""
    if not report_path.exists():
        return None
    report = json.loads(report_path.read_text())
    # only runs that compare itself finished (a killed run leaves a partial report)
    if (
        not report.get("compare_finished")
        or report.get("compare_method", report.get("method")) != method
    ):
        return None
    return report if int(report.get("seed", -1)) == int(seed) else None


@dataclass
class _Results:
    """What the runs so far gave: per-seed AUCs, site roles, fedmi's local layers, runs."""

    per_seed: dict[str, dict[str, list[float | None]]]
    roles: dict[str, str] = field(default_factory=dict)
    harmonization: dict[str, str] = field(default_factory=dict)
    runs: list[dict[str, object]] = field(default_factory=list)
    #: method → site → figure → per-seed values at the federation's operating point
    op: dict[str, dict[str, dict[str, list[float | None]]]] = field(default_factory=dict)

    def add(self, method: str, seed: int, report: dict, report_path: Path) -> None:
        aucs, site_roles, used = _results(report)
        for site, figures in operating_point_figures(report).items():
            for name, value in figures.items():
                by_site = self.op.setdefault(method, {}).setdefault(site, {})
                by_site.setdefault(name, []).append(value)
        self.roles.update(site_roles)
        if method in ("fedmi", *VARIANTS):
            for site, state in used.items():
                self.harmonization[f"{method}: {site} seed {seed}"] = state
        for col, auc in aucs.items():
            self.per_seed[method].setdefault(col, []).append(auc)
        self.runs.append({"method": method, "seed": int(seed), "report": str(report_path)})


def _federation(data_root: Path | None, out_dir: Path, task: str, preset: str, seed: int) -> Path:
    """The federation to compare on (generated into ``out_dir/data`` when none is given)."""
    if data_root is None:
        from fedmi.simulations.generator import generate_federation

        data_root = out_dir / "data"
        if not (data_root / "federation.json").exists():
            log.info("no --data given: generating the %s %s federation", preset, task)
            generate_federation(data_root, task=task, preset=preset, seed=seed)
    return data_root.resolve()


def compare(
    *,
    data_root: Path | None,
    task: str,
    out_dir: Path,
    rounds: int,
    seeds: Sequence[int],
    local_epochs: int,
    methods: Sequence[str] = COMPARE_METHODS,
    preset: str = "default",
    extra: dict[str, object] | None = None,
    reuse: bool = False,
) -> dict:
    """Run ``methods`` × ``seeds`` on one federation and write compare.json / compare.md."""
    from fedmi.simulations.runner import run

    known = (*METHODS, *VARIANTS)
    unknown = [m for m in methods if m not in known]
    if unknown:
        raise ValueError(f"unknown method(s) {unknown}; choose from {', '.join(known)}")
    out_dir = out_dir.resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    data_root = _federation(data_root, out_dir, task, preset, int(seeds[0]))
    results = _Results({m: {} for m in methods})

    def document() -> dict:
        return _document(data_root, task, rounds, local_epochs, seeds, methods, extra, results)

    for seed in seeds:
        for method in methods:
            run_dir = _run_dir(out_dir, method, int(seed))
            report_path = run_dir / "report.json"
            report = _reused(report_path, method, int(seed)) if reuse else None
            if report is None:
                log.info("compare: %s, seed %d", method, seed)
                base, settings = VARIANTS.get(method, (method, {}))
                report = run(
                    data_root=data_root,
                    task=task,
                    out_dir=run_dir,
                    rounds=rounds,
                    method=base,
                    seed=int(seed),
                    local_epochs=local_epochs,
                    extra=run_config(run_dir, {**dict(extra or {}), **settings}),
                )
                report["seed"] = int(seed)
                report["compare_method"] = method
                report["compare_finished"] = True
                write_json(report_path, report)
            results.add(method, int(seed), report, report_path)
            # after every run, so a long comparison can be read (and resumed) part-way
            _write(out_dir, document(), final=False)
    doc = document()
    table = _write(out_dir, doc, final=True)
    print(table, flush=True)
    return doc


def _document(
    data_root: Path,
    task: str,
    rounds: int,
    local_epochs: int,
    seeds: Sequence[int],
    methods: Sequence[str],
    extra: dict[str, object] | None,
    results: _Results,
) -> dict:
    roles, per_seed = results.roles, results.per_seed
    sites = sorted(roles, key=lambda s: (roles[s] != "train", s))
    columns = [*sites, TRAIN, HOLDOUT]
    summary: dict[str, dict[str, dict]] = {}
    for m in methods:
        summary[m] = {}
        for c in columns:
            mean, sd, n = _mean_sd(per_seed[m].get(c, []))
            summary[m][c] = {"mean": mean, "sd": sd, "n": n, "values": per_seed[m].get(c, [])}
    pooled_gap = _gap_entry(summary, HOLDOUT)
    doc = {
        "task": task,
        "data": str(data_root),
        "rounds": rounds,
        "local_epochs": local_epochs,
        "seeds": [int(s) for s in seeds],
        "methods": list(methods),
        "columns": columns,
        "roles": roles,
        "summary": summary,
        "gap_closed": pooled_gap["closed"],
        "harmonization": results.harmonization,
        "extra_config": dict(extra or {}),
        "runs": results.runs,
        "notes": [],
        "operating_point": {
            m: {
                site: {
                    f: dict(zip(("mean", "sd", "n"), _mean_sd(v), strict=True)) | {"values": v}
                    for f, v in figs.items()
                }
                for site, figs in by_site.items()
            }
            for m, by_site in results.op.items()
        },
    }
    holdouts = [c for c in sites if roles[c] == "holdout"]
    # with several holdout sites, each one's exact AUC gives its own gap (the pooled
    # histogram AUC can be too coarse to use, and a pooled gap can hide a site's)
    doc["site_gaps"] = {c: _gap_entry(summary, c) for c in holdouts} if len(holdouts) > 1 else {}
    if "fedmi" in methods:
        doc["notes"].append(_gap_note(pooled_gap, "holdout", summary))
        for c, entry in doc["site_gaps"].items():
            doc["notes"].append(_gap_note(entry, f"{c} (holdout)", summary))
    return doc


def _gap_entry(summary: dict[str, dict[str, dict]], column: str) -> dict[str, object]:
    """The FedAvg-to-pooled gap in one column: ``gap``, ``se`` and each method's share."""
    found = holdout_gap(summary, column)
    return {
        "gap": None if found is None else found[0],
        "se": None if found is None else found[1],
        "closed": gap_closed(summary, column),
    }


def _gap_note(entry: dict, label: str, summary: dict[str, dict[str, dict]]) -> str:
    """One line on a column's gap: fedmi's share against the target, or why there is none."""
    share = entry["closed"].get("fedmi")
    if share is not None:
        verdict = "meets" if share >= 0.5 else "does NOT meet"
        return (
            f"{label}: fedmi closes {100 * share:.0f} % of the FedAvg-to-pooled gap: "
            f"{verdict} the target of at least half."
        )
    if entry["gap"] is None:
        if "fedavg" not in summary or "pooled" not in summary:
            return f"{label}: no FedAvg-to-pooled gap to measure (FedAvg or pooled was not run)."
        return (
            f"{label}: no FedAvg-to-pooled gap to measure: the AUC is missing for FedAvg or "
            f"pooled (suppressed, or a pooled histogram AUC bounded to more than "
            f"±{MAX_AUC_BOUND})."
        )
    err = "" if entry["se"] is None else f" ± {entry['se']:.3f} (s.e. over paired seeds)"
    return (
        f"{label}: no measurable FedAvg-to-pooled gap to close: pooled − FedAvg = "
        f"{entry['gap']:+.3f}{err}; a gap must be positive and above twice its standard error."
    )


def _write(out_dir: Path, doc: dict, *, final: bool) -> str:
    done = len(doc["runs"])
    planned = len(doc["methods"]) * len(doc["seeds"])
    doc["complete"] = final and done == planned
    if not doc["complete"]:
        doc["notes"].append(f"PARTIAL: {done} of {planned} runs finished so far.")
    table = markdown_table(doc) + "\n\n" + operating_point_table(doc)
    write_json(out_dir / "compare.json", doc)
    (out_dir / "compare.md").write_text(table + "\n", encoding="utf-8")
    return table
