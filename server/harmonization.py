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
from flwr.app import ArrayRecord, Message, RecordDict
from flwr.serverapp import Grid

from server.config import RunConfig
from server.history import RunHistory
from server.ingress import check_inbound
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
    from flwr.app import ConfigRecord

    targets = [n for n, s in history.sites.items() if s.role == "train" and s.status == "ok"]
    msgs = [
        Message(
            content=RecordDict(
                {contract.ARRAYS: arrays, contract.CONFIG: ConfigRecord(instruction)}  # type: ignore[arg-type]
            ),
            dst_node_id=n,
            message_type=contract.FEATURES,
        )
        for n in targets
    ]
    try:
        replies = list(grid.send_and_receive(msgs, timeout=cfg.validation_timeout))
    except Exception as exc:  # noqa: BLE001 - the run goes on with identity fallbacks
        log.error("feature-statistics round failed: %s: %s", type(exc).__name__, exc)
        return {}
    good = []
    for msg in replies:
        verdict = check_inbound(contract.FEATURES, msg, None, cfg.max_examples)
        if verdict.accepted and verdict.node_id in targets:
            good.append(dict(msg.content[contract.METRICS]))
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
