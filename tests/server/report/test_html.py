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


def test_headline_privacy_table_and_delta_in_scientific_notation():
    report = _report(missing=False)
    report["privacy"] = {
        "per_site": [
            {"site_id": "site-a", "dp": "on", "epsilon": 2.5, "epsilon_budget": 8.0, "delta": 1e-5},
            {"site_id": "site-b", "dp": "off", "epsilon": None, "epsilon_budget": None},
        ],
        "releases": [
            {"site_id": "site-a", "released": {"evaluate": 3}, "refused": {}, "epsilon": 3.1}
        ],
    }
    page = render_html(report)
    head = page[page.index('id="headline"') : page.index("<nav>")]
    assert "AUC (95 % CI)" in head and "logit scale" in head
    assert "site-a 3.10 of 8.00" in head and "site-b DP off" in head
    # chosen on the training sites: Youden ties from 0.44 to 0.67; the pivot 0.5 is inside
    assert report["operating_point"]["criterion"] == "youden"
    assert "threshold 0.500 (pooled holdout sites)" in head
    report["operating_point"] = {  # what a run whose training sites released nothing has
        "threshold": 0.5,
        "criterion": "fixed",
        "reason": "no training site released score histograms of both classes",
        "pooled": {"holdout": {"sensitivity": {"value": 0.8, "ci": [0.7, 0.9]}}},
    }
    head = render_html(report).split('id="headline"')[1].split("<nav>")[0]
    assert "no federated operating point in this run (no training site released" in head
    assert "fixed threshold 0.500" in head
    privacy = page[page.index('id="privacy"') :]
    assert "1.0e-05" in privacy and "0.0000" not in privacy and "evaluate 3" in privacy
    # the operating point, when a run chose one
    report["operating_point"] = {
        "threshold": 0.31,
        "pooled": {"sensitivity": 0.9, "specificity": 0.85, "sensitivity_ci": [0.8, 0.95]},
    }
    head = render_html(report).split('id="headline"')[1].split("<nav>")[0]
    assert "threshold 0.310" in head and "<b>0.900</b>" in head and "<b>0.850</b>" in head
    # the shape of main's operating_point section: per role, rates as {value, ci}
    report["operating_point"] = {
        "threshold": 0.4,
        "pooled": {
            "train": {"sensitivity": {"value": 0.7, "ci": [0.6, 0.8]}},
            "holdout": {
                "sensitivity": {"value": 0.95, "ci": [0.9, 0.99]},
                "specificity": {"value": 0.8, "ci": [0.7, 0.9]},
            },
        },
    }
    head = render_html(report).split('id="headline"')[1].split("<nav>")[0]
    assert "(pooled holdout sites)" in head and "<b>0.950</b>" in head and "0.900–0.990" in head


def test_forest_caption_names_only_what_is_drawn():
    report = _report(missing=False)
    assert "Red diamond" in render_html(report)
    report["validation"]["meta_analysis"] = {"all": None}
    page = render_html(report)
    assert "diamond" not in page.lower() and "Meta-analysis needs at least two sites" in page


def test_roc_has_a_wilson_band_per_curve():
    from fedmi.server.report.html.svg import sensitivity_band
    from fedmi.shared.stats import wilson_interval

    band = sensitivity_band([(0.0, 0.0), (0.2, 0.5), (1.0, 1.0)], 10)
    assert band[1] == (0.2, *wilson_interval(5, 10))
    page = render_html(_report(missing=False))
    roc = page[page.index('id="roc"') : page.index('id="forest"')]
    assert roc.count("95 % band") >= 4  # 3 sites + pooled in the first chart
    assert "Wilson 95 %" in roc


def test_ood_and_biomarker_account_for_every_site():
    report = _report()
    report["ood"] = {
        "threshold": {"quantile": 0.95, "distance": 12.0},
        "per_site": [{"site_id": "site-a", "role": "train", "n": 40, "flagged_fraction": 0.05}],
    }
    report["biomarker"] = {
        "per_site": [
            {"site_id": "site-b", "role": "train", "n": 0, "n_converters": 0},
            {"site_id": "site-c", "role": "holdout", "n": 9, "n_converters": 4},
        ],
        "pooled": {
            "n": 9,
            "n_converters": 4,
            "auc_model_histogram": 0.5,
            "auc_model_histogram_bound": 0.5,
            "auc_suvr_histogram": 0.6,
            "auc_suvr_histogram_bound": 0.1,
        },
    }
    page = render_html(report)
    ood = page[page.index('id="ood"') : page.index('id="biomarker"')]
    for site in ("site-a", "site-b", "site-c"):
        assert site in ood, site
    assert "the site sent no OOD scores" in ood and "How unlike the training scans" in ood
    bio = page[page.index('id="biomarker"') :].split("</table>")[0]
    assert "site-a" in bio and "no MCI scans at this site" in bio
    assert "0.500 <span class='muted'>±0.500" in bio  # the pooled value with its bound
    assert "suppressed: fewer MCI scans" in bio  # site-c: no AUCs released


@pytest.mark.parametrize("width", [1280, 390])
def test_nothing_overflows_in_headless_chromium(tmp_path, width):
    """Element widths measured in a real browser at a desktop and a phone width.

    Skips where Chromium is not installed (``apt-get install -y chromium``)."""
    from benchmarks.check_report_layout import probe, problems
    from benchmarks.screenshot_report import find_browser

    if find_browser() is None:
        pytest.skip("no Chromium on this machine (apt-get install -y chromium)")
    report = _report()
    report["privacy"] = {
        "per_site": [
            {"site_id": "site-a", "dp": "on", "epsilon": 2.5, "epsilon_budget": 8.0, "delta": 1e-5}
        ],
        "releases": [
            {
                "site_id": "site-a",
                "released": {"evaluate": 3, "ood": 1, "biomarker": 1},
                "refused": {"uncertainty": {"budget-exhausted": 2}},
                "epsilon": 3.1,
            }
        ],
    }
    write_report(tmp_path, report)
    result = probe(tmp_path / "report.html", width)
    assert result["viewport"] <= width and result["viewport"] > width * 0.8
    assert problems(result) == []
