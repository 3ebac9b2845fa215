"""Server side of privacy: the report's privacy section and the central-DP wrapper."""

from __future__ import annotations

import numpy as np
import pytest
from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict

from fedmi.server.history import RunHistory, SiteInfo
from fedmi.server.report.document import build_report
from fedmi.server.strategy import make_strategy
from fedmi.server.strategy.central_dp import FedmiServerSideFixedClipping, central_epsilon
from fedmi.shared import contract
from fedmi.shared.run_config import RunConfig, RunConfigError

EXPECTED = {"w": ((2, 2), "float32")}
DP = {
    "epsilon": 3.2,
    "epsilon-budget": 8.0,
    "delta": 1e-5,
    "noise-multiplier": 1.1,
    "sample-rate": 0.25,
    "dp-steps": 8,
    "max-grad-norm": 1.0,
}


def _reply(flower_identity, node, status="ok", w=None, metrics=None) -> Message:
    flower_identity.node_id = 0
    instr = Message(content=RecordDict(), dst_node_id=node, message_type=contract.TRAIN)
    content = RecordDict(
        {
            contract.METRICS: MetricRecord(metrics or {"num-examples": 10, **DP}),
            contract.SITE: ConfigRecord({"site-id": f"s{node}", "role": "train", "status": status}),
        }
    )
    if w is not None:
        content[contract.ARRAYS] = contract.array_record({"w": w})
    return Message(content, reply_to=instr)


def _history() -> RunHistory:
    h = RunHistory()
    for n in (1, 2, 3):
        h.sites[n] = SiteInfo(n, f"s{n}", "train", "ok", 20, 10, 10, 5)
    return h


def test_central_dp_wraps_the_fedmi_strategy_and_survives_bad_replies(flower_identity):
    cfg = RunConfig(central_dp="fixed", central_noise_multiplier=0.0, central_clipping_norm=0.5)
    history = _history()
    strategy = make_strategy(cfg, train_nodes=[1, 2, 3], history=history, expected_arrays=EXPECTED)
    assert isinstance(strategy, FedmiServerSideFixedClipping)
    strategy.current_arrays = contract.array_record({"w": np.zeros((2, 2), np.float32)})
    replies = [
        _reply(flower_identity, 1, w=np.full((2, 2), 3.0, np.float32)),  # norm 6 → clipped
        _reply(flower_identity, 2, "budget-exhausted", metrics={"num-examples": 0, "epsilon": 8}),
        _reply(flower_identity, 3, w=np.ones((3, 3), np.float32)),  # malformed: dropped
    ]
    arrays, _ = strategy.aggregate_train(1, replies)
    assert isinstance(arrays, ArrayRecord)
    w = arrays["w"].numpy()
    assert np.linalg.norm(w) == pytest.approx(0.5, rel=1e-5)  # clipped, σ = 0: no noise
    train = history.rounds[1]["train"]
    assert train["s2"]["status"] == "budget-exhausted" and history.rounds[1]["dropped"]


def test_central_dp_adds_noise_and_reports_client_level_epsilon(flower_identity):
    cfg = RunConfig(central_dp="fixed", central_noise_multiplier=1.0, central_clipping_norm=0.5)
    strategy = make_strategy(cfg, train_nodes=[1], history=_history(), expected_arrays=EXPECTED)
    strategy.current_arrays = contract.array_record({"w": np.zeros((2, 2), np.float32)})
    arrays, _ = strategy.aggregate_train(
        1, [_reply(flower_identity, 1, w=np.zeros((2, 2), np.float32))]
    )
    assert np.abs(arrays["w"].numpy()).sum() > 0
    assert central_epsilon(1.0, 20, 1e-5) > 20  # q = 1: few sites, large ε
    with pytest.raises(RunConfigError, match="central-dp"):
        RunConfig.from_mapping({"central-dp": "adaptive-ish"})


def test_report_privacy_section_shows_spend_and_refusals():
    history = _history()
    history.record_train(1, 1, "ok", {"num-examples": 10, **DP})
    history.record_train(1, 2, "ok", {"num-examples": 10, "train-loss": 0.5})
    history.record_train(
        2,
        1,
        "budget-exhausted",
        {"num-examples": 0, "epsilon": 7.99, "epsilon-budget": 8.0, "delta": 1e-5},
    )
    history.record_train(2, 2, "ok", {"num-examples": 10, "train-loss": 0.4})
    history.record_train(2, 3, "ledger-error", {"num-examples": 0})
    report = build_report(RunConfig(), history, {})
    rows = {r["site_id"]: r for r in report["privacy"]["per_site"]}
    s1 = rows["s1"]
    assert (s1["dp"], s1["status"], s1["epsilon"], s1["noise_multiplier"]) == (
        "on",
        "budget-exhausted",
        7.99,
        1.1,
    )
    assert s1["steps"] == 8 and s1["refused_rounds"] == {"budget-exhausted": [2]}
    assert (s1["sample_rate"], s1["clipping_norm"], s1["delta"]) == (0.25, 1.0, 1e-5)
    assert rows["s2"]["dp"] == "off" and rows["s2"]["epsilon"] is None
    assert rows["s3"]["refused_rounds"] == {"ledger-error": [2]}
    assert report["privacy"]["central"] == {"mode": "off"}


def test_sites_are_told_the_planned_rounds():
    from fedmi.shared.instructions import TrainInstruction

    record = TrainInstruction.from_run_config(RunConfig(num_server_rounds=7)).to_record()
    assert record["num-server-rounds"] == 7
