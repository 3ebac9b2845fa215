"""Optional client-level central DP: Flower's server-side fixed-clipping wrapper.

``central-dp = "fixed"`` wraps the fedmi strategy in
:class:`flwr.serverapp.strategy.DifferentialPrivacyServerSideFixedClipping`: each site's
update ``w_site − w_global`` is clipped to ``central-clipping-norm`` (L2) and Gaussian
noise with standard deviation ``central-noise-multiplier × clipping-norm / n_sites`` is
added to the aggregate. The wrapper delegates ``configure_*``, ``aggregate_evaluate`` and
the aggregation itself to the inner :class:`fedmi.server.strategy.base.FedmiMixin` strategy, so only
training sites are asked and every reply is still checked and recorded.

One change to Flower's ``aggregate_train``: Flower clips every reply *before* the inner
strategy checks it, so a malformed update (wrong shapes, NaN) would crash the round, and
Flower skips the whole round when any reply carries an error. Here only replies that
pass :func:`fedmi.server.ingress.check_inbound` with status ``ok`` are clipped; the others
go to the inner strategy untouched, which drops and records them.

The guarantee is client-level (a whole site's data), it protects only the released
weights, it assumes the coordinator is trusted to add the noise, and with a handful of
sites the noise (σ·C/n per coordinate) is large relative to the averaged update; see
docs/privacy.md. :func:`central_epsilon` gives ε for a number of released rounds.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

import numpy as np
from flwr.app import Array, ArrayRecord, Message, MetricRecord
from flwr.serverapp.strategy import DifferentialPrivacyServerSideFixedClipping, Strategy
from flwr.supercore.differential_privacy import compute_clip_model_update

from fedmi.server.ingress import check_inbound
from fedmi.shared import contract
from fedmi.shared.run_config import RunConfig

log = logging.getLogger(__name__)


class FedmiServerSideFixedClipping(DifferentialPrivacyServerSideFixedClipping):
    """Flower's server-side fixed clipping, clipping only replies that pass the checks."""

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        inner = self.strategy
        replies = list(replies)
        current = self.current_arrays.to_numpy_ndarrays()
        clipped = 0
        for msg in replies:
            verdict = check_inbound(
                contract.TRAIN,
                msg,
                getattr(inner, "expected_arrays", None),
                getattr(inner, "max_examples", contract.MAX_EXAMPLES),
            )
            if verdict.problems or verdict.status != "ok":
                continue
            record = msg.content[contract.ARRAYS]
            update = record.to_numpy_ndarrays()
            if any(np.any(u != c) for u, c in zip(update, current, strict=True)):
                # (Flower divides by the update's norm: an unchanged model needs no clipping)
                compute_clip_model_update(
                    param1=update, param2=current, clipping_norm=self.clipping_norm
                )
            msg.content[contract.ARRAYS] = ArrayRecord(
                {
                    k: Array(np.asarray(v, dtype=record[k].numpy().dtype))
                    for k, v in zip(record.keys(), update, strict=True)
                }
            )
            clipped += 1
        log.info("round %d: %d update(s) clipped to %g", server_round, clipped, self.clipping_norm)
        arrays, metrics = inner.aggregate_train(server_round, replies)
        if arrays is not None:
            arrays = self._add_noise_to_aggregated_arrays(arrays)
            self.released_rounds += 1
        return arrays, metrics

    released_rounds: int = 0


def wrap_central_dp(strategy: Strategy, cfg: RunConfig, num_sites: int) -> Strategy:
    """``strategy`` wrapped for ``cfg.central_dp`` (``"fixed"``)."""
    if cfg.central_dp != "fixed":
        raise ValueError(cfg.central_dp)
    log.info(
        "central DP: updates clipped to %g, noise multiplier %g over %d site(s)",
        cfg.central_clipping_norm,
        cfg.central_noise_multiplier,
        num_sites,
    )
    return FedmiServerSideFixedClipping(
        strategy,
        noise_multiplier=cfg.central_noise_multiplier,
        clipping_norm=cfg.central_clipping_norm,
        num_sampled_clients=max(1, num_sites),
    )


def central_epsilon(noise_multiplier: float, rounds: int, delta: float) -> float | None:
    """Client-level ε after ``rounds`` releases with every site taking part (no sampling
    amplification: q = 1), by Opacus' RDP accountant; ``None`` without noise."""
    if noise_multiplier <= 0:
        return None
    if rounds <= 0:
        return 0.0
    from opacus.accountants import RDPAccountant

    acc = RDPAccountant()
    acc.history = [(noise_multiplier, 1.0, rounds)]
    return float(acc.get_epsilon(delta=delta))
