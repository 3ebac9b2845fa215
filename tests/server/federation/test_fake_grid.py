"""The ServerApp's whole flow against a fake Grid that records every message it is given.

The fake sites answer like the ClientApp would (declared records only; evaluation replies
built by the real site-side :func:`fedmi.client.evaluation.statistics.evaluation_statistics`), fast and
without Flower's runtime.
"""

from __future__ import annotations

import json
from collections.abc import Iterable

import numpy as np
import pytest
from flwr.app import ConfigRecord, Message, MetricRecord, RecordDict

from fedmi.client.evaluation.statistics import evaluation_statistics
from fedmi.server.federation.run import run_federation
from fedmi.server.report.outcome import RunFailed
from fedmi.shared import contract
from fedmi.shared.run_config import RunConfig
from tests.report_schema import assert_valid_report

SITES = {1: ("site-a", "train"), 2: ("site-b", "train"), 3: ("site-c", "holdout")}
#: node 4: a registered node (another site's key) that claims to be site-a
SPOOF = {**SITES, 4: ("site-a", "train")}


class FakeGrid:
    """Records (message type, destination) of every message; fake sites reply."""

    def __init__(
        self,
        silent_in_validation: int | None = None,
        small_site: int | None = None,
        sites: dict[int, tuple[str, str]] = SITES,
        train_status: str = "ok",
        silent_sites: Iterable[int] = (),
    ):
        self.sites = sites
        self.sent: list[tuple[str, int]] = []
        self.train_status = train_status  # e.g. every site "budget-exhausted"
        self.query_status = "ok"
        self.silent_sites = set(silent_sites)  # no reply in the final evaluation
        self.timeouts: dict[str, float] = {}
        self.silent = silent_in_validation
        self.small = small_site
        #: the coordinator "dies" when this pretraining round is sent (resume tests)
        self.crash_in_pretrain_round: int | None = None

    def get_node_ids(self) -> Iterable[int]:
        return list(self.sites)

    def send_and_receive(self, messages: Iterable[Message], *, timeout: float | None = None):
        replies = []
        for msg in messages:
            node, mtype = msg.metadata.dst_node_id, msg.metadata.message_type
            if mtype == contract.PRETRAIN and self.crash_in_pretrain_round == int(
                msg.content[contract.CONFIG]["server-round"]
            ):
                raise KeyboardInterrupt  # the coordinator is killed mid-pretraining
            self.sent.append((mtype, node))
            self.timeouts[mtype] = timeout  # type: ignore[assignment]
            if mtype == contract.EXTERNAL and (node == self.silent or node in self.silent_sites):
                continue  # offline: no reply before the timeout
            replies.append(Message(self._answer(node, mtype, msg.content), reply_to=msg))
        return replies

    def _answer(self, node: int, mtype: str, content: RecordDict) -> RecordDict:
        site_id, role = self.sites[node]
        status = "ok"
        if mtype == contract.QUERY and self.query_status != "ok":
            status = self.query_status  # e.g. the ledger's budget spent before the run
            out = RecordDict({contract.METRICS: MetricRecord({"num-examples": 0})})
        elif mtype == contract.QUERY:
            metrics = {"num-examples": 60, "num-train": 40, "num-test": 20, "num-positive": 30}
            metrics |= {"min-cell-count": 10, "suppressed-cells": 1}
            out = RecordDict(
                {
                    contract.METRICS: MetricRecord(metrics),
                    contract.INVENTORY: ConfigRecord(
                        {
                            "tracer-names": ["fdg"],
                            "tracer-counts": [60],
                            "manufacturer-names": ["SIEMENS", "other"],
                            "manufacturer-counts": [48, 12],
                            "model-names": ["Biograph mCT"],
                            "model-counts": [60],
                        }
                    ),
                }
            )
        elif mtype == contract.TRAIN and self.train_status != "ok":
            status = self.train_status  # refused on privacy grounds: no weights
            out = RecordDict({contract.METRICS: MetricRecord({"num-examples": 0, "epsilon": 8.0})})
        elif mtype == contract.TRAIN:
            assert role == "train", f"{site_id} ({role}) was asked to train"
            out = RecordDict(
                {
                    contract.ARRAYS: content[contract.ARRAYS],
                    contract.METRICS: MetricRecord(
                        {"num-examples": 40, "train-loss": 0.6, "train-accuracy": 0.7}
                    ),
                }
            )
        elif mtype == contract.PRETRAIN:
            out = self._pretrain_answer(node, role, content)
        else:
            rng = np.random.default_rng(node)
            n = 8 if node == self.small else 60
            labels = np.arange(n) % 2
            scores = 1 / (1 + np.exp(-(rng.normal(size=n) + 1.5 * labels)))
            stats, status = evaluation_statistics(scores, labels, 10)
            out = RecordDict({contract.METRICS: MetricRecord(stats)})  # type: ignore[arg-type]
        out[contract.SITE] = ConfigRecord(
            {"site-id": site_id, "role": role, "status": status, "task": "fdg-ad"}
        )
        assert contract.check_reply(mtype, out) == [], mtype
        return out

    @staticmethod
    def _pretrain_answer(node: int, role: str, content: RecordDict) -> RecordDict:
        """A deterministic pretraining reply: ``w + 0.01·node·round`` for every array, a
        training site on 45 scans (train split and archive), a holdout on its 6 archive
        scans, with the DP metrics of a charged round."""
        r = int(content[contract.CONFIG]["server-round"])
        arrays = {
            k: (v.numpy() + np.float32(0.01 * node * r)).astype(v.numpy().dtype)
            for k, v in content[contract.ARRAYS].items()
        }
        metrics = {
            "num-examples": 45 if role == "train" else 6,
            "local-steps": 3,
            "epsilon": 0.5 * r,
            "epsilon-budget": 8.0,
            "delta": 1e-5,
            "noise-multiplier": 1.1,
            "sample-rate": 0.3,
            "dp-steps": 3,
            "max-grad-norm": 1.0,
        }
        return RecordDict(
            {
                contract.ARRAYS: contract.array_record(arrays),
                contract.METRICS: MetricRecord(metrics),
            }
        )


@pytest.fixture
def cfg(tmp_path) -> RunConfig:
    return RunConfig(
        num_server_rounds=2,
        min_nodes=3,
        node_wait=0.0,
        round_timeout=30.0,
        validation_timeout=7.0,
        out_dir=str(tmp_path / "run"),
        report_prevalences="0.05,0.2",
    )


def test_holdout_never_receives_a_train_message(flower_identity, cfg, tmp_path):
    grid = FakeGrid()
    report = run_federation(grid, cfg, tmp_path / "run")  # type: ignore[arg-type]
    holdout = [n for n, (_, role) in SITES.items() if role == "holdout"]
    trained = [node for mtype, node in grid.sent if mtype == contract.TRAIN]
    evaluated = [node for mtype, node in grid.sent if mtype == contract.EVALUATE]
    assert sorted(trained) == [1, 1, 2, 2]  # 2 rounds × 2 training sites
    assert not set(holdout) & set(trained + evaluated)
    external = sorted(node for mtype, node in grid.sent if mtype == contract.EXTERNAL)
    assert external == [1, 2, 3]  # the final model goes everywhere, holdouts included
    assert grid.timeouts[contract.EXTERNAL] == 7.0
    per_site = {r["site_id"]: r for r in report["final"]["per_site"]}
    assert set(per_site) == {"site-a", "site-b", "site-c"}
    assert report["final"]["missing"] == []
    val = report["validation"]
    assert val["meta_analysis"]["all"]["k"] == 3
    assert set(val["roc"]["pooled"]) == {"all", "train", "holdout"}
    assert [v["prevalence"] for v in val["predictive_values"]["per_site"][0]["values"]][1:] == [
        0.05,
        0.2,
    ]
    assert report["data_counts"]["total"]["manufacturer"] == {"SIEMENS": 144, "other": 36}
    assert per_site["site-c"]["brier"] is not None and per_site["site-c"]["auc_ci"]
    saved = json.loads((tmp_path / "run" / "report.json").read_text())
    assert saved["validation"]["meta_analysis"] == val["meta_analysis"]
    assert_valid_report(saved)
    for broken in (  # the schema has teeth: an AUC outside [0, 1], a raw-scale pooling
        lambda r: r["final"]["per_site"][0].update(auc=1.3),
        lambda r: r["validation"]["meta_analysis"]["all"].update(scale="raw AUC"),
        lambda r: r.pop("outcome"),
    ):
        bad = json.loads(json.dumps(saved))
        broken(bad)
        with pytest.raises(AssertionError):
            assert_valid_report(bad)
    page = (tmp_path / "run" / "report.html").read_text()
    assert "Forest plot" in page and "http://" not in page and "https://" not in page


def test_an_offline_site_does_not_block_the_report(flower_identity, cfg, tmp_path):
    grid = FakeGrid(silent_in_validation=3)
    report = run_federation(grid, cfg, tmp_path / "run")  # type: ignore[arg-type]
    assert [r["site_id"] for r in report["final"]["per_site"]] == ["site-a", "site-b"]
    assert report["final"]["missing"] == [
        {"site_id": "site-c", "role": "holdout", "reason": "no reply before the timeout"}
    ]
    page = (tmp_path / "run" / "report.html").read_text()
    assert "site-c" in page and "missing from the validation" in page


def test_a_site_below_its_min_cell_count_is_shown_as_suppressed(flower_identity, cfg, tmp_path):
    grid = FakeGrid(small_site=3)
    report = run_federation(grid, cfg, tmp_path / "run")  # type: ignore[arg-type]
    row = next(r for r in report["final"]["per_site"] if r["site_id"] == "site-c")
    assert row["status"] == "suppressed" and row["auc"] is None and row["n"] == 8
    assert_valid_report(report)
    assert report["final"]["pooled"]["holdout"] is None  # never pooled
    assert report["validation"]["meta_analysis"]["all"]["k"] == 2
    assert any(s["site_id"] == "site-c" for s in report["validation"]["suppressed"])
    assert "suppressed at the site" in (tmp_path / "run" / "report.html").read_text()


@pytest.mark.parametrize("registry", [None, {1: "site-a", 2: "site-b", 3: "site-c", 4: "site-d"}])
def test_a_node_claiming_another_sites_id_is_refused_and_reported(
    flower_identity, cfg, tmp_path, monkeypatch, registry
):
    """Deployed (the coordinator's registry) and simulated (first claim holds) alike."""
    from fedmi.server.federation.identity import REGISTRY_ENV, add_site

    if registry is None:
        monkeypatch.delenv(REGISTRY_ENV, raising=False)
        reason = "'site-a' is held by node 1"
    else:
        path = tmp_path / "sites.json"
        for node, site in registry.items():
            add_site(path, node, site, "SHA256:x")
        monkeypatch.setenv(REGISTRY_ENV, str(path))
        reason = "node is registered as 'site-d'"
    grid = FakeGrid(sites=SPOOF)
    report = run_federation(grid, cfg, tmp_path / "run")  # type: ignore[arg-type]
    assert report["identity_refusals"] == [{"node_id": 4, "claimed": "site-a", "reason": reason}]
    assert sorted(s["site_id"] for s in report["sites"]) == ["site-a", "site-b", "site-c"]
    trained = sorted(node for mtype, node in grid.sent if mtype == contract.TRAIN)
    assert trained == [1, 1, 2, 2]  # the spoofing node is never asked to train
    assert 4 not in [node for mtype, node in grid.sent if mtype == contract.EXTERNAL]


def test_a_run_whose_sites_are_all_budget_exhausted_fails(flower_identity, cfg, tmp_path):
    """Every training site refuses every round: nothing was trained, the run raises
    RunFailed (the ServerApp, fedmi-server and fedmi-sim exit non-zero) with the reason, and
    its report says so at the top."""
    grid = FakeGrid(train_status="budget-exhausted")
    with pytest.raises(RunFailed, match="no update was aggregated") as failed:
        run_federation(grid, cfg, tmp_path / "run")  # type: ignore[arg-type]
    assert "site-a budget-exhausted" in str(failed.value)
    saved = json.loads((tmp_path / "run" / "report.json").read_text())
    assert saved["outcome"]["status"] == "failed"
    assert_valid_report(saved)
    page = (tmp_path / "run" / "report.html").read_text()
    assert page.index("This run failed") < page.index("Results per site")


def test_a_run_that_evaluated_no_site_fails(flower_identity, cfg, tmp_path):
    grid = FakeGrid(silent_sites=[1, 2, 3])
    with pytest.raises(RunFailed, match="no site was evaluated"):
        run_federation(grid, cfg, tmp_path / "run")  # type: ignore[arg-type]


def test_a_run_that_worked_says_ok(flower_identity, cfg, tmp_path):
    report = run_federation(FakeGrid(), cfg, tmp_path / "run")  # type: ignore[arg-type]
    assert report["outcome"] == {"status": "ok", "reasons": []}
    assert "This run failed" not in (tmp_path / "run" / "report.html").read_text()


def test_a_run_whose_sites_are_budget_exhausted_from_the_start_fails(
    flower_identity, cfg, tmp_path
):
    """Every site answers the query budget-exhausted: no training site, RunFailed naming
    each site's status, and a report that says so."""
    grid = FakeGrid()
    grid.query_status = "budget-exhausted"
    with pytest.raises(RunFailed, match="no training site is available") as failed:
        run_federation(grid, cfg, tmp_path / "run")  # type: ignore[arg-type]
    assert "site-a (train) budget-exhausted" in str(failed.value)
    assert not [m for m, _ in grid.sent if m == contract.TRAIN]
    # what `fedmi-server run` reads after `flwr run` returns, to exit non-zero
    from fedmi.server.deploy.cli import failed_outcome

    assert failed_outcome(tmp_path / "run" / "report.json") == failed.value.reasons
    saved = json.loads((tmp_path / "run" / "report.json").read_text())
    assert saved["outcome"]["status"] == "failed"
    assert_valid_report(saved)
    assert "This run failed" in (tmp_path / "run" / "report.html").read_text()
