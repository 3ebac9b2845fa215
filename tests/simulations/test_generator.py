"""The tiny fdg-ad federation on disk: layout, labels, truth, determinism, CLI, MONAI."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pydicom
import pytest

from fedmi.simulations import phantom as P
from fedmi.simulations.cli import main
from fedmi.simulations.dicom import read_pet_suv
from fedmi.simulations.generator import generate_federation
from fedmi.simulations.sites import PRESETS

tomllib = pytest.importorskip("tomllib")  # Python ≥ 3.11


@pytest.fixture(scope="module")
def fed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    root = tmp_path_factory.mktemp("fed") / "root"
    return root, generate_federation(root, "fdg-ad", "tiny", seed=7, workers=2)


def _read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as fh:
        return list(csv.DictReader(fh))


def _dicom_files(root: Path) -> list[Path]:
    return sorted(
        p
        for p in root.rglob("*")
        if p.is_file() and p.parent.name != "_truth" and p.suffix not in (".csv", ".toml", ".json")
    )


def test_layout_and_manifest(fed: tuple[Path, dict]) -> None:
    root, manifest = fed
    assert json.loads((root / "federation.json").read_text()) == manifest
    assert manifest["task"] == "fdg-ad" and manifest["preset"] == "tiny" and manifest["seed"] == 7
    roles = [s["role"] for s in manifest["sites"]]
    assert roles == ["train", "train", "holdout"]
    for s in manifest["sites"]:
        site_dir = root / s["site_id"]
        cohort_labelled = sum(s["memory_clinic"].values()) - s["n_unlabelled"]
        assert 8 <= s["n_subjects"] - cohort_labelled <= 12
        site = tomllib.loads((site_dir / "site.toml").read_text())
        assert site["site"] == {"site-id": s["site_id"], "role": s["role"], "task": "fdg-ad"}
        truth = site["truth"]
        assert truth["tracer"] == "fdg" and 3.5 <= truth["fwhm-mm"] <= 9.0
        assert truth["manufacturer"] and truth["model"]
        labels = _read_csv(site_dir / "labels.csv")
        assert list(labels[0]) == ["PatientID", "label"]
        assert len(labels) == s["n_subjects"] == len({r["PatientID"] for r in labels})
        assert {r["label"] for r in labels} <= {"CN", "AD", "MCI-stable", "MCI-converter"} | (
            {"FTD", "DLB"} if s["role"] == "holdout" else set()
        )
        rows = _read_csv(root / "_truth" / f"{s['site_id']}.csv")
        assert [r["PatientID"] for r in rows if r["labelled"] == "True"] == [
            r["PatientID"] for r in labels
        ]
        assert len(rows) == s["n_subjects"] + s["n_unlabelled"]
        assert {"severity", "age", "sex", "group", "label"} <= set(rows[0])
        for r in rows:
            series = site_dir / r["series_dir"]
            files = [p for p in series.iterdir()]
            assert len(files) == int(r["n_files"]) == truth["n-slices"]
            d = pydicom.dcmread(files[0], stop_before_pixels=True)
            assert d.PatientID == r["PatientID"] and d.Modality == "PT"
            assert d.InstitutionName == truth["institution"]
            assert 2024 <= int(d.StudyDate[:4]) <= 2026
            if r["label"] == "AD" and r["label_noise"] == "False":
                assert 0.6 <= float(r["severity"]) <= 1.2
            if r["label"].startswith("MCI"):
                assert r["converter"] == str(r["label"] == "MCI-converter")


def test_uids_unique(fed: tuple[Path, dict]) -> None:
    root, _ = fed
    sops, series = set(), set()
    files = _dicom_files(root)
    for p in files:
        d = pydicom.dcmread(p, stop_before_pixels=True)
        sops.add(d.SOPInstanceUID)
        series.add((d.PatientID, d.SeriesInstanceUID, d.StudyInstanceUID, d.FrameOfReferenceUID))
    assert len(sops) == len(files)
    n_subjects = sum(1 for _ in root.glob("site-*/labels.csv") for _ in [0])
    assert len({s[1] for s in series}) == len({s[0] for s in series}) >= n_subjects


def test_suv_matches_noiseless_truth(fed: tuple[Path, dict]) -> None:
    """SUV from the tags ≈ calibration × noiseless blurred phantom on the same grid."""
    root, _ = fed
    site = tomllib.loads((root / "site-a" / "site.toml").read_text())["truth"]
    row = _read_csv(root / "_truth" / "site-a.csv")[0]
    vol, aff = read_pet_suv(list((root / "site-a" / row["series_dir"]).iterdir()))
    t = P.SubjectTruth(
        task="fdg-ad",
        group=row["group"],
        label=row["label"],
        age=float(row["age"]),
        sex=row["sex"],
        weight_kg=float(row["weight_kg"]),
        height_m=float(row["height_m"]),
        severity=float(row["severity"]),
        global_level=float(row["global_level"]),
        asymmetry=float(row["asymmetry"]),
        scale=tuple(float(v) for v in row["scale"].split(";")),
        rotation_deg=tuple(float(v) for v in row["rotation_deg"].split(";")),
        shift_mm=tuple(float(v) for v in row["shift_mm"].split(";")),
    )
    ref = P.subject_volume(
        t,
        vol.shape,
        aff,
        fwhm_mm=site["fwhm-mm"],
        table_offset_lps=tuple(site["table-offset-lps"]),
        grid=PRESETS["tiny"].working_grid,
    )
    mask = ref > 0.3 * ref.max()
    assert np.corrcoef(vol[mask], ref[mask])[0, 1] > 0.7  # regional variation and noise differ
    assert vol[mask].mean() / ref[mask].mean() == pytest.approx(site["calibration"], rel=0.06)
    assert 4.0 < np.percentile(vol, 99.9) < 20.0  # grey-matter FDG SUV


def test_determinism(fed: tuple[Path, dict], tmp_path: Path) -> None:
    root, manifest = fed
    again = generate_federation(tmp_path / "same", "fdg-ad", "tiny", seed=7, workers=1)
    assert again == manifest
    a, b = _dicom_files(root), _dicom_files(tmp_path / "same")
    assert [p.relative_to(root) for p in a] == [p.relative_to(tmp_path / "same") for p in b]
    for pa, pb in zip(a[::7], b[::7], strict=True):
        assert pa.read_bytes() == pb.read_bytes()
    for name in ("labels.csv", "site.toml"):
        assert (root / "site-b" / name).read_bytes() == (
            tmp_path / "same" / "site-b" / name
        ).read_bytes()
    assert (root / "_truth" / "site-c.csv").read_bytes() == (
        tmp_path / "same" / "_truth" / "site-c.csv"
    ).read_bytes()


def test_other_seed_differs(fed: tuple[Path, dict], tmp_path: Path) -> None:
    root, _ = fed
    generate_federation(tmp_path / "other", "fdg-ad", "tiny", seed=8, subjects_scale=0.3)
    d1 = pydicom.dcmread(_dicom_files(root)[0])
    d2 = pydicom.dcmread(_dicom_files(tmp_path / "other")[0])
    assert d1.SOPInstanceUID != d2.SOPInstanceUID and d1.StudyInstanceUID != d2.StudyInstanceUID
    assert d1.PixelData != d2.PixelData


def test_bad_options(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown options"):
        generate_federation(tmp_path / "x", "fdg-ad", "tiny", 0, colour="red")
    with pytest.raises(ValueError, match="unknown task"):
        generate_federation(tmp_path / "y", "fdg", "tiny", 0)


def test_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "cli"
    assert (
        main(
            [
                "generate",
                "--out",
                str(out),
                "--preset",
                "tiny",
                "--sites",
                "2",
                "--subjects-scale",
                "0.25",
                "--seed",
                "3",
            ]
        )
        == 0
    )
    manifest = json.loads((out / "federation.json").read_text())
    assert [s["role"] for s in manifest["sites"]] == ["train", "holdout"]
    assert main(["generate", "--out", str(out)]) == 2  # not empty
    assert "not empty" in capsys.readouterr().err
    assert main([]) == 2


def test_monai_loads_a_series(fed: tuple[Path, dict]) -> None:
    monai_transforms = pytest.importorskip("monai.transforms")
    root, _ = fed
    row = _read_csv(root / "_truth" / "site-b.csv")[0]
    series = root / "site-b" / row["series_dir"]
    img = monai_transforms.LoadImage(reader="PydicomReader", image_only=True)(str(series))
    suv, _ = read_pet_suv(list(series.iterdir()))
    arr = np.asarray(img)
    assert arr.shape == suv.shape
    if float(img.affine[2, 2]) < 0:  # MONAI keeps the file's head→feet slice order
        arr = arr[:, :, ::-1]
    mask = suv > 0.1 * suv.max()
    ratio = arr[mask] / suv[mask]  # Bq/mL ÷ SUV = constant (per-slice slopes applied)
    assert ratio.std() / ratio.mean() < 1e-3
