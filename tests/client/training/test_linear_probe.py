"""``linear-probe-rounds``: the first training rounds after pretraining move only the CNN
encoder's projection and the head (LP-FT), with and without DP; later rounds move every
weight. A round outside the probe, a regional model or a probe past the run's rounds is
handled as the instruction says, and a bad instruction is refused before anything trains."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from flwr.app import Context, RecordDict

from fedmi.client.privacy.ledger import PrivacyLedger
from fedmi.client.privacy.settings import PrivacySettings
from fedmi.client.site.settings import resolve_site
from fedmi.client.training.handler import handle_train
from fedmi.shared import contract
from fedmi.shared.instructions import InstructionError, TrainInstruction
from fedmi.shared.model import ModelSpec, build_model, federated_state_dict

PROBED = ("backbone.encoder.project.", "backbone.head.")


@pytest.fixture
def site_a(tiny_fdg, tmp_path, ingested):
    ingested(tiny_fdg / "site-a", tmp_path / "site-a")
    node_config = {
        "data-dir": str(tiny_fdg / "site-a"),
        "state-dir": str(tmp_path / "site-a"),
        "dp": "off",
        "min-cell-count": 1,
    }
    ctx = Context(run_id=1, node_id=7, node_config=node_config, state=RecordDict(), run_config={})
    return resolve_site(dict(ctx.node_config), {})


def _received() -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    return federated_state_dict(build_model(ModelSpec(arch="cnn", task="fdg-ad")))


def _train(site, server_round: int, *, probe_rounds: int, privacy: PrivacySettings):
    ins = TrainInstruction(
        task="fdg-ad",
        model="cnn",
        local_epochs=2,
        batch_size=4,
        learning_rate=0.01,
        num_server_rounds=3,
        server_round=server_round,
        linear_probe_rounds=probe_rounds,
    )
    sent = _received()
    reply = handle_train(
        site, contract.array_record(sent), ins, privacy=privacy, run_id=f"r{server_round}"
    )
    assert reply[contract.SITE]["status"] == "ok", reply[contract.SITE]
    got = {k: v.numpy() for k, v in reply[contract.ARRAYS].items()}
    assert list(got) == list(sent)  # every weight is sent back, frozen or not
    return {k for k in sent if not np.array_equal(got[k], sent[k].numpy())}


@pytest.mark.parametrize("dp", [False, True], ids=["no-dp", "dp"])
def test_probe_rounds_move_only_the_projection_and_the_head(site_a, tmp_path, dp):
    privacy = (
        PrivacySettings(dp=True, epsilon=8.0, ledger_dir=tmp_path / "ledger")
        if dp
        else PrivacySettings(dp=False)
    )
    probed = _train(site_a, 2, probe_rounds=2, privacy=privacy)
    assert probed and all(k.startswith(PROBED) for k in probed), sorted(probed)
    assert any(k.startswith("backbone.encoder.project.") for k in probed)
    assert any(k.startswith("backbone.head.") for k in probed)
    full = _train(site_a, 3, probe_rounds=2, privacy=privacy)  # round 3 > 2: fine-tuning
    assert any(k.startswith("backbone.encoder.stages.") for k in full)
    if dp:  # a probe round is a DP round like any other: charged to the ledger
        folder = privacy.ledger_folder(site_a)
        with PrivacyLedger.transaction(folder, site_id=site_a.site_id) as led:
            assert len(led.charges(run_id="r2", kind=contract.TRAIN)) == 1


def test_without_probe_rounds_every_round_moves_the_stages(site_a):
    changed = _train(site_a, 1, probe_rounds=0, privacy=PrivacySettings(dp=False))
    assert any(k.startswith("backbone.encoder.stages.") for k in changed)


@pytest.mark.parametrize(
    "values, needle",
    [
        ({"linear_probe_rounds": -1}, "linear-probe-rounds=-1 must be at least 0"),
        ({"linear_probe_rounds": 4}, "exceeds num-server-rounds=3"),
        ({"linear_probe_rounds": True}, "linear-probe-rounds must be a whole number"),
        ({"linear_probe_rounds": "2"}, "linear-probe-rounds must be a whole number"),
        ({"linear_probe_rounds": 1, "model": "regional"}, "only the 'cnn' encoder"),
    ],
)
def test_a_bad_probe_instruction_is_refused(values, needle):
    base = {"model": "cnn", "num_server_rounds": 3, "server_round": 1}
    with pytest.raises(InstructionError, match="train instruction") as err:
        TrainInstruction(**{**base, **values})
    assert needle in str(err.value)


def test_the_probe_round_rule():
    ins = TrainInstruction(model="cnn", num_server_rounds=5, linear_probe_rounds=2)
    rounds = [
        r for r in range(6) if TrainInstruction(**{**ins.__dict__, "server_round": r}).linear_probe
    ]
    assert rounds == [1, 2]  # round 0 (the central baselines' "no round") never probes
    record = ins.to_record()
    assert record["linear-probe-rounds"] == 2
    assert TrainInstruction.from_record(record) == ins
    del record["linear-probe-rounds"]
    with pytest.raises(InstructionError, match="missing key.*linear-probe-rounds"):
        TrainInstruction.from_record(record)
