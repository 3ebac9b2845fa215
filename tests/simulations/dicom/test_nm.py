"""NM writer: the multi-frame SPECT object (PHANTOM_SPEC §4.3)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom

from fedmi.simulations.dicom.nm import NmMeta, write_nm_series
from tests.simulations.dicom.helpers import all_ds_values


def test_nm_multiframe_structure(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    counts = rng.poisson(50, size=(12, 10, 7)).astype(np.uint16)
    aff = np.array([[4.4, 0, 0, -30.0], [0, 4.4, 0, -20.0], [0, 0, -4.4, 80.0], [0, 0, 0, 1]])
    path = write_nm_series(counts, aff, NmMeta(units_cnts=True), tmp_path / "x" / "nm.dcm")
    d = pydicom.dcmread(path)
    assert d.SOPClassUID == "1.2.840.10008.5.1.4.1.1.20" and d.Modality == "NM"
    assert list(d.ImageType) == ["ORIGINAL", "PRIMARY", "RECON TOMO", "EMISSION"]
    assert d.NumberOfFrames == 7 and d.NumberOfSlices == 7
    assert d.FrameIncrementPointer == pydicom.tag.Tag(0x0054, 0x0080)
    assert list(d.SliceVector) == list(range(1, 8))
    assert "ImagePositionPatient" not in d and "ImageOrientationPatient" not in d
    det = d.DetectorInformationSequence[0]
    np.testing.assert_allclose([float(v) for v in det.ImagePositionPatient], [-30, -20, 80])
    assert [float(v) for v in det.ImageOrientationPatient] == [1, 0, 0, 0, 1, 0]
    assert float(d.SpacingBetweenSlices) == -4.4  # slices run head→feet
    assert [float(v) for v in d.PixelSpacing] == [4.4, 4.4]
    assert d.Units == "CNTS"
    rp = d.RadiopharmaceuticalInformationSequence[0]
    assert float(rp.RadionuclideTotalDose) == 185.0  # MBq for NM
    assert rp.RadiopharmaceuticalCodeSequence[0].CodeValue == "429296007"
    win = d.EnergyWindowInformationSequence[0].EnergyWindowRangeSequence[0]
    assert float(win.EnergyWindowLowerLimit) < 159 < float(win.EnergyWindowUpperLimit)
    arr = d.pixel_array  # [frames, rows, cols] = [k, j, i]
    assert arr.shape == (7, 10, 12) and arr.dtype == np.uint16
    np.testing.assert_array_equal(arr, counts.transpose(2, 1, 0))
    for keyword, text in all_ds_values(d):
        assert len(text) <= 16, keyword


def test_nm_units_absent_by_default(tmp_path: Path) -> None:
    path = write_nm_series(np.ones((4, 4, 3)), np.eye(4), NmMeta(), tmp_path / "nm.dcm")
    d = pydicom.dcmread(path)
    assert "Units" not in d and float(d.SpacingBetweenSlices) == 1.0
