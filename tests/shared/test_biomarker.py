"""Biomarker maths: paired DeLong, SUVR histograms, orientation, pooling of differences."""

from __future__ import annotations

import numpy as np
import pytest

from fedmi.client.evaluation.biomarker import biomarker_metrics, meta_roi_suvr
from fedmi.shared.biomarker import (
    auc_lower_is_positive,
    combine_differences,
    paired_delong,
    suvr_histograms,
)
from fedmi.shared.contract import BIOMARKER_METRICS
from fedmi.shared.stats import auc_from_histograms, delong_auc


def test_paired_delong_against_unpaired_delong_and_direct_auc():
    rng = np.random.default_rng(0)
    y = np.array([1] * 12 + [0] * 15)
    a = rng.normal(size=27) + y
    b = rng.normal(size=27) + 0.3 * y
    p = paired_delong(a, b, y)
    assert p.auc_a == pytest.approx(delong_auc(a, y).auc)
    assert p.auc_b == pytest.approx(delong_auc(b, y).auc)
    # against a constant marker (every pair tied, AUC 0.5, no variance) the difference's
    # s.e. is exactly the unpaired DeLong s.e. of the first marker
    flat = paired_delong(a, np.zeros(27), y)
    assert flat.diff == pytest.approx(delong_auc(a, y).auc - 0.5)
    assert flat.se == pytest.approx(delong_auc(a, y).se, rel=1e-12)
    same = paired_delong(a, a, y)
    assert (same.diff, same.se) == (0.0, 0.0)


def test_suvr_auc_is_oriented_lower_is_converter():
    suvr = np.array([0.8, 0.85, 0.9, 1.1, 1.2, 1.3])
    conv = np.array([1, 1, 1, 0, 0, 0])
    pos, neg = suvr_histograms(suvr, conv)
    assert auc_lower_is_positive(pos, neg).auc == 1.0
    assert auc_from_histograms(pos, neg).auc == 0.0


def test_biomarker_metrics_known_auc_and_suppression():
    rng = np.random.default_rng(1)
    conv = np.array([1] * 10 + [0] * 10)
    model = np.where(conv == 1, 0.8, 0.2) + rng.uniform(-0.05, 0.05, 20)
    suvr = np.where(conv == 1, 1.0, 1.1) + rng.normal(0, 0.1, 20)
    m = biomarker_metrics(model, suvr, conv, min_cell_count=5)
    assert all(not BIOMARKER_METRICS[k].problems(k, v) for k, v in m.items())
    assert auc_from_histograms(m["bio-hist-model-pos"], m["bio-hist-model-neg"]).auc == 1.0
    exact = paired_delong(model, -suvr, conv)
    assert m["bio-auc-diff"] == pytest.approx(exact.diff)
    assert m["bio-auc-model-exact"] == 1.0
    assert m["bio-auc-suvr-exact"] == pytest.approx(exact.auc_b)
    assert m["bio-auc-diff-ci-low"] <= m["bio-auc-diff"] <= m["bio-auc-diff-ci-high"]
    # every released histogram cell is 0 or at least k
    for key in ("bio-hist-model-pos", "bio-hist-suvr-neg"):
        assert all(v == 0 or v >= 5 for v in m[key])
    small = biomarker_metrics(model, suvr, conv, min_cell_count=11)
    assert small == {"bio-num-examples": 20, "bio-num-converters": 10}


def test_meta_roi_suvr_is_a_weighted_mean():
    x = np.stack([np.full((2, 2, 2), 1.5), np.arange(8.0).reshape(2, 2, 2)])
    w = np.zeros((2, 2, 2))
    w[0, 0, 0], w[1, 1, 1] = 1.0, 3.0
    assert meta_roi_suvr(x, w).tolist() == pytest.approx([1.5, (0 + 7 * 3) / 4])


def test_combine_differences_inverse_variance():
    out = combine_differences([0.1, 0.3], [0.1, 0.1])
    assert out["diff"] == pytest.approx(0.2)
    assert out["se"] == pytest.approx(0.1 / np.sqrt(2))
    assert combine_differences([], []) is None
