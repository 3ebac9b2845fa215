"""The ClientApp handlers called directly with a fixture context (no Flower runtime)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from flwr.app import Context, Message, MetricRecord, RecordDict

from fedmi.client.app import build_client_app
from fedmi.client.evaluation import handler as evaluation_handler
from fedmi.client.replies import expected_arrays
from fedmi.shared import contract
from fedmi.shared.instructions import INSTRUCTIONS, TrainInstruction
from fedmi.shared.model import build_model, federated_state_dict


@pytest.fixture
def context_for(tiny_fdg, tmp_path, ingested):
    def make(site: str, min_cell_count: int | None = 1) -> Context:
        if not (tmp_path / site / "ingest").exists():
            ingested(tiny_fdg / site, tmp_path / site)
        # tiny sites have a handful of test scans: k = 1 unless a test checks suppression
        # exact statistics (DP off: the site's choice); the DP path: tests/client/privacy
        node_config: dict[str, object] = {
            "data-dir": str(tiny_fdg / site),
            "state-dir": str(tmp_path / site),
            "dp": "off",
        }
        if min_cell_count is not None:
            node_config["min-cell-count"] = min_cell_count
        return Context(
            run_id=1, node_id=7, node_config=node_config, state=RecordDict(), run_config={}
        )

    return make


def _instruction(flower_identity, message_type: str, with_arrays: bool = True) -> Message:
    torch.manual_seed(0)
    if message_type == contract.TRAIN:
        # 20 planned rounds: the tests train several times within the site's DP budget
        ins = TrainInstruction(
            task="fdg-ad", local_epochs=1, batch_size=4, server_round=1, num_server_rounds=20
        )
    else:
        ins = INSTRUCTIONS[message_type](task="fdg-ad")
    content = RecordDict({contract.CONFIG: ins.to_record()})
    if with_arrays:
        content[contract.ARRAYS] = contract.array_record(federated_state_dict(build_model()))
    return Message(content=content, dst_node_id=7, message_type=message_type)


EXPECTED = expected_arrays(build_model())


def test_query_reports_counts_only(flower_identity, context_for):
    app = build_client_app()
    reply = app(
        _instruction(flower_identity, contract.QUERY, with_arrays=False), context_for("site-a")
    )
    assert contract.check_reply(contract.QUERY, reply.content) == []
    site = reply.content[contract.SITE]
    assert (site["site-id"], site["role"], site["status"]) == ("site-a", "train", "ok")
    m = reply.content[contract.METRICS]
    assert m["num-examples"] == m["num-train"] + m["num-test"] > 0


def test_train_returns_declared_updated_weights(flower_identity, context_for):
    app = build_client_app()
    msg = _instruction(flower_identity, contract.TRAIN)
    reply = app(msg, context_for("site-a"))
    assert contract.check_reply(contract.TRAIN, reply.content, EXPECTED) == []
    assert reply.content[contract.SITE]["status"] == "ok"
    before = msg.content[contract.ARRAYS]
    after = reply.content[contract.ARRAYS]
    assert list(after.keys()) == list(before.keys())
    changed = [k for k in after if not np.array_equal(after[k].numpy(), before[k].numpy())]
    assert changed, "training did not change any federated weight"
    query = app(_instruction(flower_identity, contract.QUERY, False), context_for("site-a"))
    assert (
        reply.content[contract.METRICS]["num-examples"]
        == query.content[contract.METRICS]["num-train"]
    )


def test_evaluate_returns_sufficient_statistics_of_the_test_split(flower_identity, context_for):
    app = build_client_app()
    ctx = context_for("site-a")
    reply = app(_instruction(flower_identity, contract.EVALUATE), ctx)
    assert contract.check_reply(contract.EVALUATE, reply.content) == []
    m = reply.content[contract.METRICS]
    query = app(_instruction(flower_identity, contract.QUERY, False), ctx)
    n_test = query.content[contract.METRICS]["num-test"]
    assert m["num-examples"] == n_test
    assert sum(m["hist-pos"]) + sum(m["hist-neg"]) == n_test


def _raise(*args, **kwargs):
    raise RuntimeError("scanner file unreadable")


def test_train_can_carry_the_evaluation_of_the_received_weights(
    flower_identity, context_for, monkeypatch
):
    """``evaluate-received``: the reply holds exactly what an evaluate message would return
    for the same weights, plus the trained weights (one message per round)."""
    app = build_client_app()
    ctx = context_for("site-a")
    evaluated = app(_instruction(flower_identity, contract.EVALUATE), ctx).content
    msg = _instruction(flower_identity, contract.TRAIN)
    msg.content[contract.CONFIG]["evaluate-received"] = True
    reply = app(msg, ctx).content
    assert contract.check_reply(contract.TRAIN, reply, EXPECTED) == []
    assert reply[contract.SITE]["evaluation-status"] == "ok"
    got = dict(reply[contract.EVALUATION])
    want = dict(evaluated[contract.METRICS])
    for timing in ("compute-seconds", "site-seconds"):
        got.pop(timing, None), want.pop(timing)
    assert got == want
    as_evaluate = contract.received_evaluation(reply)
    assert contract.check_reply(contract.EVALUATE, as_evaluate) == []  # type: ignore[arg-type]
    assert (
        contract.EVALUATION not in app(_instruction(flower_identity, contract.TRAIN), ctx).content
    )
    # a failing evaluation is reported as such; the site still trains
    monkeypatch.setattr(evaluation_handler, "evaluate_site", _raise)
    failed = app(msg, ctx).content
    assert failed[contract.SITE]["status"] == "ok" and contract.ARRAYS in failed
    assert failed[contract.SITE]["evaluation-status"] == "error"
    assert contract.check_reply(contract.TRAIN, failed, EXPECTED) == []
    # an undeclared value inside the evaluation record is refused like any other
    reply[contract.EVALUATION]["patient-score"] = 0.7
    assert any("patient-score" in p for p in contract.check_reply(contract.TRAIN, reply, EXPECTED))


def test_holdout_evaluates_all_scans_and_refuses_to_train(flower_identity, context_for):
    app = build_client_app()
    ctx = context_for("site-c")
    ext = app(_instruction(flower_identity, contract.EXTERNAL), ctx)
    assert contract.check_reply(contract.EXTERNAL, ext.content) == []
    query = app(_instruction(flower_identity, contract.QUERY, False), ctx)
    assert (
        ext.content[contract.METRICS]["num-examples"]
        == query.content[contract.METRICS]["num-examples"]
    )
    train = app(_instruction(flower_identity, contract.TRAIN), ctx)
    assert train.content[contract.SITE]["status"] == "error"
    assert contract.ARRAYS not in train.content


def test_nothing_undeclared_leaves_the_client(flower_identity, context_for, monkeypatch):
    """A handler that tries to send a per-patient value gets an error status instead."""
    from fedmi.client import app as client_app

    real = client_app.handle_evaluate

    def leaky(site, arrays, ins, **kwargs):
        content = real(site, arrays, ins, **kwargs)
        content[contract.METRICS]["patient-scores"] = [0.1, 0.9]
        return content

    monkeypatch.setattr(client_app, "handle_evaluate", leaky)
    reply = build_client_app()(
        _instruction(flower_identity, contract.EVALUATE), context_for("site-a")
    )
    assert reply.content[contract.SITE]["status"] == "error"
    assert dict(reply.content[contract.METRICS]) == {"num-examples": 0}
    assert set(reply.content.keys()) == {contract.METRICS, contract.SITE}


def test_bad_node_config_gives_error_status_not_a_crash(flower_identity, tmp_path):
    ctx = Context(
        run_id=1,
        node_id=7,
        node_config={"data-dir": str(tmp_path / "nope"), "state-dir": str(tmp_path)},
        state=RecordDict(),
        run_config={},
    )
    reply = build_client_app()(_instruction(flower_identity, contract.QUERY, False), ctx)
    assert reply.content[contract.SITE]["status"] == "error"
    assert isinstance(reply.content[contract.METRICS], MetricRecord)


def test_evaluation_carries_site_computed_intervals_and_calibration(flower_identity, context_for):
    reply = build_client_app()(
        _instruction(flower_identity, contract.EXTERNAL), context_for("site-c")
    )
    m = reply.content[contract.METRICS]
    assert reply.content[contract.SITE]["status"] == "ok"
    assert sum(m["cal-count"]) == m["num-examples"] and m["min-cell-count"] == 1
    assert 0 <= m["sq-error-sum"] <= m["num-examples"]
    assert m["auc-ci-low"] <= m["auc-ci-high"] and m["sens-ci-low"] <= m["sens-ci-high"]


def test_a_site_below_the_min_cell_count_sends_counts_only(flower_identity, context_for):
    """Default k = 10 (site.toml has no min-cell-count): a tiny site's few cases are suppressed."""
    app = build_client_app()
    reply = app(_instruction(flower_identity, contract.EXTERNAL), context_for("site-c", None))
    assert contract.check_reply(contract.EXTERNAL, reply.content) == []
    assert reply.content[contract.SITE]["status"] == "suppressed"
    m = dict(reply.content[contract.METRICS])
    assert {"num-examples", "num-positive", "min-cell-count"} <= set(m)
    withheld = set(contract.EVAL_METRICS) - {"num-examples", "num-positive", "min-cell-count"}
    assert not withheld - {"suppressed-cells"} & set(m), "validation statistics left the site"
    assert m["min-cell-count"] == contract.DEFAULT_MIN_CELL_COUNT


def test_query_sends_suppressed_counts_per_tracer_and_scanner(flower_identity, context_for):
    app = build_client_app()
    msg = _instruction(flower_identity, contract.QUERY, with_arrays=False)
    small = app(msg, context_for("site-a", 1)).content
    assert contract.check_reply(contract.QUERY, small) == []
    inv = small[contract.INVENTORY]
    n = small[contract.METRICS]["num-examples"]
    assert list(inv["tracer-names"]) == ["fdg"] and sum(inv["tracer-counts"]) >= n
    big = app(msg, context_for("site-a", 10_000)).content
    assert contract.check_reply(contract.QUERY, big) == []
    inv = big[contract.INVENTORY]
    assert list(inv["tracer-names"]) == [] and big[contract.METRICS]["suppressed-cells"] == 3


def test_a_site_that_has_not_ingested_answers_no_data(flower_identity, tiny_fdg, tmp_path):
    """Ingest is an explicit step: no surprise ingest on a message, a declared no-data."""
    node_config = {"data-dir": str(tiny_fdg / "site-a"), "state-dir": str(tmp_path / "s")}
    ctx = Context(run_id=1, node_id=7, node_config=node_config, state=RecordDict(), run_config={})
    app = build_client_app()
    for message_type in (contract.QUERY, contract.TRAIN, contract.EVALUATE):
        reply = app(
            _instruction(flower_identity, message_type, message_type != contract.QUERY), ctx
        )
        assert reply.content[contract.SITE]["status"] == "no-data"
        assert contract.check_reply(message_type, reply.content, EXPECTED) == []
    assert not (tmp_path / "s" / "ingest").exists(), "a message must not start an ingest"


def test_a_malformed_instruction_gets_an_error_reply(flower_identity, context_for):
    """The site parses the server's instruction strictly: an unknown key is not guessed at."""
    msg = _instruction(flower_identity, contract.TRAIN)
    msg.content[contract.CONFIG]["local-epochz"] = 5
    reply = build_client_app()(msg, context_for("site-a"))
    assert reply.content[contract.SITE]["status"] == "error"
    assert contract.ARRAYS not in reply.content


def test_non_finite_weights_are_refused(flower_identity, context_for):
    msg = _instruction(flower_identity, contract.EVALUATE)
    name = next(iter(msg.content[contract.ARRAYS].keys()))
    bad = dict(federated_state_dict(build_model()))
    bad[name] = bad[name] * float("nan")
    msg.content[contract.ARRAYS] = contract.array_record(bad)
    reply = build_client_app()(msg, context_for("site-a"))
    assert reply.content[contract.SITE]["status"] == "error"
