"""Tiny amyloid and dat-pd federations: tracers, labels, truth and NM files."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pydicom
import pytest

from fedmi.shared.tasks import identify_tracer
from fedmi.simulations import phantom as P
from fedmi.simulations.generator import generate_federation

tomllib = pytest.importorskip("tomllib")  # Python ≥ 3.11


def _read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as fh:
        return list(csv.DictReader(fh))


def test_amyloid_federation(tmp_path: Path) -> None:
    manifest = generate_federation(tmp_path, "amyloid", "tiny", seed=1, subjects_scale=0.5)
    tracers = []
    for s in manifest["sites"]:
        truth = tomllib.loads((tmp_path / s["site_id"] / "site.toml").read_text())["truth"]
        tracers.append(truth["tracer"])
        rows = _read_csv(tmp_path / "_truth" / f"{s['site_id']}.csv")
        labels = _read_csv(tmp_path / s["site_id"] / "labels.csv")
        assert {r["label"] for r in labels} <= {"negative", "positive"}
        for r in rows:
            assert r["tracer"] == truth["tracer"]
            cl = float(r["centiloid"])
            assert float(r["suvr_true"]) == pytest.approx(
                P.suvr_from_centiloid(cl, truth["tracer"]), abs=1e-5
            )
            assert r["amyloid_positive_true"] == str(cl >= P.AMYLOID_THRESHOLD_CL)
        d = pydicom.dcmread(next((tmp_path / s["site_id"] / rows[0]["series_dir"]).iterdir()))
        rp = d.RadiopharmaceuticalInformationSequence[0]
        assert identify_tracer(rp.Radiopharmaceutical) == truth["tracer"]
        assert identify_tracer(rp.RadiopharmaceuticalCodeSequence[0].CodeValue) == truth["tracer"]
    assert len(set(tracers[:2])) == 2  # train sites use different tracers


def test_dat_federation_nm_files(tmp_path: Path) -> None:
    manifest = generate_federation(tmp_path, "dat-pd", "tiny", seed=2, subjects_scale=0.5)
    for s in manifest["sites"]:
        site_dir = tmp_path / s["site_id"]
        truth = tomllib.loads((site_dir / "site.toml").read_text())["truth"]
        assert truth["correction"] in ("NC", "AC", "ACSC") and 8 <= truth["fwhm-mm"] <= 12
        rows = _read_csv(tmp_path / "_truth" / f"{s['site_id']}.csv")
        assert {r["label"] for r in rows} <= {"HC", "PD"}
        for r in rows:
            files = list((site_dir / r["series_dir"]).iterdir())
            assert len(files) == 1 == int(r["n_files"])
            d = pydicom.dcmread(files[0])
            assert d.SOPClassUID == "1.2.840.10008.5.1.4.1.1.20" and d.PatientID == r["PatientID"]
            assert d.NumberOfFrames == truth["n-slices"] and d.Rows == d.Columns == truth["matrix"]
            assert "ImagePositionPatient" in d.DetectorInformationSequence[0]
            arr = d.pixel_array.astype(float)
            assert arr.sum() == pytest.approx(truth["total-counts"], rel=0.02)
            # The striatum is the hottest structure: peak well above the median brain count.
            assert arr.max() > 3 * np.median(arr[arr > 0.2 * arr.max()])
            for side in "LR":
                assert float(r[f"putamen_sbr_true_{side}"]) > 0
