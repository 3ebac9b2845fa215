"""Disease models, Centiloid equations and subject rendering."""

from __future__ import annotations

import numpy as np
import pytest

from fedmi.simulations import phantom as P

GRID = P.WORKING_GRID_3MM


@pytest.mark.parametrize(
    ("tracer", "slope", "intercept"),
    [
        ("florbetapir", 175.4, -182.3),
        ("florbetaben", 153.4, -154.9),
        ("flutemetamol", 121.42, -121.16),
    ],
)
def test_centiloid_equations_are_the_published_lines(
    tracer: str, slope: float, intercept: float
) -> None:
    for cl in (0.0, 24.0, 100.0):
        assert P.suvr_from_centiloid(cl, tracer) == (cl - intercept) / slope
        assert P.centiloid_from_suvr(P.suvr_from_centiloid(cl, tracer), tracer) == pytest.approx(cl)
    assert P.suvr_from_centiloid(100.0, "florbetapir") == (100 + 182.3) / 175.4


def test_pib_anchors() -> None:
    assert P.suvr_from_centiloid(0.0, "pib") == pytest.approx(1.009, abs=1e-12)
    assert P.suvr_from_centiloid(100.0, "pib") == pytest.approx(2.076, abs=1e-12)
    assert P.CENTILOID_EQUATIONS["pib"][0] == pytest.approx(93.72, abs=0.01)


def _draw(task: str, seed: int, **kw) -> P.SubjectTruth:
    probs = {"fdg-ad": {"CN": 1.0}, "amyloid": {"AD": 1.0}, "dat-pd": {"HC": 1.0}}[task]
    kw.setdefault("group_probs", probs)
    return P.draw_subject(task, np.random.default_rng(seed), **kw)


def test_amyloid_true_suvr_is_exact() -> None:
    basis = P.build_basis("amyloid", GRID)
    for seed, tracer in enumerate(["pib", "florbetapir", "florbetaben", "flutemetamol"]):
        t = _draw("amyloid", seed, tracer=tracer, group_probs={"CN": 0.5, "AD": 0.5})
        c = P.subject_coefficients(t, basis)
        ctx = basis.region_means["cortex_composite"] @ c
        wc = basis.region_means["whole_cerebellum"] @ c
        assert ctx / wc == pytest.approx(t.suvr_true, rel=1e-9)
        assert wc == pytest.approx(t.global_level, rel=1e-9)
        assert t.suvr_true == pytest.approx(P.suvr_from_centiloid(t.centiloid, tracer), abs=1e-5)
        assert t.amyloid_positive_true == (t.centiloid >= P.AMYLOID_THRESHOLD_CL)


def test_fdg_ad_lowers_pcc_relative_to_pons() -> None:
    basis = P.build_basis("fdg-ad", GRID)
    cn = _draw("fdg-ad", 1)
    ad = _draw("fdg-ad", 1)
    cn.severity, ad.severity = 0.0, 1.0
    ratio = {}
    for name, t in (("cn", cn), ("ad", ad)):
        c = P.subject_coefficients(t, basis)
        ratio[name] = (basis.region_means["posterior_cingulate"] @ c) / (
            basis.region_means["pons"] @ c
        )
    assert 0.75 < ratio["ad"] / ratio["cn"] < 0.9  # −10…−25 % at severity 1 (§2.3)
    assert ratio["cn"] > 1.3  # cortex well above pons in FDG


def test_fdg_mci_labels_and_converters() -> None:
    subjects = [_draw("fdg-ad", s, group_probs={"MCI": 1.0}) for s in range(200)]
    assert {t.label for t in subjects} == {"MCI-stable", "MCI-converter"}
    sev_conv = np.mean([t.severity for t in subjects if t.converter])
    sev_stable = np.mean([t.severity for t in subjects if not t.converter])
    assert sev_conv > sev_stable


def test_dat_pd_posterior_putamen_first() -> None:
    subjects = [_draw("dat-pd", s, group_probs={"PD": 1.0}, label_noise=0.0) for s in range(20)]
    for t in subjects:
        r = t.dat_ratio_true
        for side in "LR":
            assert r[f"putamen_post_{side}"] < r[f"putamen_ant_{side}"] < r[f"caudate_{side}"]
        other = "L" if t.affected_side == "R" else "R"
        assert r[f"putamen_post_{t.affected_side}"] < r[f"putamen_post_{other}"] * 1.1
    hc = _draw("dat-pd", 3)
    young = P.DAT_TRUE_RATIO_YOUNG
    assert 0.5 * young < hc.dat_ratio_true["caudate_L"] < 1.4 * young
    row = hc.row()
    assert row["putamen_sbr_true_L"] == pytest.approx(
        (hc.dat_ratio_true["putamen_ant_L"] + hc.dat_ratio_true["putamen_post_L"]) / 2 - 1, abs=1e-3
    )


def test_dat_swedd_label_noise() -> None:
    t = _draw("dat-pd", 0, group_probs={"PD": 1.0}, label_noise=1.0)
    assert t.label == "PD" and t.swedd and t.label_noise
    assert min(t.dat_ratio_true.values()) > 2.0


def test_subject_volume_geometry() -> None:
    """The hottest DaT voxel lands in the striatum after MNI → LPS → scanner index."""
    t = _draw("dat-pd", 5)
    shape, spacing = (48, 48, 40), (4.0, 4.0, 4.0)
    offset = (3.0, -12.0, -400.0)
    aff = P.scanner_affine(shape, spacing, offset, slice_direction=-1)
    vol = P.subject_volume(t, shape, aff, table_offset_lps=offset, grid=GRID)
    assert vol.shape == shape and vol.max() > 0
    ijk = np.array(np.unravel_index(np.argmax(vol), shape) + (1,), dtype=float)
    lps = aff @ ijk
    xf = P.mni_to_scanner_lps(t.scale, t.rotation_deg, t.shift_mm, offset)
    mni = np.linalg.inv(xf) @ lps
    assert 8 < abs(mni[0]) < 35 and -20 < mni[1] < 25 and -10 < mni[2] < 25


def test_pet_noise_level() -> None:
    rng = np.random.default_rng(0)
    flat = np.full((40, 40, 40), 5.0, dtype=np.float32)
    noisy = P.add_pet_noise(flat, 0.1, rng)
    assert noisy.std() / noisy.mean() == pytest.approx(0.1, rel=0.1)


def test_spect_counts_total() -> None:
    rng = np.random.default_rng(0)
    c = P.spect_counts(np.ones((20, 20, 20)), 1e6, rng)
    assert c.dtype == np.uint16 and c.sum() == pytest.approx(1e6, rel=0.01)
