import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from shared.contract import HIST_BINS, THRESHOLDS
from shared.stats import (
    auc_from_histograms,
    operating_point,
    pool_statistics,
    sufficient_statistics,
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
