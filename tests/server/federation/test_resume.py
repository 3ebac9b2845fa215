"""Resumable rounds (server/resume.py): dropouts per round, stray replies, exact resumption."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import pytest
from flwr.app import ConfigRecord, Message, MetricRecord, RecordDict

from fedmi.client.evaluation.statistics import evaluation_statistics
from fedmi.client.training.handler import with_evaluation
from fedmi.server.federation import resume
from fedmi.server.federation.rounds import run_rounds
from fedmi.server.history import RunHistory, SiteInfo
from fedmi.server.report.document import save_arrays
from fedmi.server.strategy import make_strategy
from fedmi.shared import contract
from fedmi.shared.instructions import EvaluateInstruction, TrainInstruction
from fedmi.shared.run_config import RunConfig

SITES = {1: "site-a", 2: "site-b"}


class StepGrid:
    """Two training sites that return ``w + delta(site, round)``; one may stay silent."""

    def __init__(self, silent: set[tuple[int, int]] | None = None, stray: bool = False):
        self.silent = silent or set()
        self.stray = stray
        self.counter = 0
        self.received: list[tuple[int, int]] = []  # (node, round) of fused evaluations

    def _evaluation(self, node: int) -> RecordDict:
        labels = np.arange(20) % 2
        scores = np.clip(0.3 + 0.4 * labels + 0.01 * np.arange(20), 0, 1)
        stats, _ = evaluation_statistics(scores, labels, 1)
        site = ConfigRecord(
            {"site-id": SITES[node], "role": "train", "status": "ok", "task": "fdg-ad"}
        )
        return RecordDict({contract.METRICS: MetricRecord(stats), contract.SITE: site})  # type: ignore[arg-type]

    def get_node_ids(self) -> Iterable[int]:
        return list(SITES)

    def send_and_receive(self, messages: Iterable[Message], *, timeout: float | None = None):
        replies = []
        for msg in messages:
            self.counter += 1
            msg.metadata.__dict__["_message_id"] = f"m{self.counter}"  # as Flower's push does
            node, mtype = msg.metadata.dst_node_id, msg.metadata.message_type
            r = int(msg.content[contract.CONFIG].get("server-round", 0))
            if (node, r) in self.silent:
                continue
            site = ConfigRecord(
                {"site-id": SITES[node], "role": "train", "status": "ok", "task": "fdg-ad"}
            )
            if mtype == contract.TRAIN:
                arrays = msg.content[contract.ARRAYS]
                new = {k: v.numpy() + 0.01 * node * r for k, v in arrays.items()}
                out = RecordDict(
                    {
                        contract.ARRAYS: contract.array_record(new),
                        contract.METRICS: MetricRecord({"num-examples": 10 * node}),
                        contract.SITE: site,
                    }
                )
                if msg.content[contract.CONFIG].get("evaluate-received"):
                    self.received.append((node, r))
                    out = with_evaluation(out, self._evaluation(node))
            else:
                out = self._evaluation(node)
            replies.append(Message(out, reply_to=msg))
        if self.stray:  # a reply nobody asked for this round (e.g. a late one)
            stray = Message(
                RecordDict({}), dst_node_id=1, message_type=contract.TRAIN, group_id="0"
            )
            stray.metadata.__dict__["_message_id"] = "late"
            replies.append(Message(RecordDict({}), reply_to=stray))
        return replies


def _history() -> RunHistory:
    h = RunHistory()
    for n, name in SITES.items():
        h.sites[n] = SiteInfo(n, name, "train", "ok", 40, 30, 10, 20)
    return h


def _setup(method: str = "fedadam", **kw):
    cfg = RunConfig(method=method, num_server_rounds=3, server_learning_rate=0.1, **kw)
    initial = contract.array_record(
        {"w": np.zeros((2, 3), np.float32), "b": np.ones(4, np.float32)}
    )
    expected = {k: (tuple(v.shape), str(v.dtype)) for k, v in initial.items()}
    history = _history()
    strategy = make_strategy(cfg, train_nodes=SITES, history=history, expected_arrays=expected)
    return cfg, initial, history, strategy


def _run(strategy, grid, arrays, first, history, on_round=None, fuse=True):
    return run_rounds(
        strategy,
        grid,
        arrays=arrays,
        first_round=first,
        num_rounds=3,
        timeout=5.0,
        train=TrainInstruction(),
        evaluate=EvaluateInstruction(),
        history=history,
        on_round=on_round,
        fuse_evaluation=fuse,
    )


def test_resumed_fedadam_matches_an_uninterrupted_run(flower_identity, tmp_path):
    cfg, initial, history, strategy = _setup(out_dir=str(tmp_path))
    straight = _run(strategy, StepGrid(), initial, 1, history)

    cfg, initial, history, strategy = _setup(out_dir=str(tmp_path))

    def on_round(r, arrays):
        save_arrays(resume.checkpoint_path(tmp_path, r), arrays)
        if r:
            resume.save_resume_point(tmp_path, cfg, r, strategy, history)
        if r == 1:
            raise KeyboardInterrupt  # the coordinator dies after round 1

    with pytest.raises(KeyboardInterrupt):
        _run(strategy, StepGrid(), initial, 1, history, on_round)

    # a new process: fresh strategy and history, state from the run folder
    cfg2, initial2, history2, strategy2 = _setup(out_dir=str(tmp_path), round_timeout=5.0)
    point = resume.load_resume_point(tmp_path, cfg2)
    assert point is not None and point.last_round == 1
    assert set(point.strategy_state) == {"current_arrays", "m_t", "v_t"}
    history2.rounds.update(point.rounds)
    resume.restore_strategy(strategy2, point.strategy_state)
    resumed = _run(strategy2, StepGrid(), point.arrays, 2, history2)
    for k in straight:
        np.testing.assert_array_equal(resumed[k].numpy(), straight[k].numpy())
    assert sorted(history2.rounds) == [1, 2, 3]


def test_a_run_folder_of_other_settings_is_refused(flower_identity, tmp_path):
    cfg, initial, history, strategy = _setup(out_dir=str(tmp_path))
    save_arrays(resume.checkpoint_path(tmp_path, 1), initial)
    resume.save_resume_point(tmp_path, cfg, 1, strategy, history)
    other = RunConfig(method="fedavg", num_server_rounds=3, out_dir=str(tmp_path))
    with pytest.raises(resume.ResumeError, match="other settings"):
        resume.load_resume_point(tmp_path, other)
    # operational settings may change between the two starts
    same = RunConfig(
        method="fedadam", num_server_rounds=3, server_learning_rate=0.1, round_timeout=9.0
    )
    assert resume.load_resume_point(tmp_path, same) is not None
    assert resume.load_resume_point(tmp_path / "fresh", same) is None


def test_a_checkpoint_of_another_model_is_refused(flower_identity, tmp_path):
    """A run folder written by a model of other shapes (an older fedmi, another atlas) is
    not continued with weights the sites cannot load."""
    cfg, initial, history, strategy = _setup(out_dir=str(tmp_path))
    save_arrays(resume.checkpoint_path(tmp_path, 1), initial)
    resume.save_resume_point(tmp_path, cfg, 1, strategy, history)
    shapes = {k: (tuple(v.shape), str(v.dtype)) for k, v in initial.items()}
    assert resume.load_resume_point(tmp_path, cfg, shapes) is not None
    name = next(iter(shapes))
    other = {**shapes, name: ((151,), shapes[name][1])}
    with pytest.raises(resume.ResumeError, match=f"another model.*{name}.*new out-dir"):
        resume.load_resume_point(tmp_path, cfg, other)


@pytest.mark.parametrize("fuse", [True, False])
def test_missing_sites_are_listed_per_round_and_stray_replies_ignored(flower_identity, fuse):
    cfg, initial, history, strategy = _setup(method="fedavg")
    grid = StepGrid(silent={(2, 2)}, stray=True)
    _run(strategy, grid, initial, 1, history, fuse=fuse)
    assert history.rounds[1]["missing"] == []
    reason = "no reply before the round timeout"
    missing = [{"site_id": "site-b", "stage": "train", "reason": reason}]
    if not fuse:  # its own evaluate message went unanswered too
        missing.append({"site_id": "site-b", "stage": "evaluate", "reason": reason})
    assert history.rounds[2]["missing"] == missing
    assert set(history.rounds[2]["train"]) == {"site-a"}
    assert set(history.rounds[3]["train"]) == {"site-a", "site-b"}
    assert history.rounds[3]["missing"] == []
    # fused: the silent round-2 reply would have carried round 1's evaluation, and site-b
    # evaluated round 2's model when it came back in round 3
    both, a = {"site-a", "site-b"}, {"site-a"}
    assert set(history.rounds[1]["evaluate"]) == (a if fuse else both)
    assert set(history.rounds[2]["evaluate"]) == (both if fuse else a)
    assert set(history.rounds[3]["evaluate"]) == both


def test_fused_evaluation_sends_one_message_per_site_and_round(flower_identity):
    """Rounds 2..N ask for the received model's evaluation; only round N has an evaluate."""
    cfg, initial, history, strategy = _setup(method="fedavg")
    grid = StepGrid()
    _run(strategy, grid, initial, 1, history)
    assert sorted(grid.received) == [(1, 2), (1, 3), (2, 2), (2, 3)]
    assert grid.counter == 3 * 2 + 2  # 3 train rounds + the last round's evaluate
    for r in (1, 2, 3):
        assert history.rounds[r]["evaluate"]["site-a"]["n"] == 20


def test_a_dropped_site_never_blocks_sampling(flower_identity):
    cfg, initial, history, strategy = _setup(method="fedavg")

    class OneLeft(StepGrid):
        def get_node_ids(self) -> Iterable[int]:
            return [1]  # site-b went offline

    out = _run(strategy, OneLeft(), initial, 1, history)
    assert out is not None
    assert all(set(history.rounds[r]["train"]) == {"site-a"} for r in (1, 2, 3))
