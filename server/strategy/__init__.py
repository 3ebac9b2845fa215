"""How the coordinator aggregates: Flower's strategies with fedmi's checks, chosen by method.

:data:`AGGREGATORS` maps each aggregator a method may name
(:attr:`fedmi.shared.methods.Method.aggregator`) to the strategy that implements it;
:func:`make_strategy` builds the run's strategy from the run config, optionally wrapped in
client-level central DP (:mod:`fedmi.server.strategy.central_dp`). Every update first
passes robust aggregation's caps and norm bound (:mod:`fedmi.server.strategy.robust`);
``robust-aggregator`` may put one of Flower's robust strategies (:data:`ROBUST_AGGREGATORS`)
in place of the method's aggregator.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping

from flwr.serverapp.strategy import Strategy

from fedmi.server.history import RunHistory
from fedmi.server.strategy.base import (
    FedmiFedAdam,
    FedmiFedAvg,
    FedmiFedMedian,
    FedmiFedProx,
    FedmiFedTrimmedAvg,
    FedmiMixin,
    FedmiMultiKrum,
)
from fedmi.server.strategy.robust import RobustSettings
from fedmi.shared.methods import get_method
from fedmi.shared.run_config import RunConfig

#: aggregator name → strategy built from the run config and Flower's common settings
AGGREGATORS: dict[str, Callable[[RunConfig, dict[str, object]], FedmiMixin]] = {
    "fedavg": lambda cfg, common: FedmiFedAvg(**common),
    "fedprox": lambda cfg, common: FedmiFedProx(proximal_mu=cfg.proximal_mu, **common),
    "fedadam": lambda cfg, common: FedmiFedAdam(
        eta=cfg.server_learning_rate, eta_l=cfg.effective_learning_rate, **common
    ),
}

#: ``robust-aggregator`` → Flower's robust strategy used in place of the method's aggregator
ROBUST_AGGREGATORS: dict[str, Callable[[RunConfig, dict[str, object], int], FedmiMixin]] = {
    "trimmed-mean": lambda cfg, common, n: FedmiFedTrimmedAvg(
        beta=cfg.robust_trim_fraction, **common
    ),
    "median": lambda cfg, common, n: FedmiFedMedian(**common),
    "multikrum": lambda cfg, common, n: FedmiMultiKrum(
        num_malicious_nodes=cfg.robust_malicious_sites,
        num_nodes_to_select=max(1, n - cfg.robust_malicious_sites),
        **common,
    ),
}


def make_strategy(
    cfg: RunConfig,
    *,
    train_nodes: Iterable[int],
    history: RunHistory,
    expected_arrays: Mapping[str, tuple[tuple[int, ...], str]],
) -> Strategy:
    """The strategy of ``cfg.method``'s aggregator, ready to ``start``."""
    train_nodes = list(train_nodes)
    # every connected node is sampled (configure_* then keeps the training sites); the
    # minimums stay at 1 so that a site that dropped out never makes Flower's sampling
    # wait for it forever (min-train-replies guards the aggregation instead)
    common: dict[str, object] = dict(
        fraction_train=1.0,
        fraction_evaluate=1.0,
        min_train_nodes=1,
        min_evaluate_nodes=1,
        min_available_nodes=1,
    )
    aggregator, robust = get_method(cfg.method).aggregator, cfg.robust_aggregator
    if robust == "auto":  # a robust mean where the method's own is the plain mean
        on = cfg.robust_aggregation == "on"
        robust = "trimmed-mean" if on and aggregator == "fedavg" else "mean"
    if robust in ROBUST_AGGREGATORS:
        strategy = ROBUST_AGGREGATORS[robust](cfg, common, len(train_nodes))
    else:
        strategy = AGGREGATORS[aggregator](cfg, common)
    strategy.setup_fedmi(
        train_nodes=train_nodes,
        history=history,
        expected_arrays=expected_arrays,
        max_examples=cfg.max_examples,
        min_train_replies=cfg.min_train_replies,
        robust=RobustSettings.from_run_config(cfg),
    )
    if cfg.central_dp != "off":  # client-level DP at the server
        from fedmi.server.strategy.central_dp import wrap_central_dp

        return wrap_central_dp(strategy, cfg, max(1, len(train_nodes)))  # type: ignore[arg-type]
    return strategy  # type: ignore[return-value]
