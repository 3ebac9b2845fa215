"""PET and SPECT noise levels."""

from __future__ import annotations

import numpy as np
import pytest

from fedmi.simulations.phantom.noise import add_pet_noise, spect_counts


def test_pet_noise_level() -> None:
    rng = np.random.default_rng(0)
    flat = np.full((40, 40, 40), 5.0, dtype=np.float32)
    noisy = add_pet_noise(flat, 0.1, rng)
    assert noisy.std() / noisy.mean() == pytest.approx(0.1, rel=0.1)


def test_spect_counts_total() -> None:
    rng = np.random.default_rng(0)
    c = spect_counts(np.ones((20, 20, 20)), 1e6, rng)
    assert c.dtype == np.uint16 and c.sum() == pytest.approx(1e6, rel=0.01)
