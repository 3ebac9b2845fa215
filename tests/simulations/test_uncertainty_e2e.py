"""Slow: the tiny federation end to end produces the uncertainty, OOD and biomarker sections."""

from __future__ import annotations

import pytest


@pytest.mark.slow
def test_tiny_federation_reports_uncertainty_ood_and_biomarker(tiny_fdg, tmp_path):
    from fedmi.simulations.runner import run

    out = tmp_path / "run"
    report = run(
        data_root=tiny_fdg,
        task="fdg-ad",
        out_dir=out,
        rounds=1,
        method="fedavg",
        extra={"sim-min-cell-count": 1, "sim-default-dp": "off"},
        isolate=False,
    )
    u, o, b = report["uncertainty"], report["ood"], report["biomarker"]
    assert u and u["pooled"]["all"]["retained"][0] == u["pooled"]["all"]["n"] > 0
    assert o and o["description"]["sites"] == ["site-a", "site-b"]
    rows = {r["site_id"]: r for r in o["per_site"]}
    assert rows["site-c"]["reference_sites"] == ["site-a", "site-b"]
    assert 0.0 <= rows["site-c"]["detection_auroc"] <= 1.0
    assert b and {r["site_id"] for r in b["per_site"]} <= {"site-a", "site-b", "site-c"}
    page = (out / "report.html").read_text()
    assert 'id="uncertainty"' in page and 'id="ood"' in page
