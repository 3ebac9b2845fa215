"""Age and sex read from the header for the normative model: (0010,1010) and (0010,0040)."""

from __future__ import annotations

import pytest
from pydicom.dataset import Dataset

from fedmi.client.ingest.volume import patient_age_years, patient_sex


def _ds(**kw: str) -> Dataset:
    ds = Dataset()
    for k, v in kw.items():
        setattr(ds, k, v)
    return ds


@pytest.mark.parametrize(
    ("age", "expected"),
    [("072Y", 72.0), ("006M", 0.5), ("052W", 1.0), ("365D", 1.0), ("085y", 85.0)],
)
def test_patient_age_units(age: str, expected: float) -> None:
    assert patient_age_years(_ds(PatientAge=age)) == expected


def test_birth_date_when_age_missing_or_malformed() -> None:
    ds = _ds(PatientAge="seventy", PatientBirthDate="19500301", StudyDate="20250301")
    assert patient_age_years(ds) == pytest.approx(75.0, abs=0.01)
    # acquisition date wins over the study date
    ds.AcquisitionDate = "20260301"
    assert patient_age_years(ds) == pytest.approx(76.0, abs=0.01)


@pytest.mark.parametrize(
    "ds",
    [
        _ds(),
        _ds(PatientAge="999Y"),
        _ds(PatientBirthDate="19500301"),  # no scan date
        _ds(PatientBirthDate="notadate", StudyDate="20250301"),
        _ds(PatientBirthDate="21000101", StudyDate="20250301"),  # born after the scan
    ],
)
def test_unknown_age(ds: Dataset) -> None:
    assert patient_age_years(ds) is None


@pytest.mark.parametrize(("value", "expected"), [("F", "F"), ("m", "M"), ("O", "O"), ("X", "")])
def test_patient_sex(value: str, expected: str) -> None:
    assert patient_sex(_ds(PatientSex=value)) == expected
    assert patient_sex(_ds()) == ""
