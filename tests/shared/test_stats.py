import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from fedmi.shared.contract import HIST_BINS, THRESHOLDS
from fedmi.shared.stats import (
    auc_from_histograms,
    brier_score,
    calibration_statistics,
    delong_auc,
    expected_calibration_error,
    operating_point,
    pool_statistics,
    predictive_values,
    reliability_curve,
    roc_from_histograms,
    sufficient_statistics,
    wilson_interval,
)


def test_auc_from_histograms_exact_small_case():
    # positives in bins 2 and 3, negatives in bins 0 and 2:
    # pairs: (2,0) win, (2,2) tie, (3,0) win, (3,2) win -> (3 + 0.5) / 4
    res = auc_from_histograms([0, 0, 1, 1], [1, 0, 1, 0])
    assert res.auc == pytest.approx(0.875)
    assert res.bound == pytest.approx(0.125)
    assert (res.n_pos, res.n_neg) == (2, 2)


def test_histogram_auc_within_its_bound_of_exact_auc():
    rng = np.random.default_rng(3)
    labels = rng.integers(0, 2, 500)
    scores = 1 / (1 + np.exp(-(rng.normal(size=500) + 1.2 * labels)))
    st = sufficient_statistics(scores, labels)
    res = auc_from_histograms(st["hist-pos"], st["hist-neg"])
    exact = roc_auc_score(labels, scores)
    assert abs(res.auc - exact) <= res.bound + 1e-12
    assert res.bound < 0.01


def test_sufficient_statistics_counts():
    scores = np.array([0.05, 0.45, 0.5, 0.95])
    labels = np.array([0, 1, 0, 1])
    st = sufficient_statistics(scores, labels)
    assert sum(st["hist-pos"]) == 2 and sum(st["hist-neg"]) == 2
    assert len(st["hist-pos"]) == HIST_BINS and len(st["tp"]) == len(THRESHOLDS)
    op = operating_point(st, 0.5)
    # >= 0.5 is positive: 0.5 (neg) and 0.95 (pos)
    assert (op.tp, op.fp, op.tn, op.fn) == (1, 1, 1, 1)
    assert op.sensitivity == 0.5 and op.specificity == 0.5


def test_pool_statistics_sums_sites():
    a = sufficient_statistics(np.array([0.1, 0.9]), np.array([0, 1]))
    b = sufficient_statistics(np.array([0.2, 0.8, 0.7]), np.array([0, 1, 1]))
    pooled = pool_statistics([a, b])
    both = sufficient_statistics(np.array([0.1, 0.9, 0.2, 0.8, 0.7]), np.array([0, 1, 0, 1, 1]))
    assert pooled == both


def test_auc_undefined_with_one_class():
    res = auc_from_histograms([1, 2], [0, 0])
    assert np.isnan(res.auc)


# --- calibration, Brier, intervals, ROC, predictive values (fixed inputs, exact numbers) ---


def test_calibration_statistics_and_brier_exact():
    scores = np.array([0.05, 0.15, 0.12, 0.55, 0.95, 1.0])
    labels = np.array([0, 0, 1, 1, 1, 0])
    cal = calibration_statistics(scores, labels)
    assert cal["cal-count"] == [1, 2, 0, 0, 0, 1, 0, 0, 0, 2]
    assert cal["cal-sum-label"] == [0, 1, 0, 0, 0, 1, 0, 0, 0, 1]
    assert cal["cal-sum-prob"] == pytest.approx([0.05, 0.27, 0, 0, 0, 0.55, 0, 0, 0, 1.95])
    # Σ(p − y)² = .0025 + .0225 + .7744 + .2025 + .0025 + 1 = 2.0044
    assert cal["sq-error-sum"] == pytest.approx(2.0044)
    assert brier_score(cal["sq-error-sum"], 6) == pytest.approx(2.0044 / 6)
    # ECE = (|.05−0| + |.27−1| + |.55−1| + |1.95−1|) / 6 = 2.18 / 6
    ece = expected_calibration_error(cal["cal-count"], cal["cal-sum-prob"], cal["cal-sum-label"])
    assert ece == pytest.approx(2.18 / 6)
    curve = reliability_curve(cal["cal-count"], cal["cal-sum-prob"], cal["cal-sum-label"])
    assert [(p.bin, p.n) for p in curve] == [(0, 1), (1, 2), (5, 1), (9, 2)]
    assert curve[1].mean_predicted == pytest.approx(0.135) and curve[1].observed == 0.5


def test_brier_matches_scikit_learn():
    from sklearn.metrics import brier_score_loss

    rng = np.random.default_rng(1)
    labels = rng.integers(0, 2, 200)
    scores = rng.random(200)
    cal = calibration_statistics(scores, labels)
    assert brier_score(cal["sq-error-sum"], 200) == pytest.approx(brier_score_loss(labels, scores))


@pytest.mark.parametrize(("k", "n"), [(0, 10), (3, 10), (10, 10), (45, 50), (1, 200)])
def test_wilson_interval_matches_statsmodels(k, n):
    from statsmodels.stats.proportion import proportion_confint

    assert wilson_interval(k, n) == pytest.approx(proportion_confint(k, n, method="wilson"))


def test_wilson_interval_exact_small_case():
    # 8 of 10: the Wilson 95 % interval is 0.4902 to 0.9433
    lo, hi = wilson_interval(8, 10)
    assert (round(lo, 4), round(hi, 4)) == (0.4902, 0.9433)


def _delong_reference(scores, labels):
    """Brute-force DeLong: pairwise kernel, O(m·n)."""
    pos, neg = scores[labels == 1], scores[labels == 0]
    psi = (pos[:, None] > neg[None, :]) + 0.5 * (pos[:, None] == neg[None, :])
    v10, v01 = psi.mean(axis=1), psi.mean(axis=0)
    return psi.mean(), np.sqrt(v10.var(ddof=1) / pos.size + v01.var(ddof=1) / neg.size)


def test_delong_auc_equals_brute_force_and_scikit_learn():
    rng = np.random.default_rng(7)
    labels = rng.integers(0, 2, 120)
    scores = np.round(rng.random(120) + 0.3 * labels, 2)  # rounded: ties present
    d = delong_auc(scores, labels)
    auc, se = _delong_reference(scores, labels)
    assert d.auc == pytest.approx(roc_auc_score(labels, scores)) == pytest.approx(auc)
    assert d.se == pytest.approx(se)
    assert d.ci_low == pytest.approx(d.auc - 1.959963984540054 * se)


def test_delong_auc_exact_small_case():
    # positives 0.9, 0.4; negatives 0.5, 0.1: V10 = (1, 0.5), V01 = (0.5, 1) -> auc 0.75,
    # var = 0.125/2 + 0.125/2 = 0.125
    d = delong_auc(np.array([0.9, 0.4, 0.5, 0.1]), np.array([1, 1, 0, 0]))
    assert d.auc == 0.75 and d.se == pytest.approx(np.sqrt(0.125))


def test_roc_from_histograms_exact():
    # pos in bins 2, 3; neg in bins 0, 2 (see the AUC case above)
    roc = roc_from_histograms([0, 0, 1, 1], [1, 0, 1, 0])
    assert roc == [(0.0, 0.0), (0.0, 0.5), (0.5, 1.0), (1.0, 1.0)]
    assert np.trapezoid([t for _, t in roc], [f for f, _ in roc]) == pytest.approx(0.875)


def test_predictive_values_by_bayes_rule():
    ppv, npv = predictive_values(0.8, 0.9, 0.2)
    # PPV = .16 / (.16 + .08) = 2/3; NPV = .72 / (.72 + .04) = 18/19
    assert ppv == pytest.approx(2 / 3) and npv == pytest.approx(18 / 19)


def test_histogram_auc_within_its_bound_after_small_cell_merging():
    from fedmi.client.evaluation.suppression import merge_score_histograms

    rng = np.random.default_rng(11)
    labels = rng.integers(0, 2, 300)
    scores = 1 / (1 + np.exp(-(rng.normal(size=300) + labels)))
    st = sufficient_statistics(scores, labels)
    exact = roc_auc_score(labels, scores)
    for k in (1, 5, 10, 25):
        pos, neg, _ = merge_score_histograms(st["hist-pos"], st["hist-neg"], k)
        res = auc_from_histograms(pos, neg)
        assert abs(res.auc - exact) <= res.bound + 1e-12, k


def test_pool_statistics_sums_calibration_and_errors():
    a = dict(sufficient_statistics(np.array([0.1, 0.9]), np.array([0, 1])))
    b = dict(sufficient_statistics(np.array([0.2, 0.8, 0.7]), np.array([0, 1, 1])))
    a.update(calibration_statistics(np.array([0.1, 0.9]), np.array([0, 1])))
    b.update(calibration_statistics(np.array([0.2, 0.8, 0.7]), np.array([0, 1, 1])))
    pooled = pool_statistics([a, b])
    both = calibration_statistics(np.array([0.1, 0.9, 0.2, 0.8, 0.7]), np.array([0, 1, 0, 1, 1]))
    assert pooled["cal-count"] == both["cal-count"]
    assert pooled["sq-error-sum"] == pytest.approx(both["sq-error-sum"])
