"""The normative-model part of the report, from the holdout sites' declared aggregates.

Per holdout site and pooled over them (sums of the sites' histograms and counts):

* ``auc_histogram`` of the anomaly score for each disorder against the site's normals: the
  Mann–Whitney AUC of the fixed-bin histograms (pairs in one bin count half; ``bound`` is
  the worst-case binning error), with a Hanley–McNeil 95 % interval (its standard error
  taken half a pair inside 0 and 1, so few perfectly separated scans get a wide interval);
* the regional false-positive rate of normals (the mean fraction of regions with
  z < −2; 0.023 expected of a perfect model of normals), age-adjusted and against the
  unadjusted reference, for all normals and for normals of 80 years or more;
* per disorder, the share of scans whose lowest regions match the disorder's expected
  pattern, and the share the supervised classifier calls positive at its operating point
  (both with Wilson intervals).

Under DP the sites' numbers are noisy: the section says so (``dp``). Without DP a site
scores each scan after its own offset from its normals (``site_offset``: leave-one-out for
a normal), as ``fedmi-site predict`` does; under DP against the population model alone.
"""

from __future__ import annotations

import math

import numpy as np

from fedmi.server.history import RunHistory
from fedmi.shared import contract
from fedmi.shared.normative import ANOMALY_K, evaluation_groups
from fedmi.shared.stats import auc_from_histograms, hanley_mcneil_se, wilson_interval

Z = 1.959963984540054


def _r(x: float | None, digits: int = 4) -> float | None:
    return None if x is None or not math.isfinite(x) else round(float(x), digits)


def _share(k: int, n: int) -> dict[str, object]:
    k = int(min(max(k, 0), n))
    lo, hi = wilson_interval(k, n) if n > 0 else (float("nan"), float("nan"))
    return {"k": k, "n": int(n), "rate": _r(k / n) if n else None, "ci": [_r(lo), _r(hi)]}


def histogram_noise_variance(pos: np.ndarray, neg: np.ndarray, cell_var: np.ndarray) -> float:
    """Variance the cells' independent noise (``cell_var`` per bin) gives the histogram AUC.

    Delta method on ``AUC = Σᵢ posᵢ (Cᵢ + ½ negᵢ) / (P N)`` with ``Cᵢ = Σ_{j<i} negⱼ``:
    ``∂/∂posₖ = (Cₖ + ½ negₖ)/(P N) − AUC/P`` and
    ``∂/∂negₖ = (Σ_{i>k} posᵢ + ½ posₖ)/(P N) − AUC/N``.
    """
    p, n = float(pos.sum()), float(neg.sum())
    if p <= 0 or n <= 0:
        return float("nan")
    below = np.concatenate([[0.0], np.cumsum(neg)[:-1]])
    above = pos.sum() - np.cumsum(pos)
    auc = float((pos * (below + 0.5 * neg)).sum()) / (p * n)
    g_pos = (below + 0.5 * neg) / (p * n) - auc / p
    g_neg = (above + 0.5 * pos) / (p * n) - auc / n
    return float((cell_var * (g_pos**2 + g_neg**2)).sum())


def _auc(
    hist_disorder: np.ndarray, hist_normal: np.ndarray, cell_var: np.ndarray | None = None
) -> dict[str, object]:
    b = auc_from_histograms(hist_disorder, hist_normal)
    if b.n_pos == 0 or b.n_neg == 0:
        return {"auc_histogram": None, "bound": None, "ci": None, "n": b.n_pos, "n_normal": b.n_neg}
    # Hanley–McNeil's SE vanishes at AUC 0 or 1: evaluate it half a pair inside (a
    # continuity correction), so a perfect separation of few scans gets a wide interval
    half = 0.5 / (b.n_pos * b.n_neg)
    var = hanley_mcneil_se(min(max(b.auc, half), 1.0 - half), b.n_pos, b.n_neg) ** 2
    noise_var = 0.0
    if cell_var is not None:
        noise_var = histogram_noise_variance(
            np.asarray(hist_disorder, float), np.asarray(hist_normal, float), cell_var
        )
    se = math.sqrt(var + noise_var)
    return {
        "auc_histogram": _r(b.auc),
        "bound": _r(b.bound),
        "ci": [_r(max(0.0, b.auc - Z * se)), _r(min(1.0, b.auc + Z * se))],
        "noise_sd": _r(math.sqrt(noise_var)) if cell_var is not None else None,
        "n": b.n_pos,
        "n_normal": b.n_neg,
    }


def _fp(count: float, sums: list[float]) -> dict[str, object]:
    if count < 1:
        return {"n": int(round(count)), "adjusted": None, "unadjusted": None}
    return {
        "n": int(round(count)),
        "adjusted": _r(sums[0] / count),
        "unadjusted": _r(sums[1] / count),
    }


def summarise(metrics: dict, groups: tuple[str, ...]) -> dict[str, object]:
    """One site's (or the pooled) figures from ``evaluate.normative`` metrics."""
    g = contract.NORMATIVE_GROUPS
    hist = np.asarray(metrics["nrm-hist"], dtype=np.int64).reshape(g, contract.NORMATIVE_BINS)
    counts = hist.sum(axis=1)
    cell_var = None
    if "nrm-hist-noise-var" in metrics:  # DP: noise only in each block's middle bin
        cell_var = np.zeros(contract.NORMATIVE_BINS)
        cell_var[contract.NORMATIVE_DP_BLOCK // 2 :: contract.NORMATIVE_DP_BLOCK] = float(
            metrics["nrm-hist-noise-var"]
        )
    return {
        "n": {grp: int(counts[i]) for i, grp in enumerate(groups[:g])},
        "auc": {grp: _auc(hist[i], hist[0], cell_var) for i, grp in enumerate(groups[:g]) if i > 0},
        "noisy": cell_var is not None,
        "false_positive_rate": _fp(float(counts[0]), list(metrics["nrm-fp"])),
        "false_positive_rate_over_80": _fp(
            float(metrics["nrm-old-count"]), list(metrics["nrm-old-fp"])
        ),
        "pattern_match": {
            grp: _share(int(metrics["nrm-match"][i]), int(counts[i]))
            for i, grp in enumerate(groups[:g])
            if i > 0
        },
        "classifier_positive": {
            grp: _share(int(metrics["nrm-clf-positive"][i]), int(counts[i]))
            for i, grp in enumerate(groups[:g])
        },
        "normal_group": groups[0],
    }


def _with_noise(metrics: dict) -> dict:
    """A site's metrics with its histogram cells' noise variance (DP replies only)."""
    sd = metrics.get("nrm-noise-sd")
    return metrics if sd is None else {**metrics, "nrm-hist-noise-var": float(sd[0]) ** 2}


def _pool(metrics: list[dict]) -> dict:
    noisy = [m["nrm-hist-noise-var"] for m in metrics if "nrm-hist-noise-var" in m]
    return {
        **({"nrm-hist-noise-var": float(sum(noisy))} if noisy else {}),
        "nrm-hist": np.sum([m["nrm-hist"] for m in metrics], axis=0).tolist(),
        "nrm-old-count": float(sum(m["nrm-old-count"] for m in metrics)),
        "nrm-old-fp": np.sum([m["nrm-old-fp"] for m in metrics], axis=0).tolist(),
        "nrm-fp": np.sum([m["nrm-fp"] for m in metrics], axis=0).tolist(),
        "nrm-match": np.sum([m["nrm-match"] for m in metrics], axis=0).tolist(),
        "nrm-clf-positive": np.sum([m["nrm-clf-positive"] for m in metrics], axis=0).tolist(),
    }


def normative_section(history: RunHistory, task: str) -> dict[str, object] | None:
    """``report["normative"]`` (``None`` when the run built no normative model)."""
    if not history.normative:
        return None
    groups = evaluation_groups(task)
    sites: dict[str, object] = {}
    usable = []
    for name, reply in sorted(history.normative.get("sites", {}).items()):
        metrics = reply.get("metrics") or {}
        if reply.get("status") != "ok" or "nrm-hist" not in metrics:
            sites[name] = {"status": reply.get("status")}
            continue
        metrics = _with_noise(metrics)
        dp = "epsilon" in metrics
        # without DP the site scored each scan after its own offset (client/normative.py)
        sites[name] = {
            "status": "ok",
            "dp": dp,
            "site_offset": not dp,
            **summarise(metrics, groups),
        }
        usable.append(metrics)
    pooled = summarise(_pool(usable), groups) if usable else None
    return {
        "model": history.normative.get("model"),
        "groups": list(groups),
        "score": f"minus the mean of the {ANOMALY_K} lowest regional z-scores (higher: "
        "further below normal)",
        "per_site": sites,
        "pooled_holdout": pooled,
    }
