"""Robust aggregation's caps and clipping, exact numbers; its settings; its report records."""

from __future__ import annotations

import numpy as np
import pytest
from flwr.app import ConfigRecord, Message, MetricRecord, RecordDict

from fedmi.server.history import RunHistory, SiteInfo
from fedmi.server.report.robustness import robustness_section
from fedmi.server.strategy import make_strategy
from fedmi.server.strategy.robust import (
    CLIPPED,
    COUNT_CAPPED,
    WEIGHT_CAPPED,
    RobustSettings,
    Update,
    clip_update,
    screen_updates,
    update_norm,
)
from fedmi.shared import contract
from fedmi.shared.run_config import RunConfig, RunConfigError

REF = {"w": np.zeros(2, np.float32), "n": np.array([5], np.int64)}


def _u(node: int, dx: float, dy: float, n: float) -> Update:
    return Update(node, f"s{node}", {"w": np.array([dx, dy], np.float32), "n": np.array([9])}, n)


def test_clip_scales_the_update_to_the_bound_and_keeps_counters():
    arrays = {"w": np.array([3.0, 4.0], np.float32), "n": np.array([9], np.int64)}
    out, before, after = clip_update(arrays, REF, 1.0)
    assert before == 5.0 and after == pytest.approx(1.0, rel=1e-6)
    np.testing.assert_allclose(out["w"], [0.6, 0.8], rtol=1e-6)
    assert out["w"].dtype == np.float32 and out["n"].tolist() == [9]  # counters as sent
    same, b, a = clip_update(arrays, REF, 10.0)
    assert b == a == 5.0 and same["w"].tolist() == [3.0, 4.0]


def test_screen_caps_counts_then_weights_then_clips_to_the_median_norm():
    # norms 5, 1, 2, 1000; declared counts 40, 30, 20, 10
    updates = [_u(1, 3, 4, 40), _u(2, 0, 1, 30), _u(3, 0, 2, 20), _u(4, 600, 800, 100000)]
    changes = screen_updates(updates, REF, {1: 40, 2: 30, 3: 20, 4: 10}, RobustSettings())
    got = [(c.site_id, c.reason, c.before, round(c.after, 4)) for c in changes]
    # counts after the declared cap: 40, 30, 20, 10 → median 25 caps s1 and s2
    # norms: median of (5, 1, 2, 1000) = 3.5 clips s1 and s4
    assert got == [
        ("s4", COUNT_CAPPED, 100000.0, 10.0),
        ("s1", WEIGHT_CAPPED, 40.0, 25.0),
        ("s2", WEIGHT_CAPPED, 30.0, 25.0),
        ("s1", CLIPPED, 5.0, 3.5),
        ("s4", CLIPPED, 1000.0, 3.5),
    ]
    assert [u.num_examples for u in updates] == [25.0, 25.0, 20.0, 10.0]
    np.testing.assert_allclose(updates[3].arrays["w"], [2.1, 2.8], rtol=1e-6)
    assert update_norm(updates[1].arrays, REF) == 1.0  # untouched


def test_a_configured_bound_and_off():
    updates = [_u(1, 3, 4, 10), _u(2, 0, 1, 10)]
    changes = screen_updates(updates, REF, {}, RobustSettings(norm_bound=2.0, weight_cap=0))
    assert [(c.site_id, c.reason, round(c.after, 6)) for c in changes] == [("s1", CLIPPED, 2.0)]
    off = [_u(1, 3, 4, 1e5)]
    assert screen_updates(off, REF, {1: 5}, RobustSettings(enabled=False)) == []
    assert off[0].num_examples == 1e5


def test_new_keys_are_validated_and_a_typo_is_named():
    cfg = RunConfig.from_mapping({"robust-aggregator": "median", "robust-norm-bound": 2.5})
    assert cfg.robust_aggregator == "median" and cfg.robust_norm_bound == 2.5
    assert RunConfig().robust_aggregation == "on"  # on by default
    with pytest.raises(RunConfigError, match="robust-norm-factr"):
        RunConfig.from_mapping({"robust-norm-factr": 2.0})
    with pytest.raises(RunConfigError, match="robust-aggregator"):
        RunConfig.from_mapping({"robust-aggregator": "krum"})
    with pytest.raises(RunConfigError, match="robust-trim-fraction"):
        RunConfig.from_mapping({"robust-trim-fraction": 0.6})


def _reply(node: int, w: list[float], n: int, site: str) -> Message:
    content = RecordDict(
        {
            contract.ARRAYS: contract.array_record({"w": np.array(w, np.float32)}),
            contract.METRICS: MetricRecord({"num-examples": n, "train-loss": 0.5}),
            contract.SITE: ConfigRecord(
                {"site-id": site, "role": "train", "status": "ok", "task": "fdg-ad"}
            ),
        }
    )
    msg = Message(content=content, dst_node_id=0, message_type=contract.TRAIN)
    msg.metadata._src_node_id = node  # type: ignore[attr-defined]
    return msg


@pytest.mark.parametrize("aggregator", ["auto", "mean", "trimmed-mean", "median", "multikrum"])
def test_the_strategy_caps_a_liar_and_records_it(flower_identity, aggregator):
    history = RunHistory()
    for node, (site, n) in {1: ("a", 10), 2: ("b", 10), 3: ("c", 10)}.items():
        history.sites[node] = SiteInfo(node, site, "train", "ok", num_train=n)
    cfg = RunConfig(robust_aggregator=aggregator)
    strategy = make_strategy(
        cfg,
        train_nodes=[1, 2, 3],
        history=history,
        expected_arrays={"w": ((2,), "float32")},
    )
    strategy._sent = {"w": np.zeros(2, np.float32)}  # what configure_train stores
    replies = [
        _reply(1, [1.0, 0.0], 10, "a"),
        _reply(2, [1.0, 0.0], 10, "b"),
        _reply(3, [-1000.0, 0.0], 100000, "c"),
    ]
    arrays, _ = strategy.aggregate_train(1, replies)
    w = arrays["w"].numpy()
    # capped to 10 scans and clipped to the median norm 1: (1 + 1 − 1) / 3 for the mean
    # (trimmed-mean cuts int(0.25 · 3) = 0 of three sites at each end)
    expected = {"mean": 1 / 3, "median": 1.0, "multikrum": 1.0} | dict.fromkeys(
        ("auto", "trimmed-mean"), 1 / 3
    )
    assert w[0] == pytest.approx(expected[aggregator], rel=1e-5)
    section = robustness_section(cfg, history)
    assert [(c["site_id"], c["reason"]) for c in section["changed"]] == [
        ("c", COUNT_CAPPED),
        ("c", CLIPPED),
    ]
    assert section["changed"][1]["before"] == 1000.0 and section["settings"]["enabled"]


def test_auto_is_flowers_trimmed_mean_for_fedavg_and_the_methods_own_otherwise():
    from flwr.serverapp.strategy import FedAdam, FedTrimmedAvg

    def built(method: str):
        return make_strategy(
            RunConfig(method=method), train_nodes=[1], history=RunHistory(), expected_arrays={}
        )

    assert isinstance(built("fedavg"), FedTrimmedAvg) and built("fedavg").beta == 0.25
    assert isinstance(built("fedadam"), FedAdam)
