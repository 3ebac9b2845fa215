"""report.html: generated from report.json, self-contained, with every section."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

from fedmi.client.evaluation.statistics import evaluation_statistics
from fedmi.server.history import RunHistory, SiteInfo
from fedmi.server.report.document import build_report, write_report
from fedmi.server.report.html.page import render_html
from fedmi.shared.run_config import RunConfig


def _report(missing: bool = True) -> dict:
    history = RunHistory()
    sites = [("site-a", "train", 80), ("site-b", "train", 60), ("site-c", "holdout", 70)]
    for node, (name, role, n) in enumerate(sites):
        history.sites[node] = SiteInfo(
            node, name, role, "ok", n, n // 2, n // 2, n // 2, 10, {"tracer": {"fdg": n}}
        )
    rng = np.random.default_rng(0)
    for r in (1, 2, 3):
        for node in (0, 1):
            history.record_train(r, node, "ok", {"num-examples": 40, "train-loss": 1.0 / r})
            labels = np.arange(30) % 2
            scores = 1 / (1 + np.exp(-(rng.normal(size=30) + r * labels)))
            history.record_evaluate(r, node, evaluation_statistics(scores, labels, 10)[0])
    for node, (_, _, n) in enumerate(sites):
        labels = np.arange(n) % 2
        scores = 1 / (1 + np.exp(-(rng.normal(size=n) + 2 * labels)))
        history.record_final(node, evaluation_statistics(scores, labels, 10)[0])
    if missing:
        history.missing_final.append({"site_id": "site-d", "role": "holdout", "reason": "offline"})
    report = build_report(RunConfig(report_prevalences="0.05,0.2"), history, {})
    report["loso"] = {
        "folds": [
            {"left_out": "site-a", "status": "ok", "result": report["final"]["per_site"][0]},
            {"left_out": "site-b", "status": "missing", "result": None},
        ],
        "summary": {"folds_with_auc": 1, "mean_auc": 0.8, "min_auc": 0.8, "max_auc": 0.8},
    }
    return report


def test_report_html_is_self_contained_with_every_section(tmp_path):
    report = _report()
    write_report(tmp_path, report)
    page = (tmp_path / "report.html").read_text(encoding="utf-8")
    assert json.loads((tmp_path / "report.json").read_text())["task"] == "fdg-ad"
    # nothing to fetch: no URLs, scripts, external styles, fonts or images
    assert "http://" not in page and "https://" not in page
    assert not re.search(r"<script|<link|@import|url\(|<img|src=", page, re.I)
    for section in (
        'id="sites"',
        'id="roc"',
        'id="forest"',
        'id="calibration"',
        'id="pv"',
        'id="loso"',
        'id="training"',
        'id="data"',
        'id="privacy"',
        'id="gaps"',
    ):
        assert section in page, section
    assert page.count("<svg") >= 6  # ROC ×3, forest ×2, calibration, training ×2
    assert "random effects (DL)" in page and "prediction interval" in page
    assert "site-d" in page and "offline" in page  # the gap is shown
    assert "0.050" in page and "0.200" in page  # the given prevalences


def test_report_html_escapes_text():
    report = _report(missing=False)
    report["final"]["missing"] = [{"site_id": "<b>x</b>", "role": "train", "reason": "a&b"}]
    page = render_html(report)
    assert "<b>x</b>" not in page and "&lt;b&gt;x&lt;/b&gt;" in page and "a&amp;b" in page


def test_report_html_renders_a_minimal_report():
    """A run with no final results yet (e.g. written after round 1) still renders."""
    page = render_html({"task": "fdg-ad", "method": "fedavg", "final": {}, "rounds": []})
    assert page.startswith("<!DOCTYPE html>") and "Results per site" in page


def test_report_renders_in_headless_chromium(tmp_path):
    """Only where Chromium is installed (``apt-get install -y chromium``)."""
    from benchmarks.screenshot_report import find_browser, screenshot

    if find_browser() is None:
        pytest.skip("no Chromium on this machine")
    write_report(tmp_path, _report())
    png = screenshot(tmp_path / "report.html", tmp_path / "report.png", 1000, 1200)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 20_000
