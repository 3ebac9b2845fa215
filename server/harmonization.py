"""Pooled embedding moments for label-free adaptation at unseen sites (``fedmi`` runs).

After the last round the server sends the final model to the training sites in a
``query.features`` message; each answers with per-feature mean and variance of its
embedding over at least its min cell count of scans (declared in
:mod:`shared.contract`). The pooled moments go to every site with the final model in the
``evaluate.external`` config, where a site without trained local layers fits its input
adapter to them (``client.adaptation``).
"""

from __future__ import annotations

import logging

import numpy as np
from flwr.app import ArrayRecord
from flwr.serverapp import Grid

from server.collect import collect_from_training_sites
from server.config import RunConfig
from server.history import RunHistory
from shared import contract
from shared.harmonization import FeatureMoments, pool_moments

log = logging.getLogger(__name__)

#: Methods for which the server collects and forwards pooled moments.
ADAPTING_METHODS = ("fedmi",)


def pooled_reference(replies: list[dict]) -> FeatureMoments | None:
    """Pool accepted ``query.features`` metrics (``num-examples``, ``feat-mean``, ``feat-var``)."""
    parts = [
        FeatureMoments(
            int(r["num-examples"]),
            np.asarray(r["feat-mean"], dtype=np.float64),
            np.asarray(r["feat-var"], dtype=np.float64),
        )
        for r in replies
        if "feat-mean" in r and "feat-var" in r
    ]
    if len({p.mean.shape for p in parts}) > 1:
        log.warning("feature moments of different widths: not pooled")
        return None
    return pool_moments(parts)


def collect_feature_reference(
    grid: Grid,
    arrays: ArrayRecord,
    instruction: dict[str, object],
    cfg: RunConfig,
    history: RunHistory,
) -> dict[str, object]:
    """Ask the training sites for embedding moments; the pooled moments as config values.

    Returns an empty mapping for other methods, or when no site could answer (the holdout
    sites then evaluate with identity layers).
    """
    if cfg.method not in ADAPTING_METHODS:
        return {}
    answers = collect_from_training_sites(
        grid, arrays, instruction, cfg, history, contract.FEATURES
    )
    good = [metrics for _, metrics in answers]
    ref = pooled_reference(good)
    if ref is None:
        log.warning("no training site sent feature moments: unseen sites use identity layers")
        return {}
    log.info("pooled embedding moments of %d site(s), %d scans", len(good), ref.count)
    return {
        "feat-count": int(ref.count),
        "feat-mean": [float(v) for v in ref.mean],
        "feat-var": [float(v) for v in ref.var],
    }
