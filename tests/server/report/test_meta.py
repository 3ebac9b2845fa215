"""DerSimonian–Laird meta-analysis against statsmodels' ``combine_effects`` on fixed inputs."""

from __future__ import annotations

import math

import numpy as np
import pytest
from statsmodels.stats.meta_analysis import combine_effects

from fedmi.server.report.meta import dersimonian_laird
from fedmi.server.report.validation import auc_variance, meta_analysis

CASES = {
    "heterogeneous AUCs": ([0.82, 0.74, 0.91, 0.68, 0.79], [0.0016, 0.0025, 0.0009, 0.0036, 0.002]),
    "two sites": ([0.70, 0.90], [0.001, 0.002]),
    "moderate": ([0.71, 0.77, 0.84, 0.66], [0.003, 0.002, 0.004, 0.0025]),
}
HOMOGENEOUS = ([0.80, 0.81, 0.79], [0.004, 0.005, 0.006])  # Q < df


@pytest.mark.parametrize("name", sorted(CASES))
def test_equals_statsmodels_combine_effects(name):
    effects, variances = CASES[name]
    ours = dersimonian_laird(effects, variances)
    ref = combine_effects(np.array(effects), np.array(variances), method_re="dl")
    frame = ref.summary_frame()
    assert ours.estimate == pytest.approx(ref.mean_effect_re, rel=1e-12)
    assert ours.se == pytest.approx(ref.sd_eff_w_re, rel=1e-12)
    assert ours.fixed == pytest.approx(ref.mean_effect_fe, rel=1e-12)
    assert ours.fixed_se == pytest.approx(ref.sd_eff_w_fe, rel=1e-12)
    assert ours.tau2 == pytest.approx(ref.tau2, abs=1e-15)
    assert ours.q == pytest.approx(ref.q, rel=1e-12)
    assert ours.i2 == pytest.approx(ref.i2, abs=1e-12)
    low, high = frame.loc["random effect", ["ci_low", "ci_upp"]]
    assert (ours.ci_low, ours.ci_high) == pytest.approx((low, high), rel=1e-12)


def test_homogeneous_sites_truncate_tau2_at_zero():
    """Q < df: DerSimonian–Laird truncates τ² at 0, so the pooled estimate is the fixed effect.

    statsmodels 0.15's ``combine_effects(method_re="dl")`` leaves the moment estimate
    negative here (negative weights); the fixed-effect part is the reference instead.
    """
    ours = dersimonian_laird(*HOMOGENEOUS)
    ref = combine_effects(np.array(HOMOGENEOUS[0]), np.array(HOMOGENEOUS[1]), method_re="dl")
    assert ref.tau2 < 0 and ours.tau2 == 0.0 and ours.i2 == 0.0
    assert ours.estimate == pytest.approx(ref.mean_effect_fe, rel=1e-12)
    assert ours.se == pytest.approx(ref.sd_eff_w_fe, rel=1e-12)
    assert ours.q == pytest.approx(ref.q, rel=1e-9)


def test_prediction_interval_exact():
    res = dersimonian_laird(*CASES["heterogeneous AUCs"])
    from scipy import stats

    half = stats.t.ppf(0.975, 3) * np.sqrt(res.tau2 + res.se**2)
    assert (res.pi_low, res.pi_high) == pytest.approx((res.estimate - half, res.estimate + half))
    assert dersimonian_laird(*CASES["two sites"]).pi_low is None  # k < 3


def test_needs_two_estimates_with_positive_variances():
    with pytest.raises(ValueError, match="at least two"):
        dersimonian_laird([0.8], [0.01])
    with pytest.raises(ValueError, match="positive"):
        dersimonian_laird([0.8, 0.7], [0.01, 0.0])


def test_perfect_site_variance_is_floored():
    row = {"site_id": "s", "auc": 1.0, "auc_se": 0.0, "n": 30, "n_positive": 10}
    assert auc_variance(row) == pytest.approx(1 / (4 * 10 * 20))
    rows = [row, {"site_id": "t", "auc": 0.8, "auc_se": 0.05, "n": 40, "n_positive": 20}]
    out = meta_analysis(rows)
    assert out is not None and out["k"] == 2 and out["sites"] == ["s", "t"]


def test_pooled_auc_intervals_stay_inside_unit_interval():
    """Three small sites near AUC 1 (the tiny-preset case that gave 0.50–1.24 and −1.52–3.27
    on the raw scale): on the logit scale every interval end is an AUC."""
    rows = [
        {"site_id": "a", "auc": 1.0, "auc_se": 0.0, "n": 6, "n_positive": 3},
        {"site_id": "b", "auc": 0.55, "auc_se": 0.25, "n": 6, "n_positive": 3},
        {"site_id": "c", "auc": 0.98, "auc_se": 0.03, "n": 8, "n_positive": 4},
    ]
    out = meta_analysis(rows)
    assert out is not None and out["scale"].startswith("logit")
    for key in ("estimate", "ci_low", "ci_high", "pi_low", "pi_high", "fixed"):
        assert 0.0 <= out[key] <= 1.0, key
    assert out["ci_low"] <= out["estimate"] <= out["ci_high"]
    assert out["pi_low"] <= out["ci_low"] and out["pi_high"] >= out["ci_high"]


def test_logit_pooling_matches_statsmodels_back_transformed():
    """Exact numbers: pooling the logits by statsmodels and taking expit gives our AUCs."""
    rows = [
        {"site_id": "a", "auc": 0.9, "auc_se": 0.05, "n": 40, "n_positive": 20},
        {"site_id": "b", "auc": 0.8, "auc_se": 0.06, "n": 50, "n_positive": 25},
        {"site_id": "c", "auc": 0.95, "auc_se": 0.03, "n": 60, "n_positive": 30},
    ]
    y = np.array([math.log(r["auc"] / (1 - r["auc"])) for r in rows])
    v = np.array([r["auc_se"] ** 2 / (r["auc"] * (1 - r["auc"])) ** 2 for r in rows])
    ref = combine_effects(y, v, method_re="dl")
    re_row = ref.summary_frame().loc["random effect"]
    out = meta_analysis(rows)
    assert out is not None
    assert out["estimate"] == pytest.approx(1 / (1 + math.exp(-re_row["eff"])), abs=1e-6)
    assert out["ci_low"] == pytest.approx(1 / (1 + math.exp(-re_row["ci_low"])), abs=1e-6)
    assert out["logit"]["estimate"] == pytest.approx(re_row["eff"], abs=1e-6)
