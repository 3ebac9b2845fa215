"""The OOD part of the report, from the sites' OOD-score histograms.

:func:`ood_section` gives ``report["ood"]``: the flagging threshold (95th percentile of the
training sites' own test-scan scores), the fraction flagged per site and the detection
AUROC of each site's scans against the training sites' test scans. The description the
scores are measured against is pooled by :mod:`fedmi.server.federation.ood`.
"""

from __future__ import annotations

import math

import numpy as np

from fedmi.server.history import RunHistory
from fedmi.shared import contract
from fedmi.shared.ood import detection_auroc, flagged, ood_edges, threshold_bin

#: Quantile of the training sites' test-scan OOD scores used as the flagging threshold.
FLAG_QUANTILE = 0.95


def _r(x: float | None, digits: int = 4) -> float | None:
    return None if x is None or not math.isfinite(x) else round(float(x), digits)


def ood_section(history: RunHistory) -> dict[str, object] | None:
    """``report["ood"]`` from the sites' OOD-score histograms (``None`` without any)."""
    hists = {k: s["ood-hist"] for k, s in history.final_raw.items() if "ood-hist" in s}
    if not hists:
        return None
    role = {k: history.final.get(k, {}).get("role") for k in hists}
    train = [k for k in hists if role[k] == "train"]
    zeros = [0] * contract.OOD_BINS
    pooled_in = [int(v) for v in np.sum([hists[k] for k in train] or [zeros], axis=0)]
    first = threshold_bin(pooled_in, FLAG_QUANTILE)
    edges = ood_edges()
    rows = []
    for k in sorted(hists):
        h = hists[k]
        n = int(sum(h))
        row: dict[str, object] = {"site_id": k, "role": role[k], "n": n}
        if first is not None:
            row["flagged"] = flagged(h, first)
            row["flagged_fraction"] = _r(row["flagged"] / n) if n else None  # type: ignore[operator]
        # in-distribution reference: all training sites' test scans, minus this site's own
        ref = sorted(k2 for k2 in train if k2 != k)
        if ref:
            ref_hist = np.sum([hists[k2] for k2 in ref], axis=0)
            auc = detection_auroc(h, ref_hist)
            row["detection_auroc"] = _r(auc.auc)
            row["detection_auroc_bound"] = _r(auc.bound)
            row["reference_sites"] = ref
        rows.append(row)
    return {
        "score": "smallest Mahalanobis distance of the embedding to the training classes' means",
        "description": getattr(history, "ood_description", None),
        "bins": {"count": contract.OOD_BINS, "log10_range": list(contract.OOD_LOG10_RANGE)},
        "threshold": {
            "quantile": FLAG_QUANTILE,
            "distance": _r(float(edges[first])) if first is not None else None,
            "from": "pooled histogram of the training sites' test scans",
        },
        "per_site": rows,
        "in_distribution_n": int(sum(pooled_in)),
    }
