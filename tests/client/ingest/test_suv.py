"""QIBA SUVbw factor on hand-made headers: every branch with its exact expected number."""

from __future__ import annotations

import pytest
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from fedmi.client.ingest.errors import IngestError
from fedmi.client.ingest.suv import suv_factor

HALF = 6586.2


def _pet(**over: object) -> Dataset:
    ds = Dataset()
    ds.Units = "BQML"
    ds.CorrectedImage = ["ATTN", "DECY", "SCAT"]
    ds.DecayCorrection = "START"
    ds.PatientWeight = "68.5"
    ds.SeriesDate, ds.SeriesTime = "20250314", "101500"
    ds.AcquisitionDate, ds.AcquisitionTime = "20250314", "101500"
    item = Dataset()
    item.RadionuclideTotalDose = "370000000"
    item.RadionuclideHalfLife = str(HALF)
    item.RadiopharmaceuticalStartDateTime = "20250314092500"
    ds.RadiopharmaceuticalInformationSequence = Sequence([item])
    for k, v in over.items():
        if v is None:
            delattr(ds, k)
        else:
            setattr(ds, k, v)
    return ds


def _expected(minutes: float) -> float:
    return 68.5 * 1000.0 / (370e6 * 2.0 ** (-minutes * 60.0 / HALF))


def test_bqml_series_time() -> None:
    r = suv_factor([_pet()])
    assert r.factor == pytest.approx(_expected(50.0), rel=1e-12)
    assert r.factor == pytest.approx(2.5387e-4, rel=1e-4)  # PHANTOM_SPEC §4.4


def test_post_processed_series_uses_earliest_acquisition() -> None:
    late = _pet(SeriesTime="113000")
    a, b = _pet(AcquisitionTime="101500"), _pet(AcquisitionTime="102500")
    r = suv_factor([late, a, b])
    assert r.factor == pytest.approx(_expected(50.0), rel=1e-12)
    assert "scan_time_from_acquisition" in r.notes


def test_ge_private_scan_time() -> None:
    ds = _pet(SeriesTime="113000")
    block = ds.private_block(0x0009, "GEMS_PETD_01", create=True)
    block.add_new(0x0D, "DT", "20250314101000.00")
    r = suv_factor([ds])
    assert r.factor == pytest.approx(_expected(45.0), rel=1e-12)


def test_injection_time_only_crosses_midnight() -> None:
    ds = _pet(SeriesDate="20250315", SeriesTime="002000", AcquisitionDate="20250315")
    ds.AcquisitionTime = "002000"
    item = ds.RadiopharmaceuticalInformationSequence[0]
    del item.RadiopharmaceuticalStartDateTime
    item.RadiopharmaceuticalStartTime = "233000"
    r = suv_factor([ds])
    assert r.factor == pytest.approx(_expected(50.0), rel=1e-12)
    assert "injection_before_midnight" in r.notes


def test_gml_admin_and_philips() -> None:
    assert suv_factor([_pet(Units="GML")]).factor == 1.0
    assert suv_factor([_pet(DecayCorrection="ADMIN")]).factor == pytest.approx(68.5e3 / 370e6)
    ds = _pet(Units="CNTS")
    ds.private_block(0x7053, "Philips PET Private Group", create=True).add_new(0x00, "DS", "0.0042")
    assert suv_factor([ds]).factor == pytest.approx(0.0042)
    ds = _pet(Units="CNTS")
    ds.private_block(0x7053, "Philips PET Private Group", create=True).add_new(0x09, "DS", "2.5")
    assert suv_factor([ds]).factor == pytest.approx(2.5 * _expected(50.0))


@pytest.mark.parametrize(
    ("over", "reason"),
    [
        ({"PatientWeight": None}, "missing_suv_tags"),
        ({"PatientWeight": "68500"}, "implausible_suv_tags"),
        ({"CorrectedImage": ["ATTN"]}, "not_corrected"),
        ({"DecayCorrection": "NONE"}, "unsupported_decay_correction"),
        ({"Units": "PROPCNTS"}, "unsupported_units"),
        ({"Units": "CNTS"}, "unsupported_units"),
        ({"SeriesDate": None, "AcquisitionDate": None}, "missing_suv_tags"),
        ({"SeriesTime": "080000", "AcquisitionTime": "080000"}, "implausible_suv_tags"),
    ],
)
def test_unusable_headers(over: dict, reason: str) -> None:
    with pytest.raises(IngestError) as err:
        suv_factor([_pet(**over)], "PET series X")
    assert err.value.reason == reason
    assert "PET series X" in err.value.message


def test_dose_in_mbq_is_implausible() -> None:
    ds = _pet()
    ds.RadiopharmaceuticalInformationSequence[0].RadionuclideTotalDose = "370"
    with pytest.raises(IngestError) as err:
        suv_factor([ds])
    assert err.value.reason == "implausible_suv_tags" and "MBq" in err.value.message
