"""The memory-clinic cohort of fdg-ad: regional ageing, bvFTD and DLB patterns (exact, on
the basis maps) and the cohort on disk (appended, never changing the other subjects)."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pydicom
import pytest

from fedmi.simulations import phantom as P
from fedmi.simulations.cli import main
from fedmi.simulations.generator import generate_federation
from fedmi.simulations.phantom.basis import group_map, region_map, tissue
from fedmi.simulations.phantom.fdg import FDG_AD_WEIGHTS
from fedmi.simulations.sites import make_sites
from fedmi.simulations.sites.presets import MEMORY_CLINIC

GRID = P.WORKING_GRID_3MM


@pytest.fixture(scope="module")
def basis() -> P.Basis:
    return P.build_basis("fdg-ad", GRID)


@pytest.fixture(scope="module")
def gm_base() -> np.ndarray:
    """3·GM·m of fdg.basis_maps (the healthy grey-matter uptake)."""
    gm = tissue(GRID)["gm"].astype(np.float64)
    mod = (
        1.0
        - 0.2 * region_map("cerebellum_gm", GRID)
        - 0.05 * group_map(("striatum", "thalamus"), GRID)
        + 0.1 * region_map("occipital", GRID)
    ) * (1.0 - 0.7 * region_map("pons", GRID))
    return 3.0 * gm * mod


def _truth(group: str, age: float = 70.0, severity: float = 0.0) -> P.SubjectTruth:
    return P.SubjectTruth(
        task="fdg-ad",
        group=group,
        label=group,
        age=age,
        sex="F",
        weight_kg=70.0,
        height_m=1.7,
        severity=severity,
        global_level=1.0,
    )


def _vol(basis: P.Basis, t: P.SubjectTruth) -> np.ndarray:
    return basis.combine(P.subject_coefficients(t, basis)).astype(np.float64)


def _relative_change(
    basis: P.Basis, gm_base: np.ndarray, a: P.SubjectTruth, b: P.SubjectTruth, region: str
) -> np.ndarray:
    """(b − a)/GM uptake at voxels wholly inside ``region`` with some grey matter."""
    inside = (region_map(region, GRID) == 1.0) & (gm_base > 0.5)
    assert inside.sum() >= 5, region
    return ((_vol(basis, b) - _vol(basis, a)) / np.where(inside, gm_base, 1.0))[inside]


@pytest.mark.parametrize(
    ("region", "expected"),
    [
        ("frontal_lateral", P.FDG_AGING_SLOPES["frontal_lateral"]),
        ("frontal_medial", P.FDG_AGING_SLOPES["frontal_medial"]),
        ("orbitofrontal", P.FDG_AGING_SLOPES["orbitofrontal"]),
        ("calcarine", 0.0),
        ("cerebellum_gm", 0.0),
    ],
)
def test_ageing_slope_per_region(
    basis: P.Basis, gm_base: np.ndarray, region: str, expected: float
) -> None:
    """85 vs 70 years: 1.5 decades × the table's slope, in every voxel of the region."""
    d = _relative_change(basis, gm_base, _truth("CN", 70.0), _truth("CN", 85.0), region)
    np.testing.assert_allclose(d, 1.5 * expected / 100.0, atol=2e-6)


def test_ageing_frontal_visible_in_region_mean(basis: P.Basis) -> None:
    """The regional mean (grey and white matter) of an 85-year-old's frontal cortex is
    ≈ 4–6 % below a 70-year-old's; the occipital mean moves < 1 %."""
    v70, v85 = _vol(basis, _truth("CN", 70.0)), _vol(basis, _truth("CN", 85.0))

    def mean(v: np.ndarray, r: str) -> float:
        w = region_map(r, GRID)
        return float((v * w).sum() / w.sum())

    frontal = mean(v85, "frontal") / mean(v70, "frontal") - 1.0
    assert -0.06 <= frontal <= -0.035, frontal
    assert abs(mean(v85, "calcarine") / mean(v70, "calcarine") - 1.0) < 0.01


@pytest.mark.parametrize(
    ("region", "weight"),
    [
        ("orbitofrontal", P.FDG_FTD_WEIGHTS["orbitofrontal"]),
        ("frontal_lateral", P.FDG_FTD_WEIGHTS["frontal_lateral"]),
        ("temporal_pole", P.FDG_FTD_WEIGHTS["temporal_pole"]),
        ("caudate", P.FDG_FTD_WEIGHTS["caudate"]),
        ("calcarine", 0.0),
        ("occipital_association", 0.0),
        ("posterior_cingulate", 0.0),
    ],
)
def test_ftd_pattern(basis: P.Basis, gm_base: np.ndarray, region: str, weight: float) -> None:
    """bvFTD of severity 0.8 (symmetric) lowers each region by 0.8 × its table weight."""
    d = _relative_change(basis, gm_base, _truth("CN"), _truth("FTD", severity=0.8), region)
    np.testing.assert_allclose(d, -0.8 * weight, atol=2e-6)


def test_ftd_asymmetry(basis: P.Basis) -> None:
    t = _truth("FTD", severity=1.0)
    t.asymmetry = 0.4
    c = P.subject_coefficients(t, basis)
    assert c[basis.index("ftd_L")] == pytest.approx(-1.4)
    assert c[basis.index("ftd_R")] == pytest.approx(-1.0)
    assert c[basis.index("ad_L")] == c[basis.index("ad_R")] == 0.0
    assert c[basis.index("dlb_L")] == c[basis.index("dlb_R")] == 0.0


@pytest.mark.parametrize(
    ("region", "weight"),
    [
        ("calcarine", P.FDG_DLB_WEIGHTS["calcarine"]),
        ("occipital_association", P.FDG_DLB_WEIGHTS["occipital_association"]),
        ("angular", P.FDG_DLB_WEIGHTS["angular"]),
        ("posterior_cingulate", P.FDG_DLB_WEIGHTS["posterior_cingulate"]),
        ("sensorimotor", 0.0),
    ],
)
def test_dlb_pattern(basis: P.Basis, gm_base: np.ndarray, region: str, weight: float) -> None:
    d = _relative_change(basis, gm_base, _truth("CN"), _truth("DLB", severity=1.0), region)
    np.testing.assert_allclose(d, -weight, atol=2e-6)


def test_dlb_cingulate_island(basis: P.Basis) -> None:
    """DLB spares the posterior cingulate relative to the precuneus (cingulate island
    sign); AD does not: the PCC/precuneus ratio of the decreases is far lower in DLB."""
    cn = _vol(basis, _truth("CN"))

    def drop(group: str, r: str) -> float:
        w = region_map(r, GRID)
        v = _vol(basis, _truth(group, severity=1.0))
        return float(((cn - v) * w).sum() / (cn * w).sum())

    dlb = drop("DLB", "posterior_cingulate") / drop("DLB", "precuneus")
    ad = drop("AD", "posterior_cingulate") / drop("AD", "precuneus")
    assert dlb < 0.5 * ad
    assert FDG_AD_WEIGHTS["posterior_cingulate"] > 2 * P.FDG_DLB_WEIGHTS["posterior_cingulate"]
    assert drop("DLB", "calcarine") > 0.1 > drop("AD", "calcarine")


def test_cohort_draws() -> None:
    rng = np.random.default_rng(3)
    ages = []
    for group in ("CN", "FTD", "DLB") * 20:
        t = P.draw_cohort_subject("fdg-ad", group, rng)
        assert t.group == t.label == group
        if group == "CN":
            assert t.severity == 0.0
            ages.append(t.age)
        else:
            assert 0.6 <= t.severity <= 1.2
        if group == "FTD":
            assert 0.2 <= abs(t.asymmetry) <= 0.6
    assert 50.0 <= min(ages) and max(ages) < 90.0 and max(ages) - min(ages) > 20
    with pytest.raises(ValueError):
        P.draw_cohort_subject("dat-pd", "DLB", rng)


# --------------------------------------------------------------------------------------
# On disk
# --------------------------------------------------------------------------------------


def _read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as fh:
        return list(csv.DictReader(fh))


@pytest.fixture(scope="module")
def feds(tmp_path_factory: pytest.TempPathFactory) -> dict[bool, tuple[Path, dict]]:
    out = {}
    for mc in (True, False):
        root = tmp_path_factory.mktemp(f"mc-{mc}") / "root"
        out[mc] = root, generate_federation(root, "fdg-ad", "tiny", seed=0, memory_clinic=mc)
    return out


def test_existing_subjects_unchanged(feds: dict[bool, tuple[Path, dict]]) -> None:
    (with_root, with_m), (without_root, without_m) = feds[True], feds[False]
    for s_with, s_without in zip(with_m["sites"], without_m["sites"], strict=True):
        assert s_with["site_id"] == s_without["site_id"]
        site = s_with["site_id"]
        a = _read_csv(with_root / "_truth" / f"{site}.csv")
        b = _read_csv(without_root / "_truth" / f"{site}.csv")
        assert a[: len(b)] == b
        assert len(a) == len(b) + sum(s_with["memory_clinic"].values())
        labels_b = _read_csv(without_root / site / "labels.csv")
        assert _read_csv(with_root / site / "labels.csv")[: len(labels_b)] == labels_b
    row = _read_csv(without_root / "_truth" / "site-b.csv")[1]
    files = sorted((without_root / "site-b" / row["series_dir"]).iterdir())
    for f in files:
        other = with_root / "site-b" / row["series_dir"] / f.name
        da, db = pydicom.dcmread(f), pydicom.dcmread(other)
        assert da.PixelData == db.PixelData
        assert da.SOPInstanceUID == db.SOPInstanceUID and da.PatientID == db.PatientID


def test_no_memory_clinic_gives_the_old_counts(feds: dict[bool, tuple[Path, dict]]) -> None:
    root, manifest = feds[False]
    sites = make_sites("fdg-ad", "tiny", 0)
    assert [s["n_subjects"] for s in manifest["sites"]] == [s.n_subjects for s in sites]
    assert manifest["n_subjects"] == sum(s.n_subjects for s in sites)
    assert manifest["n_unlabelled"] == 0 and manifest["options"]["memory_clinic"] is False
    for s in manifest["sites"]:
        assert len(_read_csv(root / "_truth" / f"{s['site_id']}.csv")) == s["n_subjects"]
        assert s["memory_clinic"] == {}


def test_cohort_labels_and_scans(feds: dict[bool, tuple[Path, dict]]) -> None:
    root, manifest = feds[True]
    table = MEMORY_CLINIC["fdg-ad"]["tiny"]
    first, second, holdout = manifest["sites"]
    assert first["memory_clinic"] == {"CN": 3, "FTD": 1, "DLB": 1}
    assert first["n_unlabelled"] == 2 and second["n_unlabelled"] == 0
    assert second["memory_clinic"] == table["train"]
    assert holdout["memory_clinic"] == table["holdout"]
    # First training site: FTD/DLB scans on disk, never in labels.csv.
    labels = {r["PatientID"]: r["label"] for r in _read_csv(root / "site-a" / "labels.csv")}
    assert not {"FTD", "DLB"} & set(labels.values())
    rows = _read_csv(root / "_truth" / "site-a.csv")
    unlabelled = [r for r in rows if r["labelled"] == "False"]
    assert sorted(r["group"] for r in unlabelled) == ["DLB", "FTD"]
    for r in unlabelled:
        assert r["PatientID"] not in labels
        files = list((root / "site-a" / r["series_dir"]).iterdir())
        assert len(files) == int(r["n_files"]) > 0
        assert pydicom.dcmread(files[0], stop_before_pixels=True).PatientID == r["PatientID"]
    assert len(labels) == first["n_subjects"] == len(rows) - 2
    # Holdout: FTD/DLB labelled; cohort normals 50–90 years, PatientAge in the header.
    h_labels = [r["label"] for r in _read_csv(root / "site-c" / "labels.csv")]
    assert h_labels.count("FTD") == 2 and h_labels.count("DLB") == 2
    n_own = holdout["n_subjects"] - sum(table["holdout"].values())
    cohort = _read_csv(root / "_truth" / "site-c.csv")[n_own:]
    assert [r["group"] for r in cohort] == ["CN"] * 3 + ["FTD"] * 2 + ["DLB"] * 2
    for r in cohort:
        assert r["labelled"] == "True" and r["label"] == r["group"]
        assert r["sex"] in ("F", "M") and float(r["severity"]) >= 0.0
        f = next((root / "site-c" / r["series_dir"]).iterdir())
        d = pydicom.dcmread(f, stop_before_pixels=True)
        assert d.PatientAge == f"{int(float(r['age'])):03d}Y" and d.PatientSex == r["sex"]
        if r["group"] == "CN":
            assert 50.0 <= float(r["age"]) < 90.0 and float(r["severity"]) == 0.0
    ids = [r["PatientID"] for r in _read_csv(root / "_truth" / "site-c.csv")]
    assert len(set(ids)) == len(ids)


def test_memory_clinic_option_checked(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="memory_clinic"):
        generate_federation(tmp_path / "a", "fdg-ad", "tiny", memory_clinic="no")
    with pytest.raises(ValueError, match="unknown options"):
        generate_federation(tmp_path / "b", "fdg-ad", "tiny", memory_clinics=False)


def test_cli_no_memory_clinic(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "fed"
    args = ["generate", "--out", str(out), "--sites", "2", "--subjects-scale", "0.25"]
    assert main([*args, "--no-memory-clinic", "--workers", "1"]) == 0
    manifest = __import__("json").loads((out / "federation.json").read_text())
    assert manifest["options"]["memory_clinic"] is False and manifest["n_unlabelled"] == 0
    assert "unlabelled" not in capsys.readouterr().out
