"""Reconstructed SPECT (NM multi-frame): counts, geometry inside (0054,0022), negative spacing."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest

from fedmi.client.ingest.errors import IngestError
from fedmi.client.ingest.pipeline import ingest_site
from fedmi.client.ingest.series import load_series
from tests.client.ingest.helpers import brain, write_labels, write_nm


def test_counts_and_geometry(tmp_path: Path) -> None:
    truth, aff = brain(pattern="dat")
    native = load_series([write_nm(tmp_path / "nm")])
    assert native.modality == "NM" and native.suv_factor is None and native.tracer == "fp-cit"
    np.testing.assert_allclose(native.affine_lps, aff, atol=1e-4)
    np.testing.assert_allclose(native.volume, np.clip(np.rint(truth * 100.0), 0, 65535))


def test_negative_spacing_between_slices(tmp_path: Path) -> None:
    truth, aff = brain(pattern="dat")
    path = write_nm(tmp_path / "nm", flip_slices=True)
    assert float(pydicom.dcmread(path).SpacingBetweenSlices) < 0
    native = load_series([path])
    assert "negative_slice_spacing" in native.notes
    # Same world position → same value, whichever way the frames run.
    ijk = np.array([20, 25, 7, 1.0])
    k_flip = truth.shape[2] - 1 - 7
    world = aff @ ijk
    back = np.linalg.inv(native.affine_lps) @ world
    np.testing.assert_allclose(back[:3], [20, 25, k_flip], atol=1e-6)
    assert native.volume[20, 25, k_flip] == pytest.approx(np.rint(truth[20, 25, 7] * 100))


def test_planar_and_projection_objects(tmp_path: Path) -> None:
    for image_type, reason in (
        (["ORIGINAL", "PRIMARY", "WHOLE BODY", "EMISSION"], "planar_nm"),
        (["ORIGINAL", "PRIMARY", "TOMO", "EMISSION"], "nm_projections"),
    ):
        path = write_nm(tmp_path / reason, extra={"ImageType": image_type})
        with pytest.raises(IngestError) as err:
            load_series([path])
        assert err.value.reason == reason


def test_spect_site(tmp_path: Path) -> None:
    site = tmp_path / "site"
    write_nm(site / "dicom" / "x" / "obj", "N01")
    write_nm(
        site / "dicom" / "y" / "obj", "N02", extra={"ImageType": ["ORIGINAL", "PRIMARY", "STATIC"]}
    )
    write_labels(site, {"N01": "PD", "N02": "HC"})
    report = ingest_site(site, "dat-pd", tmp_path / "state")
    assert [r["patient_id"] for r in report.accepted] == ["N01"]
    row = report.accepted[0]
    assert row["suv_factor"] is None and row["modality"] == "NM" and row["label"] == "PD"
    assert [r["reason"] for r in report.rejected] == ["planar_nm"]
    # A PET task does not take SPECT.
    pet = ingest_site(site, "fdg-ad", tmp_path / "state2")
    assert {r["reason"] for r in pet.rejected} == {"wrong_modality"}
