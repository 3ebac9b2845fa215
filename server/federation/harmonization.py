"""Pooled embedding moments for label-free adaptation at unseen sites (``fedmi`` runs).

After the last round the server sends the final model to the training sites in a
``query.features`` message; each answers with per-feature mean and variance of its
embedding over at least its min cell count of scans, and per class when each class
reaches it (declared in :mod:`fedmi.shared.contract`). The pooled moments go to every site with
the final model in the ``evaluate.external`` config, where a site without trained local
layers fits its local layers to them (:mod:`fedmi.client.harmonization.adaptation`).
"""

from __future__ import annotations

import logging

import numpy as np
from flwr.app import ArrayRecord
from flwr.serverapp import Grid

from fedmi.server.federation.collect import collect_from_training_sites
from fedmi.server.history import RunHistory
from fedmi.shared.harmonization import ClassMoments, FeatureMoments, pool_moments
from fedmi.shared.instructions import FeaturesQuery
from fedmi.shared.methods import get_method
from fedmi.shared.run_config import RunConfig

log = logging.getLogger(__name__)


def _reply_moments(r: dict, suffix: str = "") -> FeatureMoments:
    """The moments of one ``query.features`` reply: all scans, or one class (``-neg``/``-pos``)."""
    n, n_pos = int(r["num-examples"]), int(r.get("num-positive", 0))
    count = {"": n, "-pos": n_pos, "-neg": n - n_pos}[suffix]
    return FeatureMoments(
        count,
        np.asarray(r[f"feat-mean{suffix}"], dtype=np.float64),
        np.asarray(r[f"feat-var{suffix}"], dtype=np.float64),
    )


def _pooled(parts: list[FeatureMoments]) -> FeatureMoments | None:
    if len({p.mean.shape for p in parts}) > 1:
        log.warning("feature moments of different widths: not pooled")
        return None
    return pool_moments(parts)


def pooled_reference(replies: list[dict]) -> FeatureMoments | None:
    """Pool accepted ``query.features`` metrics (``num-examples``, ``feat-mean``, ``feat-var``)."""
    return _pooled([_reply_moments(r) for r in replies if "feat-mean" in r and "feat-var" in r])


def pooled_classes(replies: list[dict]) -> ClassMoments | None:
    """Pool the per-class moments when every site that sent moments sent them per class.

    All or nothing: mixed at the federation's prevalence, the per-class moments then give
    exactly the pooled moments of :func:`pooled_reference`.
    """
    sent = [r for r in replies if "feat-mean" in r and "feat-var" in r]
    if not sent or not all("num-positive" in r and "feat-mean-pos" in r for r in sent):
        return None  # the contract lets class moments arrive only complete
    neg = _pooled([_reply_moments(r, "-neg") for r in sent])
    pos = _pooled([_reply_moments(r, "-pos") for r in sent])
    return None if neg is None or pos is None else ClassMoments(neg, pos)


def collect_feature_reference(
    grid: Grid, arrays: ArrayRecord, cfg: RunConfig, history: RunHistory
) -> tuple[FeatureMoments | None, ClassMoments | None]:
    """Ask the training sites for embedding moments; the pooled moments (and per class).

    ``(None, None)`` for methods that do not adapt, with ``adaptation = "off"``, or when no
    site could answer (the holdout sites then evaluate with identity layers).
    """
    if not get_method(cfg.method).adapts:
        return None, None
    if cfg.adaptation == "off":
        log.info("adaptation off: unseen sites evaluate with identity local layers")
        return None, None
    query = FeaturesQuery.from_run_config(cfg)
    good = [m for _, m in collect_from_training_sites(grid, arrays, query, cfg, history)]
    ref = pooled_reference(good)
    if ref is None:
        log.warning("no training site sent feature moments: unseen sites use identity layers")
        return None, None
    classes = pooled_classes(good)
    log.info(
        "pooled embedding moments of %d site(s), %d scans (%s)",
        len(good),
        ref.count,
        "per class too" if classes is not None else "not per class",
    )
    return ref, classes
