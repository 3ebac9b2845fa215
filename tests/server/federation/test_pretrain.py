"""Federated self-supervised pretraining at the coordinator (server/federation/pretrain.py):
the phase before training, its resume points, its report — against the fake grid."""

from __future__ import annotations

import json

import numpy as np
import pytest

from fedmi.server.federation import resume
from fedmi.server.federation.run import run_federation
from fedmi.server.report.document import load_arrays
from fedmi.shared import contract
from fedmi.shared.run_config import RunConfig
from tests.report_schema import assert_valid_report
from tests.server.federation.test_fake_grid import FakeGrid


def _cfg(tmp_path, name: str = "run", **kw) -> RunConfig:
    values = dict(
        model="cnn",
        pretrain_rounds=3,
        num_server_rounds=1,
        min_nodes=3,
        node_wait=0.0,
        round_timeout=30.0,
        validation_timeout=7.0,
        normative_model="off",
        out_dir=str(tmp_path / name),
    )
    return RunConfig(**{**values, **kw})


def test_pretraining_runs_first_and_seeds_the_classifier(flower_identity, tmp_path):
    cfg = _cfg(tmp_path)
    grid = FakeGrid()
    report = run_federation(grid, cfg, tmp_path / "run")  # type: ignore[arg-type]
    kinds = [m for m, _ in grid.sent]
    pretrain = [n for m, n in grid.sent if m == contract.PRETRAIN]
    # 3 rounds × (2 training sites + the holdout), all before the first train message
    assert sorted(pretrain) == [1, 1, 1, 2, 2, 2, 3, 3, 3]
    last_pretrain = max(i for i, m in enumerate(kinds) if m == contract.PRETRAIN)
    assert last_pretrain < kinds.index(contract.TRAIN)
    # the classifier's encoder stages start from the pretrained ones, the decoder is dropped
    pretrained = load_arrays(tmp_path / "run" / "pretrained_model.npz")
    final = load_arrays(tmp_path / "run" / "final_model.npz")  # the fake sites echo weights
    enc = [k for k in pretrained if k.startswith("encoder.stages.")]
    assert enc and not any(k.startswith("decoder.") for k in final)
    for k in enc:
        np.testing.assert_array_equal(final["backbone." + k].numpy(), pretrained[k].numpy())
    initial = load_arrays(tmp_path / "run" / "checkpoints" / "round-000.npz")
    k = enc[0]
    np.testing.assert_array_equal(initial["backbone." + k].numpy(), pretrained[k].numpy())
    # FedAvg by num-examples: node 1 and 2 (45 scans) and the holdout (6) moved by 0.01·n·r,
    # the holdout's update first clipped to the round's median update norm (node 2's: robust
    # aggregation screens pretraining updates as it does training updates)
    step = sum(0.01 * n * w for n, w in ((1, 45), (2, 45), (2, 6))) / 96
    first = load_arrays(tmp_path / "run" / "checkpoints" / "pretrain-001.npz")
    start = first[k].numpy() - np.float32(step)
    np.testing.assert_allclose(pretrained[k].numpy(), start + 6 * step, rtol=0, atol=1e-5)
    assert_valid_report(report)


def test_the_report_shows_pretraining_spend_and_contributing_holdouts(flower_identity, tmp_path):
    report = run_federation(FakeGrid(), _cfg(tmp_path), tmp_path / "run")  # type: ignore[arg-type]
    pre = report["pretraining"]
    assert pre["rounds"] == pre["completed_rounds"] == 3 and pre["holdouts_enabled"] is True
    assert pre["linear_probe_rounds"] == 0
    assert pre["holdouts_contributed"] == ["site-c"]
    rows = {r["site_id"]: r for r in pre["per_site"]}
    assert rows["site-c"] == {
        "site_id": "site-c",
        "role": "holdout",
        "rounds_pretrained": 3,
        "num_examples": 6,
        "status": "ok",
        "refused_rounds": {},
    }
    # privacy: the pretraining spend per site, and the releases by kind
    spend = {r["site_id"]: r for r in report["privacy"]["pretraining"]}
    assert spend["site-c"]["dp"] == "on" and spend["site-c"]["epsilon"] == 1.5
    assert spend["site-a"]["steps"] == 9 and spend["site-a"]["rounds_pretrained"] == 3
    releases = {r["site_id"]: r for r in report["privacy"]["releases"]}
    assert releases["site-c"]["released"][contract.PRETRAIN] == 3
    assert releases["site-a"]["released"][contract.PRETRAIN] == 3
    saved = json.loads((tmp_path / "run" / "report.json").read_text())
    assert_valid_report(saved)
    page = (tmp_path / "run" / "report.html").read_text()
    assert "Self-supervised pretraining: 3 of 3 round(s)" in page
    assert "holdouts that contributed unlabelled scans: site-c" in page
    assert "train.pretrain 3" in page
    assert "linear probe" not in page


def test_the_linear_probe_rounds_are_sent_and_reported(flower_identity, tmp_path):
    cfg = _cfg(tmp_path, pretrain_rounds=1, linear_probe_rounds=1)
    sent: list[dict] = []

    class Recording(FakeGrid):
        def send_and_receive(self, messages, *, timeout=None):
            messages = list(messages)
            sent.extend(
                dict(m.content[contract.CONFIG])
                for m in messages
                if m.metadata.message_type == contract.TRAIN
            )
            return super().send_and_receive(messages, timeout=timeout)

    report = run_federation(Recording(), cfg, tmp_path / "run")  # type: ignore[arg-type]
    assert sent and all(c["linear-probe-rounds"] == 1 for c in sent)
    assert report["pretraining"]["linear_probe_rounds"] == 1
    assert_valid_report(report)
    page = (tmp_path / "run" / "report.html").read_text()
    assert "Training rounds 1–1 trained only the encoder's projection and the head" in page


def test_holdouts_stay_out_of_pretraining_when_asked(flower_identity, tmp_path):
    cfg = _cfg(tmp_path, pretrain_rounds=1, pretrain_holdouts=False)
    grid = FakeGrid()
    report = run_federation(grid, cfg, tmp_path / "run")  # type: ignore[arg-type]
    assert sorted(n for m, n in grid.sent if m == contract.PRETRAIN) == [1, 2]
    assert report["pretraining"]["holdouts_contributed"] == []
    assert "pretrain-holdouts off" in (tmp_path / "run" / "report.html").read_text()


def test_a_run_without_pretraining_sends_no_pretrain_message(flower_identity, tmp_path):
    grid = FakeGrid()
    report = run_federation(grid, _cfg(tmp_path, pretrain_rounds=0), tmp_path / "run")  # type: ignore[arg-type]
    assert contract.PRETRAIN not in {m for m, _ in grid.sent}
    assert report["pretraining"] is None and "pretraining" not in report["privacy"]
    assert_valid_report(report)


@pytest.mark.parametrize("crash_round", [1, 3])
def test_a_run_killed_during_pretraining_resumes_to_the_same_weights(
    flower_identity, tmp_path, crash_round
):
    straight_cfg = _cfg(tmp_path, "straight")
    run_federation(FakeGrid(), straight_cfg, tmp_path / "straight")  # type: ignore[arg-type]

    cfg = _cfg(tmp_path, "killed")
    dying = FakeGrid()
    dying.crash_in_pretrain_round = crash_round
    with pytest.raises(KeyboardInterrupt):
        run_federation(dying, cfg, tmp_path / "killed")  # type: ignore[arg-type]
    assert contract.TRAIN not in {m for m, _ in dying.sent}
    if crash_round > 1:
        state = json.loads((tmp_path / "killed" / resume.STATE_FILE).read_text())
        assert (state["phase"], state["last_round"]) == ("pretrain", crash_round - 1)
        assert state["checkpoint"] == f"pretrain-{crash_round - 1:03d}.npz"

    again = FakeGrid()  # a restarted coordinator, same run folder and settings
    report = run_federation(again, cfg, tmp_path / "killed")  # type: ignore[arg-type]
    left = 4 - crash_round  # the rounds not completed before the crash
    assert [n for m, n in again.sent if m == contract.PRETRAIN] == [1, 2, 3] * left
    for name in ("pretrained_model.npz", "final_model.npz"):
        a = load_arrays(tmp_path / "straight" / name)
        b = load_arrays(tmp_path / "killed" / name)
        assert list(a) == list(b)
        for k in a:
            np.testing.assert_array_equal(a[k].numpy(), b[k].numpy())
    assert report["pretraining"]["completed_rounds"] == 3
    assert [r["site_id"] for r in report["pretraining"]["per_site"]] == [
        "site-a",
        "site-b",
        "site-c",
    ]
    assert all(r["rounds_pretrained"] == 3 for r in report["pretraining"]["per_site"])


def test_a_run_resumed_in_training_does_not_pretrain_again(flower_identity, tmp_path):
    cfg = _cfg(tmp_path, pretrain_rounds=2, num_server_rounds=2)
    run_federation(FakeGrid(), cfg, tmp_path / "run")  # type: ignore[arg-type]
    # the coordinator restarts after round 1 of training: its resume point is of phase train
    state_file = tmp_path / "run" / resume.STATE_FILE
    state = json.loads(state_file.read_text())
    assert state["phase"] == "train"
    state["last_round"], state["checkpoint"] = 1, "round-001.npz"
    state["rounds"] = state["rounds"][:1]
    state_file.write_text(json.dumps(state))
    grid = FakeGrid()
    report = run_federation(grid, cfg, tmp_path / "run")  # type: ignore[arg-type]
    assert contract.PRETRAIN not in {m for m, _ in grid.sent}
    assert sorted(n for m, n in grid.sent if m == contract.TRAIN) == [1, 2]
    assert report["pretraining"]["completed_rounds"] == 2  # kept in the resume point


def test_a_site_cannot_drag_the_pretrained_encoder(flower_identity, tmp_path):
    """One site sending a huge pretraining update: the norm bound scales it to the round's
    median update norm before FedAvg, so the encoder moves as if it had sent node 2's."""
    grid = FakeGrid()
    answer = grid._pretrain_answer
    sent: dict[str, np.ndarray] = {}

    def dishonest(node, role, content):
        out = answer(node, role, content)
        if node == 3:  # the holdout: +1000 on every weight
            sent.update({k: v.numpy() for k, v in content[contract.ARRAYS].items()})
            bad = {k: (v + np.float32(1000.0)).astype(v.dtype) for k, v in sent.items()}
            out[contract.ARRAYS] = contract.array_record(bad)
        return out

    grid._pretrain_answer = dishonest  # type: ignore[method-assign]
    cfg = _cfg(tmp_path, pretrain_rounds=1)
    report = run_federation(grid, cfg, tmp_path / "run")  # type: ignore[arg-type]
    after = load_arrays(tmp_path / "run" / "checkpoints" / "pretrain-001.npz")
    k = next(k for k in after if k.startswith("encoder.stages."))
    # nodes 1, 2 moved by 0.01, 0.02; the holdout's update clipped to node 2's norm
    step = (0.01 * 45 + 0.02 * 45 + 0.02 * 6) / 96
    np.testing.assert_allclose(after[k].numpy() - sent[k], step, rtol=0, atol=1e-5)
    screened = report["pretraining"]["screened"]
    assert [(s["site_id"], s["reason"]) for s in screened] == [("site-c", "norm-clipped")]
    assert_valid_report(report)
