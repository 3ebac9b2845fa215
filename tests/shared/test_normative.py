"""The normative model's maths: recovery, federated = pooled, JSON, scores."""

from __future__ import annotations

import json

import numpy as np
import pytest

from fedmi.shared import normative as nm

R = 6
NAMES = tuple(f"r{i}_L" for i in range(R))


def _cohort(rng: np.random.Generator, n: int, offset: np.ndarray, slope: np.ndarray, sd=0.02):
    ages = rng.uniform(50, 90, n)
    sexes = rng.choice(["F", "M"], n)
    x = np.array([nm.design_row(a, s) for a, s in zip(ages, sexes, strict=True)])
    y = offset + np.outer(x[:, 1], slope) + np.outer(x[:, 2], 0.01 * np.ones(R))
    return y + rng.normal(0, sd, (n, R)), list(ages), list(sexes)


def _sites(seed: int = 0, n=(40, 60, 30)):
    rng = np.random.default_rng(seed)
    slope = np.linspace(-0.08, 0.0, R)  # per 20 years
    offsets = [np.full(R, o) for o in (0.0, 0.03, -0.02)]
    return [_cohort(rng, k, o, slope) for k, o in zip(n, offsets, strict=True)], slope, offsets


def test_design_row_clips_age_and_codes_sex() -> None:
    assert nm.design_row(70, "F").tolist() == [1.0, 0.0, 0.5]
    assert nm.design_row(90, "M").tolist() == [1.0, 1.0, -0.5]
    assert nm.design_row(120, "O").tolist() == [1.0, nm.AGE_CLIP, 0.0]
    assert nm.design_row(None, None).tolist() == [1.0, 0.0, 0.0]
    with pytest.raises(nm.NormativeError, match="finite"):
        nm.design_row(float("nan"), "F")


def test_recovers_known_age_slope_and_site_offset() -> None:
    sites, slope, offsets = _sites()
    centre = np.zeros(R)
    stats = [nm.site_statistics(y, a, s, centre) for y, a, s in sites]
    model = nm.fit(stats, NAMES, centre)
    assert np.allclose(model.slopes[0], slope, atol=0.01)
    assert np.allclose(model.slopes[1], 0.01, atol=0.01)
    assert np.allclose(model.sigma2, 0.02**2, rtol=0.3)
    # a new site with offset 0.03 gets it back from its own normals (BLUP, shrunk a little)
    rng = np.random.default_rng(5)
    y, a, s = _cohort(rng, 30, np.full(R, 0.05), slope)
    o, v = model.site_offset(y, a, s)
    assert np.allclose(o + model.intercept, 0.05, atol=0.015)
    assert np.all(v <= model.tau2)


def test_own_offsets_leave_each_normal_out_of_its_own_reference() -> None:
    sites, slope, _ = _sites()
    centre = np.zeros(R)
    model = nm.fit([nm.site_statistics(y, a, s, centre) for y, a, s in sites], NAMES, centre)
    rng = np.random.default_rng(9)
    y, a, s = _cohort(rng, 8, np.full(R, -0.06), slope)  # a new site that reads low
    normal = [True] * 5 + [False] * 3
    out = model.own_offsets(y, a, s, normal)
    assert len(out) == 8
    for i in range(5):  # each normal: the offset of the four other normals, exactly
        rest = [j for j in range(5) if j != i]
        o, v = model.site_offset(y[rest], [a[j] for j in rest], [s[j] for j in rest])
        assert np.array_equal(out[i][0], o) and np.array_equal(out[i][1], v)
    o5, v5 = model.site_offset(y[:5], a[:5], s[:5])  # the others: all five normals
    for i in range(5, 8):
        assert np.array_equal(out[i][0], o5) and np.array_equal(out[i][1], v5)
    # what it is for: the site's low reading no longer makes its normals abnormal
    plain = np.mean([model.zscores(y[i], a[i], s[i]) < -2 for i in range(5)])
    own = np.mean([model.zscores(y[i], a[i], s[i], out[i]) < -2 for i in range(5)])
    assert plain > 0.5 and own < 0.2
    # no normals: the population model (zero offset, full τ²)
    none = model.own_offsets(y, a, s, [False] * 8)
    assert all(np.all(o == 0) and np.array_equal(v, model.tau2) for o, v in none)


def test_own_offsets_need_one_flag_per_scan() -> None:
    sites, _, _ = _sites()
    centre = np.zeros(R)
    model = nm.fit([nm.site_statistics(y, a, s, centre) for y, a, s in sites], NAMES, centre)
    y, a, s = sites[0]
    with pytest.raises(nm.NormativeError, match="normal flags"):
        model.own_offsets(y, a, s, [True] * (len(a) - 1))


def test_federated_fit_equals_pooled_fit() -> None:
    sites, _, _ = _sites(1)
    centre = np.full(R, 0.01)
    stats = [nm.site_statistics(y, a, s, centre, clip=0.05) for y, a, s in sites]
    y = np.vstack([t[0] for t in sites])
    ages = [v for t in sites for v in t[1]]
    sexes = [v for t in sites for v in t[2]]
    ids = [f"s{i}" for i, t in enumerate(sites) for _ in t[0]]
    for adjust in (True, False):
        fed = nm.fit(stats, NAMES, centre, adjust_age=adjust)
        pooled = nm.fit_pooled(y, ages, sexes, ids, NAMES, centre, clip=0.05, adjust_age=adjust)
        for key in ("intercept", "slopes", "sigma2", "tau2"):
            assert np.allclose(getattr(fed, key), getattr(pooled, key), atol=1e-6, rtol=0), key


def test_clipping_bounds_one_scans_effect() -> None:
    centre = np.zeros(R)
    big = np.full((1, R), 10.0)
    s = nm.site_statistics(big, [95], ["F"], centre, clip=0.5)
    sens = nm.sensitivities(0.5)
    assert np.linalg.norm(s.xty) <= sens["xty"] + 1e-12
    assert np.linalg.norm(s.yty) <= sens["yty"] + 1e-12
    assert np.linalg.norm(s.xtx) <= sens["xtx"] + 1e-12


def test_json_round_trip_and_rejections() -> None:
    sites, _, _ = _sites()
    centre = np.zeros(R)
    model = nm.fit([nm.site_statistics(y, a, s, centre) for y, a, s in sites], NAMES, centre)
    back = nm.NormativeModel.from_json(model.to_json())
    assert np.allclose(
        back.zscores(sites[0][0][0], 70, "F"), model.zscores(sites[0][0][0], 70, "F")
    )
    data = json.loads(model.to_json())
    with pytest.raises(nm.NormativeError, match="unknown \\['extra'\\]"):
        nm.NormativeModel.from_dict({**data, "extra": 1})
    with pytest.raises(nm.NormativeError, match="sigma2"):
        nm.NormativeModel.from_dict({**data, "sigma2": [0.0] * R})
    with pytest.raises(nm.NormativeError, match="tau2"):
        nm.NormativeModel.from_dict({**data, "tau2": [1.0] * (R - 1)})
    with pytest.raises(nm.NormativeError, match="schema_version"):
        nm.NormativeModel.from_dict({**data, "schema_version": 99})


def test_bad_statistics_are_refused() -> None:
    with pytest.raises(nm.NormativeError, match="shapes"):
        nm.NormativeStatistics(1.0, np.eye(2), np.zeros((3, R)), np.zeros(R))
    with pytest.raises(nm.NormativeError, match="NaN"):
        nm.NormativeStatistics(1.0, np.eye(3) * np.nan, np.zeros((3, R)), np.zeros(R))
    with pytest.raises(nm.NormativeError, match="too few"):
        nm.fit(
            [nm.site_statistics(np.zeros((2, R)), [70, 71], ["F", "M"], np.zeros(R))],
            NAMES,
            np.zeros(R),
        )
    with pytest.raises(nm.NormativeError, match="no site"):
        nm.fit([], NAMES, np.zeros(R))


def test_anomaly_score_regions_and_pattern() -> None:
    z = np.array([-3.0, -1.0, 0.5, -2.5, 0.0, 1.0])
    assert nm.anomaly_score(z, k=2) == pytest.approx(2.75)
    assert nm.regions_below(z, NAMES) == [("r0_L", -3.0), ("r3_L", -2.5)]
    names = ("occipital_L", "frontal_lateral_L", "insula_R", "precuneus_L", "occipital_R", "x")
    z = np.array([0.0, -4.0, -3.0, -1.0, 0.0, 0.0])
    assert nm.pattern_match(z, names, "FTD")
    assert not nm.pattern_match(z, names, "DLB")
    with pytest.raises(nm.NormativeError, match="unknown disorder"):
        nm.pattern_match(z, names, "XYZ")


def test_regional_profile_is_relative_to_the_preserved_regions() -> None:
    names = ("cerebellum_L", "frontal_lateral_L", "thalamus_R", "occipital_L")
    m = np.array([1.0, 2.0, 4.0, 0.5])
    prof = nm.regional_profile(m, names)
    assert np.allclose(prof, nm.regional_profile(3.7 * m, names))  # the global level drops out
    assert prof[0] + prof[2] == pytest.approx(0.0)  # the reference regions average to 0
    assert prof[1] == pytest.approx(np.log(2.0) - np.log(2.0))  # 2 / geometric mean(1, 4)
    with pytest.raises(nm.NormativeError, match="reference regions"):
        nm.regional_profile(m, ("a", "b", "c", "d"))
    with pytest.raises(nm.NormativeError, match="one regional mean per region"):
        nm.regional_profile(m, names[:3])


def test_profile_of_a_volume_on_the_template_grid() -> None:
    from fedmi.shared.tasks import get_task

    grid = get_task("fdg-ad").grid
    vol = np.ones(grid.shape)
    prof, names = nm.profile_of(vol, grid)
    assert len(names) == len(prof) > 40 and np.allclose(prof, 0.0)
    with pytest.raises(nm.NormativeError, match="not on the grid"):
        nm.regional_means(np.ones(10), grid)


def test_normals_of_one_sex_or_unknown_age_still_fit_like_pooled() -> None:
    rng = np.random.default_rng(3)
    sites = []
    for off in (0.0, 0.02):
        y = off + rng.normal(0, 0.02, (20, R))
        sites.append((y, [None] * 20, ["F"] * 20))  # no age, one sex: a singular design
    centre = np.zeros(R)
    fed = nm.fit([nm.site_statistics(y, a, s, centre) for y, a, s in sites], NAMES, centre)
    y = np.vstack([t[0] for t in sites])
    pooled = nm.fit_pooled(y, [None] * 40, ["F"] * 40, ["a"] * 20 + ["b"] * 20, NAMES, centre)
    for key in ("intercept", "slopes", "sigma2"):
        assert np.allclose(getattr(fed, key), getattr(pooled, key), atol=1e-9), key
    assert np.allclose(fed.intercept, 0.01, atol=0.01)
