"""The federation's operating point and calibration from score histograms (exact numbers)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from fedmi.shared.operating_point import (
    Platt,
    best_balanced_accuracy,
    calibration_summary,
    check_histograms,
    choose_threshold,
    confusion_at,
    fit_intercept,
    fit_platt,
    rates_at,
    recalibrated_threshold,
    threshold_from_scores,
)
from fedmi.shared.stats import OperatingPoint


def _hist(scores: np.ndarray, bins: int) -> np.ndarray:
    return np.bincount(np.minimum((scores * bins).astype(int), bins - 1), minlength=bins)


def _midpoint_scores(rng: np.random.Generator, bins: int) -> tuple[np.ndarray, np.ndarray]:
    """Scores on bin midpoints, every bin non-empty, positives higher on average."""
    mids = (np.arange(bins) + 0.5) / bins
    pos = np.concatenate([mids, rng.choice(mids[bins // 3 :], 60)])
    neg = np.concatenate([mids, rng.choice(mids[: 2 * bins // 3], 60)])
    return np.concatenate([pos, neg]), np.r_[np.ones(pos.size), np.zeros(neg.size)].astype(int)


@pytest.mark.parametrize(
    ("criterion", "target"), [("youden", None), ("sensitivity", 0.9), ("specificity", 0.85)]
)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_histogram_threshold_equals_pooled_scores_within_one_bin(criterion, target, seed):
    """Exact construction: each site's scores sit on bin midpoints and every bin is used,
    so the histogram cuts and the distinct pooled scores call the same scans positive:
    the thresholds differ by at most half a bin, and the confusion counts are equal."""
    bins = 20
    rng = np.random.default_rng(seed)
    sites = [_midpoint_scores(rng, bins) for _ in range(3)]
    hp = sum(_hist(s[y == 1], bins) for s, y in sites)
    hn = sum(_hist(s[y == 0], bins) for s, y in sites)
    scores = np.concatenate([s for s, _ in sites])
    labels = np.concatenate([y for _, y in sites])
    fed = choose_threshold(hp, hn, criterion, target)
    pooled = threshold_from_scores(scores, labels, criterion, target)
    assert abs(fed.threshold - pooled) <= 1 / bins
    assert abs(fed.threshold - pooled) <= 0.5 / bins + 1e-12
    assert ((scores >= fed.threshold) == (scores >= pooled)).all()
    assert fed.point.tp == int(((scores >= pooled) & (labels == 1)).sum())
    assert fed.point.fp == int(((scores >= pooled) & (labels == 0)).sum())


def test_youden_and_targets_on_a_small_histogram():
    hp = [0, 1, 1, 3, 5]  # 10 positives
    hn = [4, 3, 2, 1, 0]  # 10 negatives
    # cut k: sens = hp[k:]/10, spec = hn[:k]/10; J: k=2 → .9+.7−1 = .6, k=3 → .8+.9−1 = .7
    assert choose_threshold(hp, hn).threshold == pytest.approx(0.6)
    # sensitivity ≥ 0.9: highest cut with hp[k:] ≥ 9 → k = 2
    assert choose_threshold(hp, hn, "sensitivity", 0.9).threshold == pytest.approx(0.4)
    # specificity ≥ 1.0 − ε: lowest cut with hn[:k] ≥ 10 → k = 4
    assert choose_threshold(hp, hn, "specificity", 0.99).threshold == pytest.approx(0.8)
    op = confusion_at(hp, hn, 0.6)
    assert (op.tp, op.fp, op.tn, op.fn) == (8, 1, 9, 2)
    assert best_balanced_accuracy(hp, hn) == pytest.approx(0.85)


def test_wilson_golden_numbers_in_rates():
    rates = rates_at(OperatingPoint(0.5, tp=8, fp=1, tn=9, fn=2))
    # 8/10: Wilson 95 % (0.4902, 0.9433); 9/10: (0.5958, 0.9821); PPV 8/9: (0.5650, 0.9801)
    assert rates["sensitivity"]["ci"] == pytest.approx([0.49016, 0.94331], abs=1e-5)
    assert rates["specificity"]["ci"] == pytest.approx([0.59585, 0.98212], abs=1e-5)
    assert rates["ppv"]["ci"] == pytest.approx([0.56500, 0.98011], abs=1e-5)
    assert rates["npv"]["value"] == pytest.approx(9 / 11)
    assert rates["balanced_accuracy"] == pytest.approx(0.85)


def test_calibration_golden_numbers():
    bins = 10
    calibrated_pos, calibrated_neg = np.zeros(bins), np.zeros(bins)
    calibrated_pos[[2, 7]], calibrated_neg[[2, 7]] = [1, 3], [3, 1]  # rates .25/.75 at .25/.75
    c = calibration_summary(calibrated_pos, calibrated_neg)
    assert c["ece"] == pytest.approx(0.0, abs=1e-12)
    assert c["slope"] == pytest.approx(1.0, abs=1e-6)
    assert c["citl"] == pytest.approx(0.0, abs=1e-6)
    flat_pos, flat_neg = np.zeros(bins), np.zeros(bins)
    flat_pos[[2, 7]], flat_neg[[2, 7]] = [2, 2], [2, 2]  # observed 0.5 in both bins
    c = calibration_summary(flat_pos, flat_neg)
    assert c["ece"] == pytest.approx(0.25)
    assert c["slope"] == pytest.approx(0.0, abs=1e-6)
    assert c["citl"] == pytest.approx(0.0, abs=1e-6)
    low_pos, low_neg = np.zeros(bins), np.zeros(bins)
    low_pos[[2, 7]], low_neg[[2, 7]] = [1, 1], [3, 3]  # observed 0.25 in both bins
    # CITL c solves σ(c − ln3) + σ(c + ln3) = 1/2: 9u² + 10u − 3 = 0, u = e^c
    u = (-10 + math.sqrt(208)) / 18
    c = calibration_summary(low_pos, low_neg)
    assert c["citl"] == pytest.approx(math.log(u), abs=1e-6)
    assert c["ece"] == pytest.approx((abs(1 - 1) + abs(3 - 1)) / 8)


def test_platt_recalibration_fixes_the_flat_example():
    bins = 10
    hp, hn = np.zeros(bins), np.zeros(bins)
    hp[[2, 7]], hn[[2, 7]] = [1, 3], [3, 1]
    # scores whose logit is twice the truth: over-confident, slope 0.5
    over_pos, over_neg = np.zeros(bins), np.zeros(bins)
    over_pos[[0, 9]], over_neg[[0, 9]] = [1, 3], [3, 1]  # midpoints .05/.95: logit ±2.944
    platt = fit_platt(over_pos, over_neg)
    assert platt.b == pytest.approx(math.log(3) / math.log(19), abs=1e-6)
    assert platt.a == pytest.approx(0.0, abs=1e-6)
    after = calibration_summary(over_pos, over_neg, platt)
    assert after["ece"] == pytest.approx(0.0, abs=1e-6)
    assert after["slope"] == pytest.approx(1.0, abs=1e-5)
    assert recalibrated_threshold(0.5, platt) == pytest.approx(0.5)
    assert recalibrated_threshold(0.95, platt) == pytest.approx(0.75, abs=1e-6)


def test_commissioning_intercept():
    # the site's probabilities are 0.5 but a quarter of its scans are positive
    c = fit_intercept([0.5] * 8, [1, 1, 0, 0, 0, 0, 0, 0])
    assert c == pytest.approx(math.log(1 / 3))
    with pytest.raises(ValueError, match="both classes"):
        fit_intercept([0.5, 0.6], [1, 1])
    assert Platt(c, 1.0).apply(0.5) == pytest.approx(0.25)


@pytest.mark.parametrize(
    ("hp", "hn", "match"),
    [
        ([1, 2, 3], [1, 2], "one length"),
        ([1, -2, 3], [1, 2, 3], "non-negative"),
        ([1, 2.5, 3], [1, 2, 3], "whole"),
        ([1, float("nan"), 3], [1, 2, 3], "finite"),
        ([[1, 2], [3, 4]], [[1, 2], [3, 4]], "1-D"),
    ],
)
def test_bad_histograms_refused(hp, hn, match):
    with pytest.raises(ValueError, match=match):
        check_histograms(hp, hn)


def test_bad_criteria_refused():
    with pytest.raises(ValueError, match="target"):
        choose_threshold([0, 1], [1, 0], "sensitivity", None)
    with pytest.raises(ValueError, match="unknown criterion"):
        choose_threshold([0, 1], [1, 0], "accuracy", 0.5)
    with pytest.raises(ValueError, match="both classes"):
        choose_threshold([0, 0], [1, 0])


def test_a_tie_keeps_the_threshold_nearest_0_5_that_the_data_allow():
    """A site's histogram merged to k cases per cell (or DP deciles) leaves a wide plateau of
    equally good thresholds: the one nearest the model's own 0.5 is kept, not its middle (on
    the fdg-ad compare, the middle of one site's merged cells gave 0.66–0.74 and a holdout
    sensitivity of 0)."""
    hp, hn = np.zeros(100), np.zeros(100)
    hp[80], hn[30] = 12, 11  # two merged cells: J = 1 for every cut 0.31..0.80
    assert choose_threshold(hp, hn).threshold == pytest.approx(0.5)
    assert threshold_from_scores([0.8] * 12 + [0.3] * 11, [1] * 12 + [0] * 11) == 0.5
    hp2, hn2 = np.zeros(100), np.zeros(100)
    hp2[90], hn2[60] = 12, 11  # plateau 0.61..0.90: its end nearest 0.5
    assert choose_threshold(hp2, hn2).threshold == pytest.approx(0.61)
    t = threshold_from_scores([0.905] * 12 + [0.605] * 11, [1] * 12 + [0] * 11)
    assert 0.605 < t < 0.6051  # just above the highest negative
    hp3, hn3 = np.zeros(100), np.zeros(100)
    hp3[20], hn3[10] = 12, 11  # plateau 0.11..0.20: 0.20
    assert choose_threshold(hp3, hn3).threshold == pytest.approx(0.2)
    # the target criteria are unchanged: the most specific cut reaching sensitivity 0.9
    assert choose_threshold(hp, hn, "sensitivity", 0.9).threshold == pytest.approx(0.8)
