"""Predictive uncertainty per scan and what referring the most uncertain scans buys.

Pure NumPy maths shared by the site (which computes it from its own scores) and the
coordinator (which only ever sees the declared aggregates):

* the *MC-dropout mean* probability ``p̄ = mean_t sigmoid(logit_t)`` over ``T`` stochastic
  passes (the passes themselves are run by :mod:`fedmi.client.evaluation.uncertainty`);
* its uncertainty, the binary predictive entropy ``H(p̄)`` in bits (1 at ``p̄ = 0.5``,
  0 at 0 or 1);
* the *referral curve*: for each rate ``r`` of :data:`fedmi.shared.contract.REFERRAL_RATES`
  the ``round(r · n)`` most uncertain scans go to a reader, and the site counts the scans
  it kept and how many of those the model called correctly at
  :data:`~fedmi.shared.contract.OPERATING_THRESHOLD` (:func:`referral_statistics`); only those
  two counts per rate leave the site. Accuracy of the kept scans is
  ``correct / retained`` (:func:`referral_curve`); sites pool by summing counts.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from fedmi.shared.contract import OPERATING_THRESHOLD, REFERRAL_RATES

#: Stochastic passes per scan (the ``evaluate.external`` instruction's ``mc-passes``).
DEFAULT_MC_PASSES = 20


def binary_entropy(p: np.ndarray) -> np.ndarray:
    """Entropy in bits of a Bernoulli(``p``) prediction (0 at p ∈ {0, 1}, 1 at 0.5)."""
    p = np.clip(np.asarray(p, dtype=np.float64), 0.0, 1.0)
    out = np.zeros_like(p)
    inside = (p > 0) & (p < 1)
    q = p[inside]
    out[inside] = -(q * np.log2(q) + (1 - q) * np.log2(1 - q))
    return out


def mc_summary(pass_probs: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean probability, predictive entropy and between-pass s.d. of ``(T, n)`` MC probabilities."""
    probs = np.asarray(pass_probs, dtype=np.float64)
    if probs.ndim != 2:
        raise ValueError("MC-dropout probabilities must be shaped (passes, scans)")
    mean = probs.mean(axis=0)
    return mean, binary_entropy(mean), probs.std(axis=0)


def referred_count(rate: float, n: int) -> int:
    """Scans referred at ``rate`` out of ``n``: ``floor(rate · n + 0.5)`` (half rounds up)."""
    return int(np.floor(float(rate) * int(n) + 0.5 + 1e-9))


def referral_statistics(
    probs: np.ndarray,
    labels: np.ndarray,
    uncertainty: np.ndarray,
    rates: Sequence[float] = REFERRAL_RATES,
    threshold: float = OPERATING_THRESHOLD,
) -> tuple[list[int], list[int]]:
    """Scans kept and correctly called among them when the most uncertain are referred.

    Parameters
    ----------
    probs
        Predicted probability of the positive class per scan (called positive when
        ``>= threshold``).
    labels
        0/1 truth per scan.
    uncertainty
        Per-scan uncertainty; the largest values are referred first (ties: the earlier
        scan first, a stable order).
    rates
        Referral rates in [0, 1].

    Returns
    -------
    (list of int, list of int)
        ``retained[i] = n − round(rates[i] · n)`` and ``correct[i]``, the correct calls
        among the retained scans.
    """
    p = np.asarray(probs, dtype=np.float64)
    y = np.asarray(labels).astype(bool)
    u = np.asarray(uncertainty, dtype=np.float64)
    if not (p.shape == y.shape == u.shape):
        raise ValueError("probs, labels and uncertainty must have one length")
    n = int(p.size)
    right = (p >= threshold) == y
    order = np.argsort(-u, kind="stable")  # most uncertain first
    right_in_order = right[order]
    retained, correct = [], []
    for rate in rates:
        m = min(n, referred_count(rate, n))
        retained.append(n - m)
        correct.append(int(right_in_order[m:].sum()))
    return retained, correct


def referral_curve(retained: Sequence[int], correct: Sequence[int]) -> list[float | None]:
    """Accuracy of the kept scans at each rate (``None`` where nothing was kept)."""
    return [
        (float(c) / float(r)) if r else None
        for r, c in zip(retained, correct, strict=True)  # type: ignore[misc]
    ]


def pool_referral(
    parts: Sequence[tuple[Sequence[int], Sequence[int]]],
) -> tuple[list[int], list[int]]:
    """Sum the ``(retained, correct)`` counts of several sites rate by rate."""
    if not parts:
        return [], []
    retained = np.sum([np.asarray(r, dtype=np.int64) for r, _ in parts], axis=0)
    correct = np.sum([np.asarray(c, dtype=np.int64) for _, c in parts], axis=0)
    return [int(v) for v in retained], [int(v) for v in correct]
