"""The method registry: one entry per method, everything else derived from it."""

from __future__ import annotations

import pytest

from fedmi.server.history import RunHistory
from fedmi.server.strategy import AGGREGATORS, make_strategy
from fedmi.shared.harmonization import HarmonizedNet, build_method_model
from fedmi.shared.methods import BASELINES, FEDERATED_METHODS, METHODS, Method, get_method
from fedmi.shared.model import FedmiNet, ModelSpec
from fedmi.shared.run_config import RunConfig


def test_every_method_names_a_known_aggregator():
    assert FEDERATED_METHODS == ("fedavg", "fedprox", "fedadam", "fedbn", "fedmi")
    assert BASELINES == ("pooled", "local")
    for m in METHODS.values():
        assert m.aggregator in AGGREGATORS, m.name


@pytest.mark.parametrize("name", FEDERATED_METHODS)
def test_the_strategy_follows_the_registry(name):
    cfg = RunConfig(method=name, robust_aggregator="mean")  # "auto": see test_robust.py
    strategy = make_strategy(cfg, train_nodes=[1], history=RunHistory(), expected_arrays={})
    flower_class = {"fedavg": "FedAvg", "fedprox": "FedProx", "fedadam": "FedAdam"}
    assert type(strategy).__mro__[2].__name__ == flower_class[get_method(name).aggregator]


def test_harmonized_methods_build_local_layers():
    spec = ModelSpec(arch="regional")
    assert type(build_method_model("fedavg", spec)) is FedmiNet
    assert isinstance(build_method_model("fedmi", spec, n_groups=2), HarmonizedNet)
    assert get_method("fedmi").adapts and not get_method("fedbn").adapts


def test_unknown_method_names_the_choices():
    with pytest.raises(ValueError, match="fedavg, fedprox"):
        get_method("fedavgg")


def test_adding_a_method_is_one_entry(monkeypatch):
    """A new method (an existing aggregator) runs through config, strategy and model."""
    new = Method("fedavg-copy", "a test method", aggregator="fedavg")
    monkeypatch.setitem(METHODS, new.name, new)
    cfg = RunConfig.from_mapping({"method": "fedavg-copy"})
    strategy = make_strategy(cfg, train_nodes=[1], history=RunHistory(), expected_arrays={})
    # a FedAvg method gets Flower's trimmed mean by default (robust-aggregator = "auto")
    assert type(strategy).__name__ == "FedmiFedTrimmedAvg"
    assert type(build_method_model("fedavg-copy")) is FedmiNet
