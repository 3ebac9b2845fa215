"""The external-validation analysis the coordinator builds from what the sites sent.

Inputs are only declared statistics (:mod:`fedmi.shared.contract`): score histograms, confusion
counts, calibration bins, squared-error sums and the intervals each site computed on its
own scores. Outputs go to ``report["validation"]``:

* ``roc``: per-site ROC points and pooled ROCs from summed histograms (all sites, and
  per role);
* ``calibration``: reliability curves (per site and pooled) and ECE;
* ``meta_analysis``: DerSimonian–Laird random-effects pooling of the site AUCs (all sites;
  also per role when a role has at least two sites), with τ², I² and the prediction
  interval;
* ``predictive_values``: PPV and NPV at the operating threshold for each site's own
  prevalence and for the run config's ``report-prevalences``;
* ``suppressed``: what the sites withheld under their small-cell rule.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

from fedmi.server.history import RunHistory, summarise_stats
from fedmi.server.report.meta import dersimonian_laird
from fedmi.shared.contract import CALIBRATION_BINS, OPERATING_THRESHOLD
from fedmi.shared.stats import (
    pool_statistics,
    predictive_values,
    reliability_curve,
    roc_from_histograms,
)


def _round(x: float | None, digits: int = 4) -> float | None:
    return None if x is None or not math.isfinite(x) else round(float(x), digits)


def _roc(stats: dict) -> list[list[float]]:
    return [
        [_round(f), _round(t)] for f, t in roc_from_histograms(stats["hist-pos"], stats["hist-neg"])
    ]  # type: ignore[misc]


def _calibration(stats: dict) -> list[dict[str, float | int]] | None:
    if "cal-count" not in stats:
        return None
    points = reliability_curve(stats["cal-count"], stats["cal-sum-prob"], stats["cal-sum-label"])
    return [
        {
            "bin": p.bin,
            "n": p.n,
            "mean_predicted": _round(p.mean_predicted),  # type: ignore[dict-item]
            "observed": _round(p.observed),  # type: ignore[dict-item]
        }
        for p in points
    ]


def auc_variance(row: dict) -> float | None:
    """The site's DeLong variance, floored at ``1 / (4 · n_pos · n_neg)``.

    DeLong's variance is 0 when a site separates its classes perfectly; the floor (the
    variance contribution of a single tied pair) keeps such a site from taking all the
    weight of the meta-analysis.
    """
    se = row.get("auc_se")
    n_pos, n_neg = int(row.get("n_positive", 0)), int(row["n"]) - int(row.get("n_positive", 0))
    if se is None or row.get("auc") is None or n_pos < 1 or n_neg < 1:
        return None
    return max(float(se) ** 2, 1.0 / (4.0 * n_pos * n_neg))


def site_auc(row: dict) -> float | None:
    """The AUC a site computed on its unbinned scores (exact, or with DP noise), or ``None``."""
    value = row.get("auc")
    return None if value is None else float(value)


def logit_auc(row: dict) -> tuple[float, float] | None:
    """The site's AUC on the logit scale and its variance there (delta method).

    The AUC is first kept half a case pair inside (0, 1) — ``1 / (2 · n_pos · n_neg)`` from
    either end — so that a site that separates its classes perfectly has a finite logit
    (and, with the variance floor of :func:`auc_variance`, a large logit variance).
    """
    auc, var = site_auc(row), auc_variance(row)
    if auc is None or var is None:
        return None
    n_pos = int(row["n_positive"])
    half_pair = 1.0 / (2.0 * n_pos * (int(row["n"]) - n_pos))
    a = min(max(auc, half_pair), 1.0 - half_pair)
    return math.log(a / (1.0 - a)), var / (a * (1.0 - a)) ** 2


def _expit(x: float | None) -> float | None:
    return None if x is None else 1.0 / (1.0 + math.exp(-x))


#: what ``meta_analysis[...]["scale"]`` says of the pooling
META_SCALE = (
    "logit: each site's AUC (its Mann-Whitney AUC, exact or under DP noise) and its variance "
    "(DeLong, or noise-inclusive under DP) are taken to the logit scale, pooled there, and the "
    "estimate and its intervals transformed back to AUCs (all inside [0, 1])"
)


def meta_analysis(rows: Iterable[dict]) -> dict[str, object] | None:
    """DerSimonian–Laird pooling of the sites' AUCs on the logit scale.

    ``estimate``, ``fixed``, ``ci_low``/``ci_high`` and ``pi_low``/``pi_high`` are AUCs
    (back-transformed, so inside [0, 1]); ``se``, ``fixed_se`` and ``tau2`` are on the
    logit scale, as is everything under ``logit``.
    """
    use = [(r, logit_auc(r)) for r in rows]
    use = [(r, lv) for r, lv in use if lv is not None]
    if len(use) < 2:
        return None
    res = dersimonian_laird([lv[0] for _, lv in use], [lv[1] for _, lv in use])
    raw = res.as_dict()
    out: dict[str, object] = {
        k: _round(v, 6) if isinstance(v, float) else v for k, v in raw.items()
    }
    for key in ("fixed", "estimate", "ci_low", "ci_high", "pi_low", "pi_high"):
        out[key] = _round(_expit(raw[key]), 6)  # type: ignore[arg-type]
    out["logit"] = {
        key: _round(raw[key], 6)  # type: ignore[arg-type]
        for key in ("fixed", "estimate", "ci_low", "ci_high", "pi_low", "pi_high")
    }
    out["sites"] = [r["site_id"] for r, _ in use]
    out["scale"] = META_SCALE
    return out


def _pv_bounds(row: dict, prevalence: float) -> dict[str, object]:
    sens, spec = row.get("sensitivity"), row.get("specificity")
    out: dict[str, object] = {"prevalence": round(prevalence, 4)}
    if sens is None or spec is None:
        return out | {"ppv": None, "npv": None, "ppv_ci": None, "npv_ci": None}
    ppv, npv = predictive_values(sens, spec, prevalence)
    out["ppv"], out["npv"] = _round(ppv), _round(npv)
    sci, pci = row.get("sensitivity_ci"), row.get("specificity_ci")
    if sci and pci:
        # PPV and NPV both increase with sensitivity and specificity: the interval ends
        # come from the ends of the sites' Wilson intervals (conservative, not exact)
        lo = predictive_values(sci[0], pci[0], prevalence)
        hi = predictive_values(sci[1], pci[1], prevalence)
        out["ppv_ci"] = [_round(lo[0]), _round(hi[0])]
        out["npv_ci"] = [_round(lo[1]), _round(hi[1])]
    else:
        out["ppv_ci"] = out["npv_ci"] = None
    return out


def predictive_value_table(rows: Iterable[dict], prevalences: Sequence[float]) -> list[dict]:
    """PPV/NPV per site at its own prevalence (``source = "site"``) and at ``prevalences``."""
    table = []
    for r in rows:
        if r.get("status") == "suppressed" or not r.get("n"):
            continue
        own = r["n_positive"] / r["n"]
        entries = [_pv_bounds(r, own) | {"source": "site"}]
        entries += [_pv_bounds(r, p) | {"source": "given"} for p in prevalences]
        table.append({"site_id": r["site_id"], "role": r.get("role"), "values": entries})
    return table


def validation_section(history: RunHistory, prevalences: Sequence[float]) -> dict[str, object]:
    """``report["validation"]`` from the final evaluation-only round."""
    rows = [{"site_id": k, **v} for k, v in sorted(history.final.items())]
    usable = {k: s for k, s in history.final_raw.items() if "hist-pos" in s}
    roc_sites = {k: _roc(s) for k, s in sorted(usable.items())}
    cal_sites = {k: _calibration(s) for k, s in sorted(usable.items())}
    pooled_roc: dict[str, object] = {}
    pooled_cal: dict[str, object] = {}
    pooled_summary: dict[str, object] = {}
    groups = {"all": list(usable)}
    for role in ("train", "holdout"):
        names = [k for k in usable if history.final[k].get("role") == role]
        if names:
            groups[role] = names
    for group, names in groups.items():
        if not names:
            continue
        pooled = pool_statistics([usable[k] for k in names])
        pooled_roc[group] = _roc(pooled)
        pooled_cal[group] = _calibration(pooled)
        pooled_summary[group] = summarise_stats(pooled) | {"sites": sorted(names)}
    meta: dict[str, object] = {"all": meta_analysis(r for r in rows if r.get("status") == "ok")}
    for role in ("train", "holdout"):
        ma = meta_analysis(r for r in rows if r.get("status") == "ok" and r.get("role") == role)
        if ma is not None:
            meta[role] = ma
    suppressed = [
        {
            "site_id": r["site_id"],
            "role": r.get("role"),
            "what": "all statistics (fewer cases than the site's min cell count)"
            if r.get("status") == "suppressed"
            else f"{r['suppressed_cells']} small histogram/calibration cell(s) merged",
            "min_cell_count": r.get("min_cell_count"),
        }
        for r in rows
        if r.get("status") == "suppressed" or r.get("suppressed_cells")
    ]
    return {
        "threshold": OPERATING_THRESHOLD,
        "calibration_bins": CALIBRATION_BINS,
        "roc": {"per_site": roc_sites, "pooled": pooled_roc},
        "calibration": {"per_site": cal_sites, "pooled": pooled_cal},
        "pooled": pooled_summary,
        "meta_analysis": meta,
        "predictive_values": {
            "prevalences": list(prevalences),
            "per_site": predictive_value_table(rows, prevalences),
        },
        "suppressed": suppressed,
    }


def data_counts(history: RunHistory) -> dict[str, object]:
    """``report["data_counts"]``: released scan counts per tracer and scanner, per site and summed."""
    per_site = {
        s.site_id: s.data_counts for s in sorted(history.sites.values(), key=lambda s: s.site_id)
    }
    total: dict[str, dict[str, int]] = {}
    for counts in per_site.values():
        for field, cats in (counts or {}).items():
            for name, n in cats.items():
                total.setdefault(field, {})
                total[field][name] = total[field].get(name, 0) + int(n)
    return {"per_site": per_site, "total": total}
