"""Leave-one-site-out validation on the tiny federation (slow: three baseline runs)."""

from __future__ import annotations

import json

import pytest

pytestmark = pytest.mark.slow


def test_loso_folds_leave_each_training_site_out(tiny_fdg, tmp_path):
    from fedmi.simulations.runner import run_loso

    before = {
        p.name: (p / "site.toml").read_text()
        for p in tiny_fdg.iterdir()
        if (p / "site.toml").exists()
    }
    out = tmp_path / "run"
    report = run_loso(
        data_root=tiny_fdg,
        task="fdg-ad",
        out_dir=out,
        rounds=1,
        local_epochs=1,
        method="pooled",
        extra={"sim-min-cell-count": 1},
    )
    folds = {f["left_out"]: f for f in report["loso"]["folds"]}
    assert set(folds) == {"site-a", "site-b"}  # the training sites; site-c stays a holdout
    for site, fold in folds.items():
        assert site not in fold["trained_on"] and fold["trained_on"]
        assert fold["status"] == "ok" and fold["result"]["role"] == "holdout"
        fold_report = json.loads((out / fold["report"]).read_text())
        roles = {s["site_id"]: s["role"] for s in fold_report["sites"]}
        assert roles[site] == "holdout" and roles["site-c"] == "holdout"
    assert report["loso"]["summary"]["folds"] == 2
    saved = json.loads((out / "report.json").read_text())
    assert saved["loso"]["summary"] == report["loso"]["summary"]
    assert 'id="loso"' in (out / "report.html").read_text()
    after = {
        p.name: (p / "site.toml").read_text()
        for p in tiny_fdg.iterdir()
        if (p / "site.toml").exists()
    }
    assert after == before  # the sites' own settings were never edited
