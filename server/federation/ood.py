"""The federation's feature description for out-of-distribution scores.

After training the server sends the final model to the training sites in a ``query.ood``
message; each replies with per-class embedding counts, sums and outer-product sums over
its train split (declared in :mod:`fedmi.shared.contract`). Their sum gives exactly the pooled
class means and within-class covariance (:mod:`fedmi.shared.ood`); the shrinkage-regularised
description goes to every site with the ``evaluate.external`` instruction, and each site
sends back a fixed-bin histogram of its scans' OOD scores, which
:mod:`fedmi.server.report.ood` turns into the report's OOD section.
"""

from __future__ import annotations

import logging

import numpy as np
from flwr.app import ArrayRecord
from flwr.serverapp import Grid

from fedmi.server.federation.collect import collect_from_training_sites
from fedmi.server.history import RunHistory
from fedmi.shared import contract
from fedmi.shared.instructions import OodQuery
from fedmi.shared.ood import (
    FeatureDescription,
    FeatureStatistics,
    describe,
    pool_feature_statistics,
)
from fedmi.shared.run_config import RunConfig

log = logging.getLogger(__name__)


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
    grid: Grid, arrays: ArrayRecord, cfg: RunConfig, history: RunHistory
) -> FeatureDescription | None:
    """Ask the training sites for feature statistics; their pooled description.

    ``None`` when no site could answer (the sites then send no OOD histograms). A summary
    (sites, scans, width) is kept on ``history.ood_description`` for the report.
    """
    answers = collect_from_training_sites(grid, arrays, OodQuery.from_run_config(cfg), cfg, history)
    parts, names = [], []
    for node_id, metrics in answers:
        stats = statistics_from_metrics(metrics)
        if stats is not None and stats.counts.sum() > 0:
            parts.append(stats)
            names.append(history.site_name(node_id))
    if not parts or len({p.sums.shape for p in parts}) > 1:
        log.warning("no usable OOD feature statistics: the report has no OOD section")
        return None
    pooled = pool_feature_statistics(parts)
    if (pooled.counts > 0).sum() == 0:
        return None
    desc = describe(pooled)
    history.ood_description = {  # type: ignore[attr-defined]
        "sites": sorted(names),
        "scans_per_class": [int(v) for v in pooled.counts],
        "feature_dim": pooled.dim,
        "shrinkage": contract.OOD_SHRINKAGE,
    }
    log.info("OOD description from %d site(s), %d train-split scans", len(parts), desc.count)
    return desc
