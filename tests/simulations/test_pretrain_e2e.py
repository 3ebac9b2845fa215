"""A real tiny federation with one federated pretraining round before training (slow)."""

from __future__ import annotations

import json

import pytest

from tests.report_schema import assert_valid_report

pytestmark = pytest.mark.slow


def test_a_tiny_cnn_federation_pretrains_then_trains(tiny_fdg, tmp_path):
    from fedmi.simulations.runner import run

    out = tmp_path / "run"
    report = run(
        data_root=tiny_fdg,
        task="fdg-ad",
        out_dir=out,
        rounds=1,
        method="fedavg",
        extra={
            "model": "cnn",
            "pretrain-rounds": 1,
            "sim-min-cell-count": 2,
            "sim-default-dp": "off",
            "sim-ledger-root": str(tmp_path / "l"),
        },
        isolate=False,
    )
    assert_valid_report(json.loads((out / "report.json").read_text()))
    assert report["outcome"]["status"] == "ok", report["outcome"]
    pre = report["pretraining"]
    assert pre["completed_rounds"] == 1
    trained = {r["site_id"] for r in pre["per_site"] if r["rounds_pretrained"] == 1}
    assert {"site-a", "site-b"} <= trained  # the training sites pretrained
    assert (out / "pretrained_model.npz").is_file()
    assert (out / "checkpoints" / "pretrain-001.npz").is_file()
    # the tiny preset's holdout has no unlabelled archive: it answers no-data, contributes none
    assert pre["holdouts_contributed"] == []
    assert report["privacy"]["pretraining"]  # the spend rows are there (DP off here)
