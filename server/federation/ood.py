"""The federation's feature description and the OOD part of the report.

After training the server sends the final model to the training sites in a ``query.ood``
message; each replies with per-class embedding counts, sums and outer-product sums over
its train split (declared in :mod:`fedmi.shared.contract`). Their sum gives exactly the pooled
class means and within-class covariance (:mod:`fedmi.shared.ood`); the shrinkage-regularised
description goes to every site in the ``evaluate.external`` config, and each site sends
back a fixed-bin histogram of its scans' OOD scores. :func:`ood_section` turns those into
``report["ood"]``: the flagging threshold (95th percentile of the training sites' own
test-scan scores), the fraction flagged per site and the detection AUROC of each site's
scans against the training sites' test scans.
"""

from __future__ import annotations

import logging
import math

import numpy as np
from flwr.app import ArrayRecord
from flwr.serverapp import Grid

from fedmi.server.federation.collect import collect_from_training_sites
from fedmi.server.history import RunHistory
from fedmi.shared import contract
from fedmi.shared.ood import (
    FeatureStatistics,
    describe,
    description_config,
    detection_auroc,
    flagged,
    ood_edges,
    pool_feature_statistics,
    threshold_bin,
)
from fedmi.shared.run_config import RunConfig

log = logging.getLogger(__name__)

#: Quantile of the training sites' test-scan OOD scores used as the flagging threshold.
FLAG_QUANTILE = 0.95


def statistics_from_metrics(metrics: dict) -> FeatureStatistics | None:
    """A checked ``query.ood`` reply's metrics as :class:`FeatureStatistics`."""
    if "ood-feat-sum" not in metrics or "ood-feat-outer" not in metrics:
        return None
    c = contract.OOD_CLASSES
    sums = np.asarray(metrics["ood-feat-sum"], dtype=np.float64).reshape(c, -1)
    d = sums.shape[1]
    outers = np.asarray(metrics["ood-feat-outer"], dtype=np.float64).reshape(c, d, d)
    counts = np.asarray(metrics["ood-class-count"], dtype=np.int64)
    return FeatureStatistics(counts, sums, outers)


def collect_ood_description(
    grid: Grid,
    arrays: ArrayRecord,
    instruction: dict[str, object],
    cfg: RunConfig,
    history: RunHistory,
) -> dict[str, object]:
    """Ask the training sites for feature statistics; the description as config values.

    Returns an empty mapping when no site could answer (the sites then send no OOD
    histograms). A summary (sites, scans, width) is kept on ``history.ood_description``
    for the report.
    """
    answers = collect_from_training_sites(
        grid, arrays, instruction, cfg, history, contract.OOD_STATS
    )
    parts, names = [], []
    for node_id, metrics in answers:
        stats = statistics_from_metrics(metrics)
        if stats is not None and stats.counts.sum() > 0:
            parts.append(stats)
            names.append(history.site_name(node_id))
    if not parts or len({p.sums.shape for p in parts}) > 1:
        log.warning("no usable OOD feature statistics: the report has no OOD section")
        return {}
    pooled = pool_feature_statistics(parts)
    if (pooled.counts > 0).sum() == 0:
        return {}
    desc = describe(pooled)
    history.ood_description = {  # type: ignore[attr-defined]
        "sites": sorted(names),
        "scans_per_class": [int(v) for v in pooled.counts],
        "feature_dim": pooled.dim,
        "shrinkage": contract.OOD_SHRINKAGE,
    }
    log.info("OOD description from %d site(s), %d train-split scans", len(parts), desc.count)
    return description_config(desc)


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
