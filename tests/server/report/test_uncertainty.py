"""report["uncertainty"], ["ood"], ["biomarker"] and their HTML from declared aggregates only."""

from __future__ import annotations

import numpy as np
import pytest
from flwr.app import ConfigRecord, MetricRecord, RecordDict

from fedmi.client.evaluation.biomarker import biomarker_metrics
from fedmi.client.evaluation.ood import ood_statistics_metrics
from fedmi.client.evaluation.uncertainty import uncertainty_metrics
from fedmi.server.federation.ood import statistics_from_metrics
from fedmi.server.history import RunHistory, SiteInfo
from fedmi.server.report.biomarker import biomarker_section
from fedmi.server.report.html.page import render_html
from fedmi.server.report.ood import ood_section
from fedmi.server.report.uncertainty import uncertainty_section
from fedmi.shared import contract
from fedmi.shared.ood import class_feature_statistics


def _site_metrics(seed: int, ood_shift: float) -> dict:
    rng = np.random.default_rng(seed)
    y = np.array([0] * 12 + [1] * 12)
    passes = np.clip(0.5 + 0.35 * (2 * y - 1) + rng.normal(0, 0.2, (5, 24)), 0, 1)
    m: dict = {"num-examples": 24, "num-positive": 12}
    m |= uncertainty_metrics(passes, y, 3)
    scores = rng.uniform(1.5, 4.0, 24) * ood_shift
    from fedmi.shared.ood import ood_histogram

    m |= {"ood-num-examples": 24, "ood-hist": ood_histogram(scores)}
    conv = np.array([1] * 6 + [0] * 6)
    m |= biomarker_metrics(
        np.where(conv == 1, 0.7, 0.4) + rng.normal(0, 0.1, 12),
        np.where(conv == 1, 1.0, 1.05) + rng.normal(0, 0.05, 12),
        conv,
        3,
    )
    return m


@pytest.fixture
def history() -> RunHistory:
    h = RunHistory()
    for node, (name, role, shift) in enumerate(
        [("site-a", "train", 1.0), ("site-b", "train", 1.0), ("site-c", "holdout", 10.0)]
    ):
        h.sites[node] = SiteInfo(node, name, role, "ok", 24)
        h.record_final(node, _site_metrics(node, shift))
    return h


def test_sections_from_aggregates(history):
    u = uncertainty_section(history)
    assert u["referral_rates"] == list(contract.REFERRAL_RATES)
    a, b = u["per_site"]["site-a"], u["per_site"]["site-b"]
    pooled = u["pooled"]["train"]
    assert pooled["retained"] == [x + y for x, y in zip(a["retained"], b["retained"], strict=True)]
    assert pooled["accuracy"][0] == pytest.approx(
        (a["correct"][0] + b["correct"][0]) / (a["retained"][0] + b["retained"][0]), abs=1e-4
    )
    assert u["per_site"]["site-a"]["ece_mc"] is not None
    o = ood_section(history)
    rows = {r["site_id"]: r for r in o["per_site"]}
    assert rows["site-c"]["detection_auroc"] == 1.0  # scores 10× the training sites'
    assert rows["site-c"]["flagged_fraction"] == 1.0
    assert rows["site-c"]["reference_sites"] == ["site-a", "site-b"]
    assert rows["site-a"]["reference_sites"] == ["site-b"]
    bio = biomarker_section(history)
    assert bio["pooled"]["n"] == 36 and bio["pooled"]["n_converters"] == 18
    assert bio["pooled"]["auc_diff"]["ci_low"] <= bio["pooled"]["auc_diff"]["diff"]
    report = {"task": "fdg-ad", "uncertainty": u, "ood": o, "biomarker": bio}
    page = render_html(report)
    for anchor in ('id="uncertainty"', 'id="ood"', 'id="biomarker"', "Referral curve"):
        assert anchor in page


def test_sections_absent_without_data():
    h = RunHistory()
    assert uncertainty_section(h) is None and ood_section(h) is None
    assert biomarker_section(h) is None
    assert "Uncertainty and referral" not in render_html({"task": "fdg-ad"})


def test_contract_accepts_extras_and_checks_ood_statistics(history):
    site = ConfigRecord({"site-id": "site-a", "role": "train", "status": "ok", "task": "fdg-ad"})
    metrics = MetricRecord(history.final_raw["site-a"])  # type: ignore[arg-type]
    content = RecordDict({contract.METRICS: metrics, contract.SITE: site})
    assert contract.check_reply(contract.EXTERNAL, content) == []
    assert contract.check_reply(contract.EVALUATE, content) != []  # only the final round
    rng = np.random.default_rng(0)
    f, y = rng.normal(size=(20, 4)), np.array([0, 1] * 10)
    stats = ood_statistics_metrics(f, y, 5)
    good = RecordDict({contract.METRICS: MetricRecord(stats), contract.SITE: site})  # type: ignore[arg-type]
    assert contract.check_reply(contract.OOD_STATS, good) == []
    back = statistics_from_metrics(stats)
    direct = class_feature_statistics(f, y)
    np.testing.assert_allclose(back.outers, direct.outers)
    bad = dict(stats, **{"ood-feat-outer": stats["ood-feat-outer"][:-1]})
    content = RecordDict({contract.METRICS: MetricRecord(bad), contract.SITE: site})  # type: ignore[arg-type]
    assert any("ood-feat-outer" in p for p in contract.check_reply(contract.OOD_STATS, content))
