"""DP through the real ClientApp: declared privacy metrics, no Opacus names, refusals."""

from __future__ import annotations

import pytest
import torch
from flwr.app import Context, Message, RecordDict

from fedmi.client.app import build_client_app
from fedmi.client.privacy.ledger import LEDGER_FILE
from fedmi.client.replies import expected_arrays
from fedmi.client.site.config import DEFAULT_EPSILON
from fedmi.shared import contract
from fedmi.shared.instructions import TrainInstruction
from fedmi.shared.model import build_model, federated_state_dict

EXPECTED = expected_arrays(build_model())
PRIVACY_KEYS = {"epsilon", "epsilon-budget", "delta", "noise-multiplier", "sample-rate"}


@pytest.fixture
def ctx(tiny_fdg, tmp_path, ingested):
    ingested(tiny_fdg / "site-a", tmp_path / "state")

    def make(**node: object) -> Context:
        node_config = {
            "data-dir": str(tiny_fdg / "site-a"),
            "state-dir": str(tmp_path / "state"),
            **node,
        }
        return Context(
            run_id=11, node_id=7, node_config=node_config, state=RecordDict(), run_config={}
        )

    return make


def _train(flower_identity, server_round: int, rounds: int) -> Message:
    torch.manual_seed(0)
    ins = TrainInstruction(
        task="fdg-ad",
        local_epochs=1,
        batch_size=4,
        server_round=server_round,
        num_server_rounds=rounds,
    )
    content = RecordDict(
        {
            contract.CONFIG: ins.to_record(),
            contract.ARRAYS: contract.array_record(federated_state_dict(build_model())),
        }
    )
    return Message(content=content, dst_node_id=7, message_type=contract.TRAIN)


def test_dp_is_on_by_default_and_only_declared_values_leave(flower_identity, ctx, tmp_path):
    reply = build_client_app()(_train(flower_identity, 1, 2), ctx())
    assert contract.check_reply(contract.TRAIN, reply.content, EXPECTED) == []
    assert reply.content[contract.SITE]["status"] == "ok"
    names = list(reply.content[contract.ARRAYS].keys())
    assert names == list(EXPECTED) and not any("_module" in k for k in names)
    m = dict(reply.content[contract.METRICS])
    assert PRIVACY_KEYS <= set(m) and "train-loss" not in m and "train-accuracy" not in m
    # the default budget (no [privacy] in the tiny site's site.toml)
    assert 0 < m["epsilon"] <= m["epsilon-budget"] == DEFAULT_EPSILON
    assert m["dp-steps"] == m["local-steps"] > 0
    assert (tmp_path / "state" / LEDGER_FILE).exists()


def test_a_site_that_says_off_trains_without_dp(flower_identity, ctx, tmp_path):
    reply = build_client_app()(_train(flower_identity, 1, 2), ctx(dp="off"))
    m = dict(reply.content[contract.METRICS])
    assert "train-loss" in m and not PRIVACY_KEYS & set(m)
    assert not (tmp_path / "state" / LEDGER_FILE).exists()


def test_budget_exhausted_and_ledger_error_are_declared_replies(flower_identity, ctx, tmp_path):
    app = build_client_app()
    first = app(_train(flower_identity, 1, 1), ctx(epsilon=2.0))
    assert first.content[contract.SITE]["status"] == "ok"
    over = app(_train(flower_identity, 2, 1), ctx(epsilon=2.0))
    assert contract.check_reply(contract.TRAIN, over.content, EXPECTED) == []
    assert over.content[contract.SITE]["status"] == "budget-exhausted"
    assert contract.ARRAYS not in over.content
    # training spent all but the run's reserved release share of ε = 2
    spent = over.content[contract.METRICS]["epsilon"]
    assert spent == pytest.approx(first.content[contract.METRICS]["epsilon"]) and spent < 2.0
    (tmp_path / "state" / LEDGER_FILE).write_text("{}")
    broken = app(_train(flower_identity, 3, 3), ctx())
    assert broken.content[contract.SITE]["status"] == "ledger-error"
    assert contract.check_reply(contract.TRAIN, broken.content, EXPECTED) == []
