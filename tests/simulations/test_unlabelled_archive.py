"""The unlabelled archive of every site (``unlabelled_archive``): its size, its patients
(never in labels.csv), its scans (the site's own scanner and population), determinism, and
the labelled files it leaves byte for byte as they were."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pydicom
import pytest

from fedmi.simulations.cli import main
from fedmi.simulations.generator import generate_federation
from fedmi.simulations.sites import PRESETS
from fedmi.simulations.sites.presets import archive_size

FACTOR = 1.5
#: Two small sites (a training site with the memory-clinic cohort's unlabelled scans, and
#: the holdout), so the archive is appended after labelled and unlabelled cohort scans.
OPTIONS = {"n_sites": 2, "subjects_scale": 0.25}

tomllib = pytest.importorskip("tomllib")  # Python ≥ 3.11


@pytest.fixture(scope="module")
def feds(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, dict]]:
    """``none``: no archive; ``archive`` and ``again``: the same archive (1 and 2 workers)."""
    out = {}
    for name, factor, workers in (("none", 0.0, 2), ("archive", FACTOR, 1), ("again", FACTOR, 2)):
        root = tmp_path_factory.mktemp(name) / "root"
        manifest = generate_federation(
            root, "fdg-ad", "tiny", seed=3, unlabelled_archive=factor, workers=workers, **OPTIONS
        )
        out[name] = root, manifest
    return out


def _read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as fh:
        return list(csv.DictReader(fh))


def _files(root: Path) -> list[Path]:
    return sorted(p.relative_to(root) for p in root.rglob("*") if p.is_file())


def _archive_rows(root: Path, site: dict) -> list[dict[str, str]]:
    """The truth rows of a site's archive (they come last)."""
    rows = _read_csv(root / "_truth" / f"{site['site_id']}.csv")
    return rows[len(rows) - site["n_archive"] :]


def test_no_archive_by_default(feds: dict[str, tuple[Path, dict]]) -> None:
    assert {p.unlabelled_archive for p in PRESETS.values()} == {0.0}
    _, manifest = feds["none"]
    assert manifest["options"]["unlabelled_archive"] == 0.0 and manifest["n_archive"] == 0
    assert [s["n_archive"] for s in manifest["sites"]] == [0, 0]


def test_archive_size_per_site(feds: dict[str, tuple[Path, dict]]) -> None:
    root, manifest = feds["archive"]
    _, plain = feds["none"]
    assert manifest["options"]["unlabelled_archive"] == FACTOR
    assert [s["role"] for s in manifest["sites"]] == ["train", "holdout"]
    for s, p in zip(manifest["sites"], plain["sites"], strict=True):
        assert (
            s["n_subjects"] == p["n_subjects"] == len(_read_csv(root / s["site_id"] / "labels.csv"))
        )
        assert (
            s["n_archive"]
            == round(FACTOR * s["n_subjects"])
            == archive_size(FACTOR, s["n_subjects"])
        )
        assert s["n_archive"] > 0
        assert s["n_unlabelled"] == p["n_unlabelled"] + s["n_archive"]
        rows = _read_csv(root / "_truth" / f"{s['site_id']}.csv")
        assert len(rows) == s["n_subjects"] + s["n_unlabelled"]
    assert manifest["n_archive"] == sum(s["n_archive"] for s in manifest["sites"])
    assert manifest["n_unlabelled"] == plain["n_unlabelled"] + manifest["n_archive"]
    assert archive_size(0.5, 5) == 2 and archive_size(0.0, 40) == 0  # round half to even


def test_archive_patients_are_not_in_labels(feds: dict[str, tuple[Path, dict]]) -> None:
    root, manifest = feds["archive"]
    for s in manifest["sites"]:
        site_dir = root / s["site_id"]
        labels = {r["PatientID"] for r in _read_csv(site_dir / "labels.csv")}
        rows = _read_csv(root / "_truth" / f"{s['site_id']}.csv")
        archive = _archive_rows(root, s)
        ids = [r["PatientID"] for r in rows]
        assert len(set(ids)) == len(ids)  # no collision with any other patient of the site
        assert all(r["labelled"] == "False" for r in archive)
        assert not {r["PatientID"] for r in archive} & labels
        labelled_uids: set[str] = set()
        for r in rows:
            d = pydicom.dcmread(
                next((site_dir / r["series_dir"]).iterdir()), stop_before_pixels=True
            )
            if r in archive:
                assert d.PatientID == r["PatientID"]
                assert not {d.StudyInstanceUID, d.SeriesInstanceUID} & labelled_uids
            else:
                labelled_uids |= {d.StudyInstanceUID, d.SeriesInstanceUID}


def test_archive_scans_come_from_the_site(feds: dict[str, tuple[Path, dict]]) -> None:
    """Same scanner, reconstruction, tracer and matrix as the site's labelled scans, and
    groups from the site's own population (the cohort's disorders are not in it)."""
    root, manifest = feds["archive"]
    for s in manifest["sites"]:
        site_dir = root / s["site_id"]
        truth = tomllib.loads((site_dir / "site.toml").read_text())["truth"]
        archive = _archive_rows(root, s)
        assert {r["group"] for r in archive} <= set(truth["group-probs"])
        for r in archive:
            files = sorted((site_dir / r["series_dir"]).iterdir())
            assert len(files) == int(r["n_files"]) == truth["n-slices"]
            d = pydicom.dcmread(files[0], stop_before_pixels=True)
            assert d.Modality == "PT" and d.Manufacturer == truth["manufacturer"]
            assert d.ManufacturerModelName == truth["model"]
            assert d.InstitutionName == truth["institution"]
            assert d.Rows == truth["matrix"]
            seq = d.RadiopharmaceuticalInformationSequence[0]
            assert "FLUORODEOXYGLUCOSE" in str(seq.Radiopharmaceutical).upper()
            assert d.PatientSex == r["sex"] and d.PatientAge == f"{int(float(r['age'])):03d}Y"


def test_labelled_files_unchanged_by_the_archive(feds: dict[str, tuple[Path, dict]]) -> None:
    (plain, plain_m), (root, _) = feds["none"], feds["archive"]
    files = set(_files(root))
    for rel in _files(plain):
        if rel.parts[0] == "_truth" or rel.name == "federation.json":
            continue
        assert rel in files, rel
        assert (plain / rel).read_bytes() == (root / rel).read_bytes(), rel
    for s in plain_m["sites"]:
        before = _read_csv(plain / "_truth" / f"{s['site_id']}.csv")
        after = _read_csv(root / "_truth" / f"{s['site_id']}.csv")[: len(before)]
        # (a column only archive rows fill is empty in the others)
        assert [{k: r[k] for k in before[0]} for r in after] == before
        assert {v for r in after for k, v in r.items() if k not in before[0]} <= {""}
    assert len(files) > len(_files(plain))


def test_same_seed_gives_identical_archives(feds: dict[str, tuple[Path, dict]]) -> None:
    (a, manifest_a), (b, manifest_b) = feds["archive"], feds["again"]
    assert manifest_a == manifest_b
    assert _files(a) == _files(b)
    for rel in _files(a):
        assert (a / rel).read_bytes() == (b / rel).read_bytes(), rel


@pytest.mark.parametrize("value", [-1, -0.5, float("nan"), float("inf"), "2", True, None])
def test_bad_factor_refused(value: object, tmp_path: Path) -> None:
    out = tmp_path / "fed"
    with pytest.raises(ValueError, match="unlabelled_archive"):
        generate_federation(out, "fdg-ad", "tiny", unlabelled_archive=value)
    assert not out.exists()


@pytest.mark.parametrize("value", ["-1", "nan", "inf", "-inf", "three", ""])
def test_cli_refuses_bad_factor(
    value: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "fed"
    try:
        code = main(["generate", "--out", str(out), f"--unlabelled-archive={value}"])
    except SystemExit as exc:  # argparse: not a number
        code = exc.code
    assert code == 2
    assert "--unlabelled-archive" in capsys.readouterr().err
    assert not out.exists()


def test_cli_reports_the_archive(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "fed"
    args = ["generate", "--out", str(out), "--sites", "2", "--subjects-scale", "0.25"]
    assert main([*args, "--no-memory-clinic", "--unlabelled-archive", "1", "--workers", "1"]) == 0
    manifest = json.loads((out / "federation.json").read_text())
    printed = capsys.readouterr().out
    for s in manifest["sites"]:
        assert s["n_archive"] == s["n_subjects"] == s["n_unlabelled"]
        assert f"; {s['n_unlabelled']} unlabelled ({s['n_archive']} archive)" in printed
    assert f"and {manifest['n_archive']} archive scans" in printed
