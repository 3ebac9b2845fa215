"""PET writer: tags, geometry and the SUV round trip (PHANTOM_SPEC §4)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.uid import ExplicitVRLittleEndian

from fedmi.simulations.dicom.pet import PetMeta, read_pet_suv, suv_factor, write_pet_series
from tests.simulations.dicom.helpers import all_ds_values


def _phantom(shape: tuple[int, int, int]) -> np.ndarray:
    i, j, k = np.indices(shape, dtype=np.float64)
    c = [(s - 1) / 2 for s in shape]
    r2 = ((i - c[0]) / shape[0]) ** 2 + ((j - c[1]) / shape[1]) ** 2 + ((k - c[2]) / shape[2]) ** 2
    return 6.0 * np.exp(-8 * r2) + 0.5 * (i / shape[0]) + 0.01 * k


def test_default_meta_just_works(tmp_path: Path) -> None:
    paths = write_pet_series(np.full((16, 16, 10), 2.0), np.diag([2, 2, 3, 1]), PetMeta(), tmp_path)
    assert len(paths) == 10 and all(p.exists() for p in paths)
    vol, _ = read_pet_suv(paths)
    np.testing.assert_allclose(vol, 2.0, rtol=1e-4)


def test_pet_round_trip_suv_and_geometry(tmp_path: Path) -> None:
    shape = (20, 14, 9)  # non-square matrix, anisotropic pixels, head→feet slices
    suv = _phantom(shape)
    aff = np.array([[2.5, 0, 0, -20.0], [0, 2.0, 0, 35.5], [0, 0, -3.27, -612.0], [0, 0, 0, 1]])
    meta = PetMeta(
        tracer="florbetapir",
        injected_dose_mbq=371.37,
        patient_weight_kg=81.3,
        injection_datetime=dt.datetime(2025, 6, 2, 23, 40, 7),  # scan crosses midnight
        uptake_s=3000.0,
        uid_entropy=("test", "roundtrip"),
    )
    paths = write_pet_series(suv, aff, meta, tmp_path)
    vol, aff_read = read_pet_suv(paths[::-1])  # reader sorts by IPP, not by order
    truth = suv[:, :, ::-1]  # the reader sorts feet→head
    mask = truth > 0.1 * truth.max()
    rel = np.abs(vol[mask] - truth[mask]) / truth[mask]
    assert rel.max() < 0.005
    expected_aff = aff @ np.diag([1, 1, -1, 1.0])
    expected_aff[:3, 3] = (aff @ np.array([0, 0, shape[2] - 1, 1.0]))[:3]
    np.testing.assert_allclose(aff_read, expected_aff, atol=1e-6)

    d = pydicom.dcmread(paths[0])
    assert d.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
    assert open(paths[0], "rb").read()[128:132] == b"DICM"
    assert d.SOPClassUID == "1.2.840.10008.5.1.4.1.1.128"
    assert d.file_meta.MediaStorageSOPInstanceUID == d.SOPInstanceUID
    assert d.Modality == "PT" and d.Units == "BQML" and d.DecayCorrection == "START"
    assert {"ATTN", "DECY"} <= set(d.CorrectedImage)
    assert [float(v) for v in d.ImageOrientationPatient] == [1, 0, 0, 0, 1, 0]
    assert [float(v) for v in d.PixelSpacing] == [2.0, 2.5]  # [row spacing (j), col spacing (i)]
    assert (d.Rows, d.Columns) == (14, 20)
    assert float(d.SliceThickness) == 3.27
    np.testing.assert_allclose([float(v) for v in d.ImagePositionPatient], aff[:3, 3])
    assert d.PixelRepresentation == 1 and d.BitsAllocated == 16
    assert float(d.RescaleIntercept) == 0.0
    rp = d.RadiopharmaceuticalInformationSequence[0]
    assert float(rp.RadionuclideTotalDose) == 371370000.0  # Bq for PT
    assert rp.RadiopharmaceuticalStartDateTime == "20250602234007"
    assert rp.RadiopharmaceuticalStartTime == "234007"
    assert float(rp.RadionuclideHalfLife) == 6586.2
    assert rp.RadiopharmaceuticalCodeSequence[0].CodeValue == "456995000"
    assert rp.RadionuclideCodeSequence[0].CodeValue == "77004003"
    assert d.SeriesDate == d.AcquisitionDate == "20250603"
    assert d.SeriesTime == d.AcquisitionTime == "003007"
    assert len(d.ConvolutionKernel) <= 16
    for keyword, text in all_ds_values(d):
        assert len(text) <= 16, keyword
    # Each slice has its own slope.
    slopes = {pydicom.dcmread(p).RescaleSlope for p in paths}
    assert len(slopes) > 1
    # Explicit QIBA factor from the tags.
    delta = (dt.datetime(2025, 6, 3, 0, 30, 7) - dt.datetime(2025, 6, 2, 23, 40, 7)).total_seconds()
    factor = 81.3 * 1000 / (371370000.0 * 2 ** (-delta / 6586.2))
    assert suv_factor(meta) == pytest.approx(factor, rel=1e-12)


def test_pet_calibration_and_uids(tmp_path: Path) -> None:
    suv = _phantom((8, 8, 4))
    m1 = PetMeta(calibration_factor=1.05, uid_entropy=("a",))
    p1 = write_pet_series(suv, np.diag([2, 2, 2, 1.0]), m1, tmp_path / "a")
    vol, _ = read_pet_suv(p1)
    np.testing.assert_allclose(vol, suv * 1.05, rtol=1e-3)
    p2 = write_pet_series(suv, np.diag([2, 2, 2, 1.0]), PetMeta(uid_entropy=("a",)), tmp_path / "b")
    d1, d2 = pydicom.dcmread(p1[0]), pydicom.dcmread(p2[0])
    assert d1.SeriesInstanceUID == d2.SeriesInstanceUID and d1.SOPInstanceUID == d2.SOPInstanceUID
    p3 = write_pet_series(suv, np.diag([2, 2, 2, 1.0]), PetMeta(), tmp_path / "c")
    uids = {pydicom.dcmread(p).SOPInstanceUID for p in p3}
    assert len(uids) == 4 and pydicom.dcmread(p3[0]).SeriesInstanceUID != d1.SeriesInstanceUID


@pytest.mark.parametrize("naming", ["instance", "im", "uid", "slice"])
def test_file_naming(tmp_path: Path, naming: str) -> None:
    paths = write_pet_series(np.ones((4, 4, 3)), np.eye(4), PetMeta(file_naming=naming), tmp_path)
    assert len({p.name for p in paths}) == 3
