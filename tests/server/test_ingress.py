"""Inbound checks: a bad update is dropped with a reason and the round goes on."""

import numpy as np
import pytest
from flwr.app import ConfigRecord, Message, MetricRecord, RecordDict

from fedmi.server.history import RunHistory, SiteInfo
from fedmi.server.ingress import check_inbound
from fedmi.server.strategy.base import FedmiFedAvg
from fedmi.shared import contract

EXPECTED = {"w": ((2, 2), "float32")}


def _reply(
    flower_identity, node: int, w: np.ndarray, n: float = 10, site: str = "site-a"
) -> Message:
    flower_identity.node_id = 0
    instr = Message(content=RecordDict(), dst_node_id=node, message_type=contract.TRAIN)
    content = RecordDict(
        {
            contract.ARRAYS: contract.array_record({"w": w}),
            contract.METRICS: MetricRecord(
                {"num-examples": n, "train-loss": 0.3, "train-accuracy": 0.9}
            ),
            contract.SITE: ConfigRecord({"site-id": site, "role": "train", "status": "ok"}),
        }
    )
    return Message(content, reply_to=instr)


GOOD = np.ones((2, 2), np.float32)


@pytest.mark.parametrize(
    ("w", "n", "needle"),
    [
        (np.array([[1, np.nan], [1, 1]], np.float32), 10, "non-finite"),
        (np.array([[1, np.inf], [1, 1]], np.float32), 10, "non-finite"),
        (np.ones((3, 2), np.float32), 10, "shape"),
        (np.ones((2, 2), np.float64), 10, "dtype"),
        (GOOD, 1e9, "num-examples"),
        (GOOD, 5_000_000, "num-examples"),
        (GOOD, 0, "at least 1"),
        (GOOD, 2.5, "integer"),
    ],
)
def test_bad_updates_are_refused(flower_identity, w, n, needle):
    verdict = check_inbound(
        contract.TRAIN, _reply(flower_identity, 7, w, n), EXPECTED, max_examples=100_000
    )
    assert not verdict.accepted
    assert verdict.node_id == 7
    assert any(needle in p for p in verdict.problems), verdict.problems


def test_good_update_is_accepted(flower_identity):
    verdict = check_inbound(contract.TRAIN, _reply(flower_identity, 7, GOOD), EXPECTED)
    assert verdict.accepted and verdict.site_id == "site-a"


def test_strategy_drops_bad_update_and_averages_the_rest(flower_identity):
    history = RunHistory()
    for node, name in ((1, "a"), (2, "b"), (3, "c")):
        history.sites[node] = SiteInfo(node, name, "train", "ok")
    strategy = FedmiFedAvg(min_train_nodes=1, min_available_nodes=1)
    strategy.setup_fedmi(
        train_nodes=[1, 2, 3],
        history=history,
        expected_arrays=EXPECTED,
        max_examples=1000,
        min_train_replies=1,
    )
    replies = [
        _reply(flower_identity, 1, np.full((2, 2), 1.0, np.float32), 10, "a"),
        _reply(flower_identity, 2, np.full((2, 2), 4.0, np.float32), 30, "b"),
        _reply(flower_identity, 3, np.full((2, 2), np.nan, np.float32), 10, "c"),
    ]
    arrays, metrics = strategy.aggregate_train(1, replies)
    # weighted mean of the two valid updates: (1*10 + 4*30) / 40 = 3.25
    np.testing.assert_allclose(arrays["w"].numpy(), np.full((2, 2), 3.25))
    assert metrics["train-loss"] == pytest.approx(0.3)
    dropped = history.rounds[1]["dropped"]
    assert [d["site_id"] for d in dropped] == ["c"]
    assert set(history.rounds[1]["train"]) == {"a", "b", "c"}


def test_strategy_keeps_model_when_too_few_valid_updates(flower_identity):
    history = RunHistory()
    strategy = FedmiFedAvg(min_train_nodes=1, min_available_nodes=1)
    strategy.setup_fedmi(
        train_nodes=[1],
        history=history,
        expected_arrays=EXPECTED,
        max_examples=1000,
        min_train_replies=2,
    )
    arrays, metrics = strategy.aggregate_train(1, [_reply(flower_identity, 1, GOOD)])
    assert arrays is None and metrics is None


def _pretrain_reply(flower_identity, arrays: dict, metrics: dict) -> Message:
    flower_identity.node_id = 0
    instr = Message(content=RecordDict(), dst_node_id=9, message_type=contract.PRETRAIN)
    content = RecordDict(
        {
            contract.ARRAYS: contract.array_record(arrays),
            contract.METRICS: MetricRecord(metrics),
            contract.SITE: ConfigRecord({"site-id": "site-c", "role": "holdout", "status": "ok"}),
        }
    )
    return Message(content, reply_to=instr)


PRETRAIN_EXPECTED = {
    "encoder.stages.0.w": ((2, 2), "float32"),
    "decoder.out.w": ((3,), "float32"),
}
GOOD_PRETRAIN = {"encoder.stages.0.w": GOOD, "decoder.out.w": np.zeros(3, np.float32)}


@pytest.mark.parametrize(
    ("arrays", "metrics", "needle"),
    [
        # an undeclared metric: a per-scan loss list, a label count
        (GOOD_PRETRAIN, {"num-examples": 5, "scan-losses": [0.1, 0.2]}, "'scan-losses' is not"),
        (GOOD_PRETRAIN, {"num-examples": 5, "num-positive": 2}, "'num-positive' is not"),
        # train-only metrics are not pretraining's
        (GOOD_PRETRAIN, {"num-examples": 5, "train-accuracy": 0.9}, "'train-accuracy' is not"),
        # wrong-shaped, extra, non-finite or missing arrays
        ({**GOOD_PRETRAIN, "decoder.out.w": np.zeros(4, np.float32)}, {"num-examples": 5}, "shape"),
        ({**GOOD_PRETRAIN, "head.w": np.zeros(2, np.float32)}, {"num-examples": 5}, "undeclared"),
        (
            {**GOOD_PRETRAIN, "decoder.out.w": np.array([0, np.nan, 0], np.float32)},
            {"num-examples": 5},
            "non-finite",
        ),
        ({"encoder.stages.0.w": GOOD}, {"num-examples": 5}, "arrays missing"),
        (GOOD_PRETRAIN, {"num-examples": 0}, "at least 1 for a train.pretrain reply"),
    ],
)
def test_a_crafted_pretrain_reply_is_refused_at_ingress(flower_identity, arrays, metrics, needle):
    msg = _pretrain_reply(flower_identity, arrays, metrics)
    verdict = check_inbound(contract.PRETRAIN, msg, PRETRAIN_EXPECTED)
    assert not verdict.accepted
    assert any(needle in p for p in verdict.problems), verdict.problems


def test_a_declared_pretrain_reply_is_accepted(flower_identity):
    metrics = {"num-examples": 5, "pretrain-loss": 0.8, "local-steps": 2, "epsilon": 1.5}
    msg = _pretrain_reply(flower_identity, GOOD_PRETRAIN, metrics)
    verdict = check_inbound(contract.PRETRAIN, msg, PRETRAIN_EXPECTED)
    assert verdict.accepted, verdict.problems
    # a pretrain reply cannot carry a train reply's evaluation record either
    msg.content[contract.EVALUATION] = MetricRecord({"num-examples": 1})
    verdict = check_inbound(contract.PRETRAIN, msg, PRETRAIN_EXPECTED)
    assert any("'evaluation' is not declared" in p for p in verdict.problems)
