"""The commissioning step (intercept recalibration with a few local labels), measured."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.special import expit

from fedmi.simulations.commissioning import commission_scores


def test_intercept_commissioning_recentres_a_shifted_site():
    """A site whose probabilities are 2 logits too low (a scanner that reads cold): ten
    labelled scans per class bring the intercept back and balance the calls at 0.5."""
    rng = np.random.default_rng(0)
    y = np.r_[np.ones(100), np.zeros(100)].astype(int)
    logit = np.where(y == 1, 1.5, -1.5) + rng.normal(0, 1, y.size) - 2.0
    out = commission_scores(expit(logit), y, 0.5, n_per_class=10, draws=30, seed=1)
    before, after = out["before"], out["after"]
    assert out["intercept_shift"] == pytest.approx(2.0, abs=0.5)
    assert before["sens"] < 0.5 and after["sens"] > 0.8
    assert after["ba"] > before["ba"] + 0.1
    assert abs(after["citl"]) < abs(before["citl"]) / 3
    assert after["ece"] < before["ece"]


def test_too_few_scans_refused():
    with pytest.raises(ValueError, match="more than 10"):
        commission_scores(np.full(20, 0.5), np.r_[np.ones(10), np.zeros(10)], 0.5)
