"""One site folder full of bad input: each is rejected with its reason, nothing crashes,
every file is accounted for."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.uid import (
    EnhancedPETImageStorage,
    LegacyConvertedEnhancedPETImageStorage,
    generate_uid,
)

from fedmi.client.ingest.pipeline import ingest_site
from fedmi.client.ingest.report import IngestReport
from tests.client.ingest.helpers import write_labels, write_pet

TASK = "fdg-ad"


def _edit(files: list[Path], new_series: bool = True, **changes: object) -> None:
    """Rewrite files with changed top-level attributes (``None`` deletes)."""
    uid = generate_uid()
    for p in files:
        ds = pydicom.dcmread(p)
        if new_series:
            ds.SeriesInstanceUID = uid
        for key, value in changes.items():
            if value is None:
                if key in ds:
                    delattr(ds, key)
            else:
                setattr(ds, key, value)
        ds.save_as(p, enforce_file_format=True)


def _pydicom_nm_files() -> list[str]:
    names = ("JPEG-lossy.dcm", "JPGExtended.dcm", "JPEG2000.dcm")
    return [f for f in (get_testdata_file(n) for n in names) if f]


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    site = tmp_path_factory.mktemp("site")
    d = site / "dicom"
    expect: dict[str, str] = {}  # patient id → expected reason ("accepted")

    write_pet(d / "good", "GOOD", file_naming="im")
    expect["GOOD"] = "accepted"

    files = write_pet(d / "dup", "DUP")
    shutil.copy(files[5], d / "dup" / "copy_of_slice_6")
    expect["DUP"] = "accepted"

    files = write_pet(d / "conflict", "CONFLICT")
    ds = pydicom.dcmread(files[3])
    arr = ds.pixel_array.copy()
    arr[0, 0] += 7
    ds.set_pixel_data(arr, "MONOCHROME2", 16)
    ds.save_as(d / "conflict" / "other_copy", enforce_file_format=True)
    expect["CONFLICT"] = "conflicting_duplicates"

    files = write_pet(d / "samepos", "SAMEPOS")
    ds = pydicom.dcmread(files[3])
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.save_as(d / "samepos" / "second_frame", enforce_file_format=True)
    expect["SAMEPOS"] = "conflicting_duplicates"

    files = write_pet(d / "trunc", "TRUNC")
    data = files[10].read_bytes()
    files[10].write_bytes(data[: len(data) // 2])
    expect["TRUNC"] = "truncated"

    files = write_pet(d / "gap", "GAP")
    files[17].unlink()
    expect["GAP"] = "missing_slices"

    files = write_pet(d / "uneven", "UNEVEN")
    ds = pydicom.dcmread(files[12])
    ipp = [float(v) for v in ds.ImagePositionPatient]
    ds.ImagePositionPatient = [f"{ipp[0]:.4f}", f"{ipp[1]:.4f}", f"{ipp[2] + 1.2:.4f}"]
    ds.save_as(files[12], enforce_file_format=True)
    expect["UNEVEN"] = "uneven_spacing"

    write_pet(d / "noweight", "NOWEIGHT", extra={"PatientWeight": None})
    expect["NOWEIGHT"] = "missing_suv_tags"

    files = write_pet(d / "nodose", "NODOSE")
    for p in files:
        ds = pydicom.dcmread(p)
        del ds.RadiopharmaceuticalInformationSequence[0].RadionuclideTotalDose
        ds.save_as(p, enforce_file_format=True)
    expect["NODOSE"] = "missing_suv_tags"

    write_pet(d / "cnts", "CNTS", extra={"Units": "CNTS"})
    expect["CNTS"] = "unsupported_units"

    write_pet(d / "nac", "NAC", corrected_image=("NORM", "DECY"))
    expect["NAC"] = "not_corrected"

    write_pet(d / "amy", "AMY", tracer="florbetapir")
    expect["AMY"] = "wrong_tracer"

    files = write_pet(d / "enh", "ENH")
    _edit(files[:3], SOPClassUID=EnhancedPETImageStorage)
    for p in files[3:]:
        p.unlink()
    expect["ENH"] = "enhanced_multiframe"

    files = write_pet(d / "legacy", "LEGACY")
    _edit(files[:2], SOPClassUID=LegacyConvertedEnhancedPETImageStorage)
    for p in files[2:]:
        p.unlink()
    expect["LEGACY"] = "enhanced_multiframe"

    write_pet(d / "nolabel", "NOLABEL")
    expect["NOLABEL"] = "unlabelled"
    write_pet(d / "badlabel", "BADLABEL")
    expect["BADLABEL"] = "invalid_label"

    # Real DICOM written by others, dropped into one mixed folder.
    mixed = d / "mixed"
    mixed.mkdir()
    shutil.copy(get_testdata_file("CT_small.dcm"), mixed / "ct")
    shutil.copy(get_testdata_file("MR_small.dcm"), mixed / "mr")
    for i, f in enumerate(_pydicom_nm_files()):
        shutil.copy(f, mixed / f"nm{i}")
    dicomdir = get_testdata_file("DICOMDIR")
    shutil.copy(dicomdir, d / "DICOMDIR")
    (mixed / "notes.txt").write_text("scanner export log\n")
    (mixed / "random.bin").write_bytes(np.random.default_rng(0).bytes(3000))
    (mixed / "empty").write_bytes(b"")

    labels = {p: "AD" for p in expect if p != "NOLABEL"}
    labels["BADLABEL"] = "Alzheimer"
    write_labels(site, labels)
    return site, expect


@pytest.fixture(scope="module")
def report(site: tuple[Path, dict[str, str]], tmp_path_factory: pytest.TempPathFactory):
    return ingest_site(site[0], TASK, tmp_path_factory.mktemp("state"))


def _patient(uid: str, site: Path) -> str:
    for p in (site / "dicom").rglob("*"):
        if p.is_file():
            try:
                ds = pydicom.dcmread(p, stop_before_pixels=True, force=True)
            except Exception:
                continue
            if str(ds.get("SeriesInstanceUID", "")) == uid:
                return str(ds.PatientID)
    raise KeyError(uid)


def test_each_bad_series_has_its_reason(site, report: IngestReport) -> None:
    root, expect = site
    got = {row["patient_id"]: "accepted" for row in report.accepted}
    got |= {row["patient_id"]: "unlabelled" for row in report.unlabelled}
    for row in report.rejected:
        if row["series_uid"] and row["reason"] != "duplicate_instance":
            pid = _patient(row["series_uid"], root)
            if pid in expect:
                got[pid] = row["reason"]
    assert got == expect
    for row in report.rejected:
        assert len(row["message"]) > 30 and row["files"]


def test_duplicate_copy_is_ignored_and_noted(report: IngestReport) -> None:
    dup = [r for r in report.rejected if r["reason"] == "duplicate_instance"]
    assert len(dup) == 1 and dup[0]["files"] == ["dicom/dup/copy_of_slice_6"]
    row = next(r for r in report.accepted if r["patient_id"] == "DUP")
    assert row["n_files"] == 40


def test_foreign_and_broken_files(report: IngestReport) -> None:
    by_file = {f: r["reason"] for r in report.rejected for f in r["files"]}
    assert by_file["dicom/mixed/ct"] == "wrong_modality"
    assert by_file["dicom/mixed/mr"] == "wrong_modality"
    for i in range(len(_pydicom_nm_files())):
        assert by_file[f"dicom/mixed/nm{i}"] == "wrong_modality"
    assert by_file["dicom/DICOMDIR"] == "dicomdir"
    assert by_file["dicom/mixed/notes.txt"] == "not_dicom"
    assert by_file["dicom/mixed/random.bin"] == "not_dicom"
    assert by_file["dicom/mixed/empty"] == "not_dicom"
    ct = next(r for r in report.rejected if r["files"] == ["dicom/mixed/ct"])
    assert "CT" in ct["message"] and "dicom/mixed/ct" in ct["message"]


def test_every_file_accounted_for(site, report: IngestReport) -> None:
    root, _ = site
    on_disk = sorted(
        p.relative_to(root).as_posix() for p in (root / "dicom").rglob("*") if p.is_file()
    )
    rejected = [f for r in report.rejected for f in r["files"]]
    assert len(rejected) == len(set(rejected))
    assert report.summary["files_found"] == len(on_disk)
    ingested = sum(r["n_files"] for r in [*report.accepted, *report.unlabelled])
    assert ingested + len(rejected) == len(on_disk)
    assert report.summary["files_accepted"] == ingested
    assert set(rejected) <= set(on_disk)


def test_report_on_disk(report: IngestReport, tmp_path: Path) -> None:
    assert report.summary["series_accepted"] == 2
    assert report.summary["by_reason"]["wrong_modality"] >= 2
    good = next(r for r in report.accepted if r["patient_id"] == "GOOD")
    assert good["label"] == "AD" and good["class_index"] == 1 and good["tracer"] == "fdg"
    assert len(good["voxel_size_mm"]) == 3 and good["suv_factor"] > 0


def test_pydicom_nm_files_rejected_for_spect_task(tmp_path: Path) -> None:
    site = tmp_path / "site"
    (site / "dicom").mkdir(parents=True)
    for i, f in enumerate(_pydicom_nm_files()):
        shutil.copy(f, site / "dicom" / f"nm{i}")
    shutil.copy(get_testdata_file("CT_small.dcm"), site / "dicom" / "ct")
    write_labels(site, {})
    report = ingest_site(site, "dat-pd", tmp_path / "state")
    by_file = {f: r["reason"] for r in report.rejected for f in r["files"]}
    assert len(by_file) == len(_pydicom_nm_files()) + 1
    assert by_file.pop("dicom/ct") == "wrong_modality"
    assert set(by_file.values()) == {"planar_nm"}
    assert report.accepted == []
