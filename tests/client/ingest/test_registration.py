"""Spatial normalisation: a posed scan is brought back, bad scans are rejected with a reason,
QC thresholds give exact reason codes and flags, settings are part of the cache key."""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage

from fedmi.client.ingest import cache, registration
from fedmi.client.ingest.errors import FLAGS, REASONS, IngestError
from fedmi.client.ingest.geometry import LPS_TO_RAS
from fedmi.client.ingest.montage import montage_rows, write_montage
from fedmi.client.ingest.pipeline import ingest_site
from fedmi.client.ingest.quality import QcThresholds, Quality, decompose, judge
from fedmi.client.ingest.registration import RegistrationSettings
from fedmi.client.ingest.report import load_accepted
from fedmi.client.ingest.template import to_template
from fedmi.shared.anatomy import tissue_on_grid
from fedmi.shared.grid import Grid
from fedmi.shared.tasks import get_task
from fedmi.simulations.phantom.basis import WORKING_GRID_3MM
from fedmi.simulations.phantom.render import mni_to_scanner_lps, render_on_scanner, scanner_affine
from tests.client.ingest.helpers import write_labels, write_pet

SPEC = get_task("fdg-ad")
SHAPE, SPACING = (64, 64, 48), (4.0, 4.0, 4.0)


@functools.lru_cache(maxsize=1)
def _fdg_template_space() -> np.ndarray:
    t = tissue_on_grid(WORKING_GRID_3MM)
    vol = 4.0 * t["gm"] + 1.2 * t["wm"] + 0.2 * t["csf"]
    return ndimage.gaussian_filter(vol, 1.0).astype(np.float32)


def _posed_scan(scale, rotation, shift) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A tilted, scaled FDG-like head on a 4 mm scanner grid: volume, RAS affine, truth map."""
    xf = mni_to_scanner_lps(scale, rotation, shift)
    aff = scanner_affine(SHAPE, SPACING)
    vol = render_on_scanner(_fdg_template_space(), WORKING_GRID_3MM, xf, SHAPE, aff)
    return vol, LPS_TO_RAS @ aff, LPS_TO_RAS @ xf


def _surface_points() -> np.ndarray:
    g = Grid((65, 77, 63), (3.0,) * 3, (-96.5, -132.5, -70.5))
    t = tissue_on_grid(g)
    m = (t["gm"] + t["wm"]) >= 0.5
    return g.world_coordinates()[:, m & ~ndimage.binary_erosion(m)]


def _mean_displacement(matrix: np.ndarray, truth: np.ndarray) -> float:
    pts = _surface_points()
    est = matrix[:3, :3] @ pts + matrix[:3, 3:4]
    true = truth[:3, :3] @ pts + truth[:3, 3:4]
    return float(np.linalg.norm(est - true, axis=0).mean())


def test_rotated_and_scaled_scan_is_brought_back_within_2_mm() -> None:
    scale, rotation, shift = (1.1, 0.91, 1.05), (18.0, -12.0, 10.0), (6.0, -9.0, 5.0)
    vol, aff, truth = _posed_scan(scale, rotation, shift)
    result = to_template(vol, aff, SPEC)
    assert _mean_displacement(result.registration.matrix, truth) < 2.0
    sizes, angle, _, det = decompose(result.registration.matrix)
    assert det > 0 and 15.0 < angle < 30.0
    assert result.quality.similarity > 0.9 and result.quality.flags == ()
    # the centre-of-mass translation of earlier versions leaves the head far off
    legacy = to_template(vol, aff, SPEC, settings=RegistrationSettings(method="translation"))
    assert _mean_displacement(legacy.registration.matrix, truth) > 8.0


def test_scan_of_another_body_part_is_rejected_with_its_reason() -> None:
    g = Grid(SHAPE, SPACING, (-126.0, -126.0, -94.0))
    x, y, z = g.world_coordinates()
    body = ((x / 160.0) ** 2 + (y / 100.0) ** 2 <= 1.0).astype(np.float32)  # a torso
    heart = np.exp(-((x - 30) ** 2 + (y + 20) ** 2 + (z - 20) ** 2) / (2 * 25.0**2))
    bladder = np.exp(-(x**2 + y**2 + (z + 70) ** 2) / (2 * 15.0**2))
    vol = 0.5 * body + 4.0 * heart + 8.0 * bladder
    with pytest.raises(IngestError) as err:
        to_template(vol.astype(np.float32), g.affine, SPEC, name="torso")
    assert err.value.reason in ("not_brain", "registration_failed")
    assert "torso" in err.value.message


def test_failed_registration_is_rejected(monkeypatch: pytest.MonkeyPatch) -> None:
    vol, aff, _ = _posed_scan((1.0, 1.0, 1.0), (0.0, 0.0, 0.0), (0.0, 0.0, 0.0))

    def fail(*args, **kwargs):
        raise RuntimeError("too few samples")

    monkeypatch.setattr("fedmi.client.ingest.template.register", fail)
    with pytest.raises(IngestError) as err:
        to_template(vol, aff, SPEC, name="scan X")
    assert err.value.reason == "registration_failed" and "scan X" in err.value.message


_GOOD = Quality(0.95, 1.0, 1.0, (0.97, 1.0, 1.03), 8.0, 1.06, 1.0)


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"similarity": 0.2}, "not_brain"),
        ({"similarity": 0.5}, "registration_failed"),
        ({"determinant": -1.0}, "implausible_registration"),
        ({"scales": (0.6, 1.0, 1.0)}, "implausible_registration"),
        ({"scales": (1.0, 1.0, 1.4)}, "implausible_registration"),
        ({"anisotropy": 1.5}, "implausible_registration"),
        ({"rotation_deg": 60.0}, "implausible_registration"),
        ({"coverage": 0.8}, "incomplete_coverage"),
        ({"reference_coverage": 0.7}, "incomplete_coverage"),
    ],
)
def test_reject_thresholds(change: dict, reason: str) -> None:
    with pytest.raises(IngestError) as err:
        judge(Quality(**{**_GOOD.__dict__, **change}), QcThresholds(), "s")
    assert err.value.reason == reason and reason in REASONS


@pytest.mark.parametrize(
    ("change", "flags"),
    [
        ({}, ()),
        ({"similarity": 0.8}, ("low_similarity",)),
        ({"coverage": 0.95}, ("partial_coverage",)),
        ({"reference_coverage": 0.9}, ("partial_coverage",)),
        ({"scales": (0.84, 1.0, 1.0)}, ("unusual_head_size",)),
        ({"rotation_deg": 30.0}, ("large_tilt",)),
    ],
)
def test_flag_thresholds(change: dict, flags: tuple[str, ...]) -> None:
    q = judge(Quality(**{**_GOOD.__dict__, **change}), QcThresholds(), "s")
    assert q.flags == flags and all(f in FLAGS for f in flags)


def test_decompose_exact() -> None:
    m = np.eye(4)
    c, s = np.cos(np.radians(30)), np.sin(np.radians(30))
    m[:3, :3] = np.array([[1, 0, 0], [0, c, -s], [0, s, c]]) @ np.diag([1.1, 0.9, 1.0])
    sizes, angle, aniso, det = decompose(m)
    assert sizes == pytest.approx((0.9, 1.0, 1.1))
    assert angle == pytest.approx(30.0) and aniso == pytest.approx(1.1 / 0.9)
    assert det == pytest.approx(0.99)


def test_unknown_method_is_refused() -> None:
    with pytest.raises(ValueError, match="spatial normalisation"):
        RegistrationSettings(method="demons")
    assert registration.METHODS == ("translation", "affine", "affine+bspline")


def test_registration_settings_are_part_of_the_cache_key(tmp_path: Path) -> None:
    site = tmp_path / "site"
    write_pet(site / "dicom" / "pet")
    write_labels(site, {"P01": "CN"})
    state = tmp_path / "state"
    first = ingest_site(site, "fdg-ad", state, registration=RegistrationSettings("translation"))
    again = ingest_site(site, "fdg-ad", state, registration=RegistrationSettings("translation"))
    assert again.accepted[0]["from_cache"] and not first.accepted[0]["from_cache"]
    affine = ingest_site(site, "fdg-ad", state)
    assert not affine.accepted[0]["from_cache"]
    assert "similarity" in affine.accepted[0]["qc"] and "similarity" not in first.accepted[0]["qc"]
    assert cache.series_key("u", [], "fdg-ad", "a") != cache.series_key("u", [], "fdg-ad", "b")
    # the QC montage of fedmi-site check: flagged scans first, a PNG
    rows = load_accepted(state)
    rows[0]["qc"]["flags"] = ["large_tilt"]
    assert montage_rows([*rows, *rows], 1) == [rows[0]]
    png = write_montage(rows, SPEC, tmp_path / "qc" / "montage.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
