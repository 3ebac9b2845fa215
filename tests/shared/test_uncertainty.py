"""MC-dropout calibration and referral-curve maths on fixed inputs (exact numbers)."""

from __future__ import annotations

import numpy as np
import pytest

from fedmi.client.evaluation.uncertainty import uncertainty_metrics
from fedmi.shared.contract import REFERRAL_RATES
from fedmi.shared.stats import calibration_statistics, expected_calibration_error
from fedmi.shared.uncertainty import (
    binary_entropy,
    mc_summary,
    pool_referral,
    referral_curve,
    referral_statistics,
    referred_count,
)


def test_binary_entropy_endpoints_and_midpoint():
    assert binary_entropy(np.array([0.0, 0.5, 1.0])).tolist() == [0.0, 1.0, 0.0]
    assert binary_entropy(np.array([0.25]))[0] == pytest.approx(0.8112781244591328)


def test_mc_mean_calibration_exact():
    passes = np.array([[0.1, 0.3, 0.7, 0.9], [0.3, 0.5, 0.9, 0.7]])
    mean, entropy, sd = mc_summary(passes)
    assert mean.tolist() == pytest.approx([0.2, 0.4, 0.8, 0.8])
    assert sd.tolist() == pytest.approx([0.1, 0.1, 0.1, 0.1])
    cal = calibration_statistics(mean, np.array([0, 1, 1, 0]))
    assert cal["cal-count"] == [0, 0, 1, 0, 1, 0, 0, 0, 2, 0]
    assert cal["cal-sum-label"] == [0, 0, 0, 0, 1, 0, 0, 0, 1, 0]
    # |0.2 − 0| + |0.4 − 1| + |1.6 − 1| over 4 scans
    ece = expected_calibration_error(cal["cal-count"], cal["cal-sum-prob"], cal["cal-sum-label"])
    assert ece == pytest.approx(0.35)
    assert cal["sq-error-sum"] == pytest.approx(0.04 + 0.36 + 0.04 + 0.64)


def test_referred_count_rounds_half_up():
    assert [referred_count(r, 4) for r in REFERRAL_RATES] == [0, 0, 1, 1, 2, 2]
    assert [referred_count(r, 10) for r in REFERRAL_RATES] == [0, 1, 2, 3, 4, 5]
    assert referred_count(0.5, 5) == 3


def test_referral_statistics_exact():
    probs = np.array([0.1, 0.45, 0.7, 0.95])
    labels = np.array([0, 1, 1, 0])  # right, wrong, right, wrong at 0.5
    ent = binary_entropy(probs)  # referral order: 0.45, 0.7, 0.1, 0.95
    retained, correct = referral_statistics(probs, labels, ent)
    assert retained == [4, 4, 3, 3, 2, 2]
    assert correct == [2, 2, 2, 2, 1, 1]
    assert referral_curve(retained, correct) == [0.5, 0.5, 2 / 3, 2 / 3, 0.5, 0.5]


def test_referral_ties_refer_the_earlier_scan_first():
    probs = np.array([0.9, 0.9, 0.1])
    labels = np.array([0, 1, 0])
    retained, correct = referral_statistics(probs, labels, np.ones(3), rates=(0.0, 0.34))
    assert retained == [3, 2] and correct == [2, 2]  # scan 0 (wrong) referred first


def test_pool_referral_sums_rate_by_rate():
    assert pool_referral([([4, 3], [2, 2]), ([10, 9], [8, 8])]) == ([14, 12], [10, 10])
    assert referral_curve([0], [0]) == [None]


def test_uncertainty_metrics_declared_and_suppressed():
    from fedmi.shared.contract import UNCERTAINTY_METRICS

    passes = np.array([[0.1, 0.3, 0.7, 0.9], [0.3, 0.5, 0.9, 0.7]])
    m = uncertainty_metrics(passes, np.array([0, 1, 1, 0]), min_cell_count=1)
    assert set(m) == set(UNCERTAINTY_METRICS)
    assert all(not UNCERTAINTY_METRICS[k].problems(k, v) for k, v in m.items())
    assert m["mc-passes"] == 2
    assert uncertainty_metrics(passes, np.array([0, 1, 1, 0]), min_cell_count=3) == {}
