"""Image noise: PET (signal-dependent, slightly correlated Gaussian) and SPECT (Poisson)."""

from __future__ import annotations

import functools

import numpy as np
from scipy import ndimage


def add_pet_noise(vol: np.ndarray, cov: float, rng: np.random.Generator) -> np.ndarray:
    """Signal-dependent, slightly correlated Gaussian noise; clipped at 0.

    The standard deviation is ``cov × sqrt(v × v_ref)`` with ``v_ref`` the mean of the
    voxels above 30 % of the maximum, so the CoV in a uniform region at ``v_ref`` is
    ``cov`` (PHANTOM_SPEC §3.1: 6–14 %).
    """
    v = np.maximum(vol, 0.0)
    hot = v[v > 0.3 * v.max()] if v.max() > 0 else v
    v_ref = float(hot.mean()) if hot.size else 0.0
    z = rng.standard_normal(v.shape, dtype=np.float32)
    z = ndimage.gaussian_filter(z, 0.6, truncate=3.0)
    z /= _smoothed_noise_sd(0.6)
    out = v + cov * np.sqrt(v * v_ref, dtype=np.float32) * z
    return np.maximum(out, 0.0).astype(np.float32)


@functools.lru_cache(maxsize=4)
def _smoothed_noise_sd(sigma: float) -> float:
    """Standard deviation of unit white noise after the Gaussian filter of ``sigma``."""
    delta = np.zeros((15, 15, 15), dtype=np.float64)
    delta[7, 7, 7] = 1.0
    k = ndimage.gaussian_filter(delta, sigma, truncate=3.0)
    return float(np.sqrt((k**2).sum()))


def spect_counts(vol: np.ndarray, total_counts: float, rng: np.random.Generator) -> np.ndarray:
    """Poisson counts with expected total ``total_counts`` (reconstructed-image proxy)."""
    v = np.maximum(np.asarray(vol, dtype=np.float64), 0.0)
    s = v.sum()
    lam = v * (total_counts / s) if s > 0 else v
    return rng.poisson(lam).astype(np.uint16)
