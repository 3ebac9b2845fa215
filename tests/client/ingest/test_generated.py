"""Ingest of a federation made by simulations.generator (tiny preset): everything accepted,
SUV factors and head positions agree with the generator's truth."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

from fedmi.client.ingest.pipeline import ingest_site

generator = pytest.importorskip("fedmi.simulations.generator")


@pytest.mark.parametrize("task", ["fdg-ad", "dat-pd"])
def test_generated_sites_ingest_cleanly(task: str, tmp_path: Path) -> None:
    root = tmp_path / "fed"
    manifest = generator.generate_federation(
        root, task=task, preset="tiny", seed=1, n_sites=2, subjects_scale=0.25, workers=1
    )
    for site in manifest["sites"]:
        site_dir = root / site["site_id"]
        report = ingest_site(site_dir, task, tmp_path / "state" / site["site_id"])
        assert report.rejected == [], report.rejected
        assert report.summary["files_accepted"] == site["n_files"]
        assert report.site_id == site["site_id"]
        truth = {
            r["PatientID"]: r
            for r in csv.DictReader(open(root / "_truth" / f"{site['site_id']}.csv"))
        }
        for row in report.accepted:
            t = truth[row["patient_id"]]
            assert row["label"] == t["label"]
            assert row["qc"]["brain_coverage"] > 0.95
            if task == "fdg-ad":
                expected = (
                    float(t["weight_kg"])
                    * 1000.0
                    / (float(t["dose_mbq"]) * 1e6 * 2.0 ** (-float(t["uptake_s"]) / 6586.2))
                )
                assert row["suv_factor"] == pytest.approx(expected, rel=5e-3)
        # Head-position shifts differ between subjects by their true head shifts.
        shifts = np.array([r["qc"]["head_shift_mm"] for r in report.accepted])
        true = np.array(
            [
                [float(v) for v in truth[r["patient_id"]]["shift_mm"].split(";")]
                for r in report.accepted
            ]
        )
        if len(shifts) > 1:
            # RAS estimate vs truth: compare subject-to-subject differences (table offset cancels).
            d_est = shifts - shifts[0]
            d_true = true - true[0]
            assert np.abs(d_est - d_true).max() < 4.0, (d_est, d_true)
