"""Aggregate feature description and Mahalanobis OOD scores: exact against direct maths."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.spatial.distance import mahalanobis

from fedmi.shared.contract import OOD_BINS
from fedmi.shared.ood import (
    class_feature_statistics,
    describe,
    description_config,
    description_from_config,
    detection_auroc,
    flagged,
    mahalanobis_scores,
    ood_bin,
    ood_edges,
    ood_histogram,
    pool_feature_statistics,
    pooled_moments,
    threshold_bin,
)


def _sites(seed: int = 0, d: int = 5):
    rng = np.random.default_rng(seed)
    out = []
    for n in (13, 21, 8):
        y = rng.integers(0, 2, n)
        f = rng.normal(size=(n, d)) + 2.0 * y[:, None]
        out.append((f, y))
    return out


def test_summed_statistics_give_the_pooled_mean_and_covariance_exactly():
    sites = _sites()
    pooled = pool_feature_statistics([class_feature_statistics(f, y) for f, y in sites])
    means, cov = pooled_moments(pooled)
    f = np.concatenate([f for f, _ in sites])
    y = np.concatenate([y for _, y in sites])
    direct_means = np.stack([f[y == c].mean(axis=0) for c in (0, 1)])
    centred = f - direct_means[y]
    direct_cov = centred.T @ centred / (len(f) - 2)
    np.testing.assert_allclose(means, direct_means, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(cov, direct_cov, rtol=1e-10, atol=1e-12)
    assert pooled.counts.tolist() == [int((y == 0).sum()), int((y == 1).sum())]


def test_shrinkage_and_min_mahalanobis_match_scipy():
    sites = _sites(1)
    pooled = pool_feature_statistics([class_feature_statistics(f, y) for f, y in sites])
    _, s = pooled_moments(pooled)
    desc = describe(pooled, shrinkage=0.25)
    expect = 0.75 * s + 0.25 * np.trace(s) / 5 * np.eye(5)
    np.testing.assert_allclose(desc.covariance, expect, rtol=1e-12)
    x = np.random.default_rng(2).normal(size=(4, 5))
    vi = np.linalg.inv(expect)
    direct = [min(mahalanobis(v, mu, vi) for mu in desc.means) for v in x]
    np.testing.assert_allclose(mahalanobis_scores(x, desc), direct, rtol=1e-9)


def test_small_class_is_withheld():
    f = np.arange(12, dtype=float).reshape(6, 2)
    stats = class_feature_statistics(f, np.array([0, 0, 0, 0, 1, 1]), min_count=3)
    assert stats.counts.tolist() == [4, 0]
    assert not stats.sums[1].any() and not stats.outers[1].any()
    desc = describe(stats)
    assert np.isnan(desc.means[1]).all()
    back = description_from_config(description_config(desc))
    assert back is not None and np.isnan(back.means[1]).all()
    np.testing.assert_allclose(back.covariance, desc.covariance)
    assert np.isfinite(mahalanobis_scores(f, back)).all()


def test_histogram_bins_are_log_spaced_and_clipped():
    edges = ood_edges()
    assert edges[0] == 1.0 and edges[-1] == pytest.approx(1000.0) and len(edges) == OOD_BINS + 1
    assert ood_bin(np.array([0.2, 1.0, 10.0, 999.0, 5e6])).tolist() == [0, 0, 33, 99, 99]
    assert sum(ood_histogram(np.array([0.5, 2.0, 2.0, 50.0]))) == 4


def test_threshold_flagging_and_detection_auroc_from_histograms():
    ind = [0] * OOD_BINS
    ind[10], ind[20] = 95, 5
    first = threshold_bin(ind, 0.95)
    assert first == 11
    assert flagged(ind, first) == 5
    far = [0] * OOD_BINS
    far[40] = 7
    assert flagged(far, first) == 7
    auc = detection_auroc(far, ind)
    assert (auc.auc, auc.bound) == (1.0, 0.0)
    same = detection_auroc(ind, ind)
    assert same.auc == pytest.approx(0.5)
