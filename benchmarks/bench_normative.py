"""Benchmark: the federated normative model's anomaly score at the holdout sites (issue 21).

For each generated fdg-ad federation (one per seed), every site is ingested once; the
training sites' normal scans give their sufficient statistics exactly as
``query.normative`` computes them (:mod:`fedmi.client.normative`), and the holdout's
labelled scans are scored as ``evaluate.normative`` scores them, here with the *exact*
Mann–Whitney AUC of the unbinned anomaly scores (not the report's histogram estimate).

Variants of the fit, all on the same scans:

* ``federated``: :func:`fedmi.shared.normative.fit` of the sites' exact statistics;
* ``pooled``: :func:`fedmi.shared.normative.fit_pooled` on the stacked normals (the baseline
  the federated fit must match);
* ``federated, holdout's own offset``: the federated fit, each holdout scoring its scans
  after its own site offset from its normals (leave-one-out for a normal), as
  ``evaluate.normative`` does without DP and ``fedmi-site predict`` does at a site with
  labelled normals;
* ``dp eps=E``: each site's statistics with the Gaussian noise of one ``query.normative``
  release at zCDP ``ρ(E)`` (:func:`fedmi.shared.contract.privacy.rho_for_epsilon` at the
  sites' δ), ``draws`` noise draws per seed; ``dp default`` uses the ρ a training site with
  the default privacy settings gives the release (:func:`fedmi.client.privacy.release.kind_rho`).

Reported per variant (mean over seeds, and per seed): the anomaly-score AUC of AD, FTD and
DLB against the holdout's normals (all normals, and normals within the disorder's age
range), the share of disorder scans whose three lowest regions match the disorder's
pattern, and the regional false-positive rate (share of regions with z < −2) of normals
of 80 or more, age-adjusted and with the unadjusted reference (``fp80_cut_pooled``: how
much age adjustment cuts it, pooled over every seed's old normals).

Usage::

    fedmi-sim generate --out D0 --preset default --task fdg-ad --seed 0   # and 1, 2
    python -m benchmarks.bench_normative --data D0 D1 D2 --out OUT [--draws 5]
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from sklearn.metrics import roc_auc_score

from fedmi.client.normative import STATS_MECHANISMS, Scans, load_scans, private_statistics
from fedmi.client.privacy.release import Release, kind_rho, release_multipliers
from fedmi.client.privacy.settings import PrivacySettings
from fedmi.shared import contract
from fedmi.shared import normative as nm
from fedmi.shared.contract.privacy import multiplier_for, rho_for_epsilon
from fedmi.simulations.runner import ingest_all, site_settings

TASK = "fdg-ad"
GROUPS = nm.evaluation_groups(TASK)


def _load(data: Path, work: Path) -> tuple[list[Scans], list[Scans]]:
    """Training sites' normals and the holdouts' labelled scans (ingesting once)."""
    sites = site_settings(data, work, {"sim-default-dp": "off", "sim-min-cell-count": 1})
    ingest_all(sites, TASK)
    train = [load_scans(s, TASK, (GROUPS[0],)) for s in sites if s.role == "train"]
    holdout = [load_scans(s, TASK, GROUPS) for s in sites if s.role == "holdout"]
    return train, holdout


def _stack(parts: list[Scans]) -> tuple[np.ndarray, list, list, list[str]]:
    y = np.vstack([p.profiles for p in parts])
    ages = [a for p in parts for a in p.ages]
    sexes = [s for p in parts for s in p.sexes]
    ids = [str(i) for i, p in enumerate(parts) for _ in p.labels]
    return y, ages, sexes, ids


def evaluate(
    model: nm.NormativeModel,
    reference: nm.NormativeModel,
    holdouts: list[Scans],
    local_offset: bool = False,
) -> dict[str, float]:
    """Exact AUCs, pattern matches and over-80 false-positive rates at the holdouts.

    ``local_offset``: each holdout scores every scan after its own site offset from its
    normals (leave-one-out for the normals themselves; :meth:`NormativeModel.own_offsets`),
    for the model and for the reference — as ``evaluate.normative`` does without DP.
    """
    out: dict[str, float] = {}
    scores: dict[str, list[float]] = {g: [] for g in GROUPS}
    ages: dict[str, list[float]] = {g: [] for g in GROUPS}
    matches: dict[str, list[bool]] = {g: [] for g in GROUPS}
    fp_adj, fp_ref = [], []
    for h in holdouts:
        normal = [label == GROUPS[0] for label in h.labels]
        own = model.own_offsets(h.profiles, h.ages, h.sexes, normal) if local_offset else None
        own_ref = (
            reference.own_offsets(h.profiles, h.ages, h.sexes, normal) if local_offset else None
        )
        for i, label in enumerate(h.labels):
            z = model.zscores(h.profiles[i], h.ages[i], h.sexes[i], own[i] if own else None)
            scores[label].append(nm.anomaly_score(z))
            ages[label].append(h.ages[i] if h.ages[i] is not None else nm.AGE_CENTRE)
            if label in nm.DISORDER_REGIONS:
                matches[label].append(nm.pattern_match(z, h.region_names, label))
            age = h.ages[i]
            if label == GROUPS[0] and age is not None and age >= contract.NORMATIVE_OLD_AGE:
                z_ref = reference.zscores(
                    h.profiles[i], h.ages[i], h.sexes[i], own_ref[i] if own_ref else None
                )
                fp_adj.append(float(np.mean(z < nm.Z_THRESHOLD)))
                fp_ref.append(float(np.mean(z_ref < nm.Z_THRESHOLD)))
    normal = np.asarray(scores[GROUPS[0]])
    normal_age = np.asarray(ages[GROUPS[0]])
    for g in GROUPS[1:]:
        s = np.asarray(scores[g])
        if len(s) == 0:
            continue
        y = np.r_[np.zeros(len(normal)), np.ones(len(s))]
        out[f"auc_{g}"] = float(roc_auc_score(y, np.r_[normal, s]))
        lo, hi = min(ages[g]), max(ages[g])
        matched = normal[(normal_age >= lo) & (normal_age <= hi)]
        y = np.r_[np.zeros(len(matched)), np.ones(len(s))]
        out[f"auc_{g}_age_matched"] = float(roc_auc_score(y, np.r_[matched, s]))
        out[f"match_{g}"] = float(np.mean(matches[g])) if matches[g] else float("nan")
        out[f"n_{g}"] = float(len(s))
    out["n_normal"] = float(len(normal))
    out["n_normal_80"] = float(len(fp_adj))
    out["fp80_adjusted"] = float(np.mean(fp_adj)) if fp_adj else float("nan")
    out["fp80_unadjusted"] = float(np.mean(fp_ref)) if fp_ref else float("nan")
    return out


def _fit(stats: list[nm.NormativeStatistics], names, centre):
    return nm.fit(stats, names, centre), nm.fit(stats, names, centre, adjust_age=False)


def _noisy(stats, sigma: float, clip: float, rng: np.random.Generator):
    """One site's statistics with one ``query.normative`` release's noise at multiplier σ
    (split among the blocks as the site splits it)."""
    total = sum(STATS_MECHANISMS.values())
    mult = {k: sigma * np.sqrt(total / w) for k, w in STATS_MECHANISMS.items()}
    return private_statistics(stats, Release(mult, 0.0, rng), clip)


def run(data_dirs: list[Path], out: Path, draws: int, eps: list[float], clip: float) -> dict:
    results: dict[str, list[dict]] = {}
    default_rho = kind_rho(PrivacySettings(), "train", contract.NORMATIVE_STATS)
    default_sigma = float(
        np.sqrt(
            1.0
            / sum(
                1.0 / m**2
                for m in release_multipliers(
                    PrivacySettings(), "train", contract.NORMATIVE_STATS, STATS_MECHANISMS
                ).values()
            )
        )
    )
    variants = [("dp default", default_sigma)] + [
        (f"dp eps={e:g}", multiplier_for(rho_for_epsilon(e, 1e-5))) for e in eps
    ]
    for seed, data in enumerate(data_dirs):
        t0 = time.perf_counter()
        train, holdouts = _load(data, out / f"work{seed}")
        names = train[0].region_names
        centre = np.zeros(len(names))
        stats = [nm.site_statistics(p.profiles, p.ages, p.sexes, centre, clip) for p in train]
        fed = _fit(stats, names, centre)
        y, ages, sexes, ids = _stack(train)
        pooled = (
            nm.fit_pooled(y, ages, sexes, ids, names, centre, clip=clip),
            nm.fit_pooled(y, ages, sexes, ids, names, centre, clip=clip, adjust_age=False),
        )
        diff = max(
            float(np.max(np.abs(getattr(fed[0], k) - getattr(pooled[0], k))))
            for k in ("intercept", "slopes", "sigma2", "tau2")
        )
        row = {"data": str(data), "normals": int(len(y)), "fed_vs_pooled_max_diff": diff}
        results.setdefault("federated", []).append({**row, **evaluate(*fed, holdouts)})
        results.setdefault("pooled", []).append({**row, **evaluate(*pooled, holdouts)})
        results.setdefault("federated, holdout's own offset", []).append(
            {**row, **evaluate(*fed, holdouts, local_offset=True)}
        )
        for name, sigma in variants:
            for d in range(draws):
                rng = np.random.default_rng([seed, d, 7])
                noisy = [_noisy(s, sigma, clip, rng) for s in stats]
                try:
                    fitted = _fit(noisy, names, centre)
                except nm.NormativeError:
                    continue
                results.setdefault(name, []).append(
                    {**row, "draw": d, "sigma": sigma, **evaluate(*fitted, holdouts)}
                )
        print(
            f"seed {seed}: {len(y)} training normals, {time.perf_counter() - t0:.0f} s", flush=True
        )
    summary = {
        name: {
            k: float(np.nanmean([r[k] for r in rows]))
            for k in rows[0]
            if isinstance(rows[0][k], float) and k not in ("sigma",)
        }
        for name, rows in results.items()
    }
    for name, rows in results.items():
        # the issue's figure: the cut of the over-80 normals' false-positive rate, pooled
        # over every seed's old normals (each row's rates are means over its old normals)
        n = np.array([r["n_normal_80"] for r in rows])
        adj = float(np.sum(n * [r["fp80_adjusted"] for r in rows]) / n.sum())
        ref = float(np.sum(n * [r["fp80_unadjusted"] for r in rows]) / n.sum())
        summary[name]["fp80_cut_pooled"] = 1.0 - adj / ref if ref > 0 else float("nan")
    doc = {
        "clip": clip,
        "default_release_rho": default_rho,
        "default_sigma": default_sigma,
        "summary": summary,
        "rows": results,
    }
    (out / "bench_normative.json").write_text(json.dumps(doc, indent=1) + "\n")
    return doc


def _table(doc: dict) -> str:
    keys = (
        "auc_AD",
        "auc_FTD",
        "auc_DLB",
        "auc_FTD_age_matched",
        "auc_DLB_age_matched",
        "match_AD",
        "match_FTD",
        "match_DLB",
        "fp80_adjusted",
        "fp80_unadjusted",
        "fp80_cut_pooled",
    )
    lines = ["variant".ljust(14) + "".join(k[:13].rjust(14) for k in keys)]
    for name, s in doc["summary"].items():
        lines.append(name.ljust(14) + "".join(f"{s.get(k, float('nan')):14.3f}" for k in keys))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", type=Path, nargs="+", required=True, help="one federation per seed")
    p.add_argument("--out", type=Path, default=None)
    p.add_argument("--draws", type=int, default=5, help="DP noise draws per seed and ε")
    p.add_argument("--eps", type=float, nargs="*", default=[1.0, 3.0, 10.0, 30.0])
    p.add_argument("--clip", type=float, default=nm.DEFAULT_CLIP)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    out = args.out or Path(tempfile.mkdtemp(prefix="bench-normative-"))
    out.mkdir(parents=True, exist_ok=True)
    doc = run(list(args.data), out, args.draws, list(args.eps), args.clip)
    print(_table(doc))
    print(
        f"default release: rho {doc['default_release_rho']:.4f}, sigma {doc['default_sigma']:.2f}"
    )
    print(f"written: {out / 'bench_normative.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
