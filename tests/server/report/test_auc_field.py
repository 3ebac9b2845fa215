"""report.json's ``auc``: the site's Mann–Whitney AUC as released, named apart from the
histogram estimate (``auc_histogram``)."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from fedmi.client.evaluation.private import EVALUATION_MECHANISMS, private_evaluation
from fedmi.client.evaluation.statistics import evaluation_statistics
from fedmi.client.privacy.release import Release
from fedmi.server.history import AUC_EXACT, AUC_NOISY, summarise_stats
from fedmi.shared.stats import auc_from_histograms


def _scores(seed: int, n_pos: int = 23, n_neg: int = 31):
    rng = np.random.default_rng(seed)
    s = np.concatenate([rng.beta(4, 2, n_pos), rng.beta(2, 4, n_neg)])
    s[:5] = s[-5:]  # some ties across the classes
    return s, np.array([1] * n_pos + [0] * n_neg)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_auc_is_sklearns_roc_auc_on_the_same_scores(seed):
    s, y = _scores(seed)
    stats, status = evaluation_statistics(s, y, min_cell_count=3)
    assert status == "ok"
    row = summarise_stats(stats)
    assert row["auc"] == pytest.approx(roc_auc_score(y, s), abs=1e-12)
    assert row["auc_method"] == AUC_EXACT
    lo, hi = row["auc_ci"]
    assert 0 <= lo <= row["auc"] <= hi <= 1
    # the histogram estimate is named as such, and is the histogram's (not the exact) AUC
    binned = auc_from_histograms(stats["hist-pos"], stats["hist-neg"])
    assert row["auc_histogram"] == pytest.approx(binned.auc, abs=1e-6)
    assert row["auc_histogram_bound"] == pytest.approx(binned.bound, abs=1e-6)


def test_under_dp_auc_is_the_noisy_release_and_says_so():
    s, y = _scores(4, 30, 30)
    exact = {name: 1e-9 for name in EVALUATION_MECHANISMS}  # noise sd ~0
    stats, _ = private_evaluation(s, y, Release(exact, 0.0), 10)
    row = summarise_stats(stats)
    assert row["auc_method"] == AUC_NOISY and row["auc_noise_sd"] > 0
    assert row["auc"] == pytest.approx(roc_auc_score(y, s), abs=1e-6)
    noisy = {name: 1.0 for name in EVALUATION_MECHANISMS}
    stats, _ = private_evaluation(s, y, Release(noisy, 0.0), 10)
    row = summarise_stats(stats)
    if row.get("auc") is not None:
        assert row["auc"] == stats["auc-exact"] and row["auc_method"] == AUC_NOISY


def test_one_class_site_has_no_auc_but_its_histogram_estimate():
    s = np.linspace(0.1, 0.9, 12)
    stats, _ = evaluation_statistics(s, np.ones(12, dtype=int), min_cell_count=0)
    row = summarise_stats(stats)
    assert row["auc"] is None and row["auc_method"] is None
