"""``train.pretrain`` at a site (client/training/pretrain_handler.py, via the ClientApp):
volumes only — the train split and the unlabelled archive, a holdout's archive alone —
declared replies, DP charged to the ledger, and unlabelled scans that never reach the
supervised loss."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from flwr.app import Context, Message, RecordDict

from fedmi.client import data as site_data_module
from fedmi.client.app import build_client_app
from fedmi.client.privacy.ledger import PrivacyLedger
from fedmi.client.privacy.settings import PrivacySettings
from fedmi.client.replies import expected_arrays
from fedmi.client.site.settings import resolve_site
from fedmi.client.training import handler as train_handler
from fedmi.client.training import pretrain_handler
from fedmi.shared import contract
from fedmi.shared.harmonization import build_method_model
from fedmi.shared.instructions import PretrainInstruction, QueryInstruction, TrainInstruction
from fedmi.shared.model import ModelSpec, build_model, federated_state_dict
from fedmi.shared.pretraining import PretrainNet
from fedmi.shared.tasks import get_task

GRID = get_task("fdg-ad").grid.shape
INS = PretrainInstruction(task="fdg-ad", model="cnn", batch_size=4, num_pretrain_rounds=2)


def _net() -> PretrainNet:
    torch.manual_seed(0)
    return PretrainNet(build_method_model("fedavg", ModelSpec(arch="cnn")))


EXPECTED = expected_arrays(_net())


@pytest.fixture
def context_for(tiny_fdg, tmp_path, ingested):
    def make(site: str) -> Context:
        if not (tmp_path / site / "ingest").exists():
            ingested(tiny_fdg / site, tmp_path / site)
        node_config = {
            "data-dir": str(tiny_fdg / site),
            "state-dir": str(tmp_path / site),
            "dp": "off",
            "min-cell-count": 1,
        }
        return Context(
            run_id=1, node_id=7, node_config=node_config, state=RecordDict(), run_config={}
        )

    return make


def _message(ins: PretrainInstruction = INS) -> Message:
    content = RecordDict(
        {
            contract.CONFIG: ins.to_record(),
            contract.ARRAYS: contract.array_record(federated_state_dict(_net())),
        }
    )
    return Message(content=content, dst_node_id=7, message_type=contract.PRETRAIN)


def _archive(n: int, value: float) -> torch.Tensor:
    return torch.full((n, 1, *GRID), value, dtype=torch.float32)


@pytest.fixture
def archive(monkeypatch):
    """Stand in for the site's unlabelled archive (what ``load_unlabelled_volumes`` reads),
    wherever a module looks it up; returns a setter."""
    held = {"x": _archive(0, 0.0)}

    def load(state_dir, task_name=None):
        return held["x"].clone()

    monkeypatch.setattr(site_data_module, "load_unlabelled_volumes", load)
    monkeypatch.setattr(pretrain_handler, "load_unlabelled_volumes", load)

    def put(x: torch.Tensor) -> None:
        held["x"] = x

    return put


def test_a_training_site_pretrains_on_its_train_split_and_archive(
    flower_identity, context_for, archive
):
    archive(_archive(3, 1.0))
    app = build_client_app()
    msg = _message()
    ctx = context_for("site-a")
    reply = app(msg, ctx)
    assert reply.content[contract.SITE]["status"] == "ok", reply.content[contract.SITE]
    assert contract.check_reply(contract.PRETRAIN, reply.content, EXPECTED) == []
    query = app(
        Message(
            RecordDict({contract.CONFIG: QueryInstruction(task="fdg-ad").to_record()}),
            dst_node_id=7,
            message_type=contract.QUERY,
        ),
        ctx,
    )
    n_train = query.content[contract.METRICS]["num-train"]
    metrics = reply.content[contract.METRICS]
    assert metrics["num-examples"] == n_train + 3
    assert metrics["pretrain-loss"] >= 0 and "train-accuracy" not in metrics
    before, after = msg.content[contract.ARRAYS], reply.content[contract.ARRAYS]
    assert list(after) == list(before)
    assert any(k.startswith("decoder.") for k in after)
    changed = [k for k in after if not np.array_equal(after[k].numpy(), before[k].numpy())]
    assert any(k.startswith("encoder.") for k in changed)


def test_a_holdout_pretrains_on_its_archive_alone(
    flower_identity, context_for, archive, monkeypatch
):
    def no_labels(*args, **kwargs):
        raise AssertionError("a holdout's labelled scans were read for pretraining")

    monkeypatch.setattr(pretrain_handler, "site_data", no_labels)
    app = build_client_app()
    ctx = context_for("site-c")
    empty = app(_message(), ctx)  # no archive: nothing to pretrain on
    assert empty.content[contract.SITE]["status"] == "no-data"
    archive(_archive(5, 2.0))
    reply = app(_message(), ctx)
    assert reply.content[contract.SITE]["role"] == "holdout"
    assert reply.content[contract.SITE]["status"] == "ok"
    assert reply.content[contract.METRICS]["num-examples"] == 5
    assert contract.check_reply(contract.PRETRAIN, reply.content, EXPECTED) == []


@pytest.mark.parametrize("share", [None, 0.1])
def test_dp_pretraining_is_charged_to_the_ledger(
    flower_identity, context_for, archive, tmp_path, share
):
    """Charged as train.pretrain, up to the site's pretrain-share of its ε (default 0.3)."""
    archive(_archive(2, 1.0))
    ctx = context_for("site-a")
    site = resolve_site(dict(ctx.node_config), {})
    own = {} if share is None else {"pretrain_share": share}
    privacy = PrivacySettings(dp=True, epsilon=8.0, ledger_dir=tmp_path / "ledger", **own)
    share = 0.3 if share is None else share
    arrays = _message().content[contract.ARRAYS]
    reply = pretrain_handler.handle_pretrain(site, arrays, INS, privacy=privacy, run_id="r1")
    assert reply[contract.SITE]["status"] == "ok"
    metrics = reply[contract.METRICS]
    assert "pretrain-loss" not in metrics  # not a DP statistic
    assert 0 < metrics["epsilon"] <= share * 8.0 + 1e-9
    assert contract.check_reply(contract.PRETRAIN, reply, EXPECTED) == []
    with PrivacyLedger.transaction(privacy.ledger_folder(site), site_id=site.site_id) as led:
        charges = led.charges(run_id="r1", kind=contract.PRETRAIN)
        # σ planned for the run's pretraining rounds to end at the site's share of ε
        assert led.run_plan(f"r1/{contract.PRETRAIN}")["epsilon_target"] == share * 8.0
        assert led.charges(kind=contract.TRAIN) == []
    assert len(charges) == 1 and charges[0]["epsilon"] == pytest.approx(metrics["epsilon"])


def _train_once(context_for, flower_identity, capture: list) -> dict[str, np.ndarray]:
    app = build_client_app()
    torch.manual_seed(0)
    ins = TrainInstruction(task="fdg-ad", model="cnn", local_epochs=1, batch_size=4, server_round=1)
    content = RecordDict(
        {
            contract.CONFIG: ins.to_record(),
            contract.ARRAYS: contract.array_record(
                federated_state_dict(build_model(ModelSpec(arch="cnn")))
            ),
        }
    )
    reply = app(Message(content, dst_node_id=7, message_type=contract.TRAIN), context_for("site-a"))
    assert reply.content[contract.SITE]["status"] == "ok"
    return {k: v.numpy().copy() for k, v in reply.content[contract.ARRAYS].items()}


@pytest.fixture
def spy(monkeypatch):
    """Record the (volumes, labels) the supervised loop is given."""
    seen: list[tuple[torch.Tensor, torch.Tensor]] = []
    real = train_handler.train_local

    def train_local(model, x, y, settings, **kwargs):
        seen.append((x.clone(), y.clone()))
        return real(model, x, y, settings, **kwargs)

    monkeypatch.setattr(train_handler, "train_local", train_local)
    return seen


def test_a_poisoned_archive_never_reaches_the_supervised_loss(
    flower_identity, context_for, archive, spy
):
    """Pretraining off: a site whose archive holds extreme values trains to bit-identical
    weights as one without, on the very same labelled tensors."""
    archive(_archive(0, 0.0))
    clean = _train_once(context_for, flower_identity, spy)
    archive(_archive(4, 3e38))  # poisoned: extreme, near float32's maximum
    poisoned = _train_once(context_for, flower_identity, spy)
    assert list(clean) == list(poisoned)
    for k in clean:
        np.testing.assert_array_equal(clean[k], poisoned[k])
    (x0, y0), (x1, y1) = spy
    assert torch.equal(x0, x1) and torch.equal(y0, y1)
    assert float(x1.abs().max()) < 1e6


def test_with_pretraining_the_fine_tuning_rounds_see_the_same_labelled_tensors(
    flower_identity, context_for, archive, spy
):
    """Pretraining on: the archive reaches pretraining (it changes the pretrained weights)
    but the fine-tuning round's handler gets the same labelled tensors whatever it holds."""
    app = build_client_app()
    outs = []
    for value in (1.0, 1e6):
        archive(_archive(3, value))
        reply = app(_message(), context_for("site-a"))
        assert reply.content[contract.SITE]["status"] == "ok"
        outs.append(reply.content[contract.ARRAYS])
        _train_once(context_for, flower_identity, spy)
    k = next(k for k in outs[0] if k.startswith("encoder."))
    assert not np.array_equal(outs[0][k].numpy(), outs[1][k].numpy())  # it did pretrain on it
    (x0, y0), (x1, y1) = spy
    assert torch.equal(x0, x1) and torch.equal(y0, y1)
