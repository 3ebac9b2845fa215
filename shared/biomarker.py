"""The model output as a continuous biomarker, against a regional SUVR baseline.

The fdg-ad model is trained on AD vs CN; applied to MCI subjects, its score should predict
later conversion to AD (labels ``MCI-converter`` vs ``MCI-stable``). The baseline is the
mean SUVR of an AD meta-ROI — posterior cingulate, precuneus, angular gyrus and lateral
(inferior/middle) temporal cortex, the regions of typical AD hypometabolism — on the
reference-region-normalised template volume (lower SUVR ⇒ more likely converter).

A site releases per outcome a fixed-bin histogram of each marker (model probability on the
score bins of :mod:`fedmi.shared.stats`, SUVR on :data:`~fedmi.shared.contract.SUVR_RANGE`) and the
difference of the two AUCs with a paired DeLong interval computed on its own scans
(:func:`paired_delong`); the coordinator derives each AUC from the histograms.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from fedmi.shared.contract import SUVR_BINS, SUVR_RANGE
from fedmi.shared.stats import BinnedAUC, auc_from_histograms

#: AAL3-based regions of the AD meta-ROI (names of :data:`fedmi.shared.anatomy.REGIONS`).
META_ROI: tuple[str, ...] = ("posterior_cingulate", "precuneus", "angular", "temporal_lateral")
#: Outcome labels of labels.csv for the conversion analysis (positive = converter).
CONVERTER, STABLE = "MCI-converter", "MCI-stable"
Z95 = 1.959963984540054


def suvr_edges(bins: int = SUVR_BINS) -> np.ndarray:
    """Fixed SUVR histogram edges shared by every site."""
    return np.linspace(SUVR_RANGE[0], SUVR_RANGE[1], bins + 1)


def suvr_bin(values: np.ndarray, bins: int = SUVR_BINS) -> np.ndarray:
    """Bin index of each SUVR (values outside the range fall in the end bins)."""
    lo, hi = SUVR_RANGE
    v = np.asarray(values, dtype=np.float64)
    return np.clip(np.floor((v - lo) / (hi - lo) * bins).astype(np.int64), 0, bins - 1)


def suvr_histograms(
    values: np.ndarray, outcome: np.ndarray, bins: int = SUVR_BINS
) -> tuple[list[int], list[int]]:
    """Per-outcome SUVR histograms ``(converters, stable)``."""
    idx = suvr_bin(values, bins)
    y = np.asarray(outcome).astype(bool)
    pos = np.bincount(idx[y], minlength=bins)
    neg = np.bincount(idx[~y], minlength=bins)
    return [int(v) for v in pos], [int(v) for v in neg]


def auc_lower_is_positive(hist_pos: Sequence[int], hist_neg: Sequence[int]) -> BinnedAUC:
    """AUC of a marker whose *low* values indicate the positive outcome (bins reversed)."""
    return auc_from_histograms(list(hist_pos)[::-1], list(hist_neg)[::-1])


@dataclass(frozen=True)
class PairedAUC:
    """Two correlated AUCs on the same cases and DeLong's test of their difference."""

    auc_a: float
    auc_b: float
    diff: float
    se: float
    ci_low: float
    ci_high: float


def _components(s: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    pos, neg = s[y], s[~y]
    # V10_i: fraction of negatives positive i outranks; V01_j: fraction of positives above j
    v10 = ((pos[:, None] > neg[None, :]) + 0.5 * (pos[:, None] == neg[None, :])).mean(axis=1)
    v01 = ((pos[:, None] > neg[None, :]) + 0.5 * (pos[:, None] == neg[None, :])).mean(axis=0)
    return v10, v01


def paired_delong(
    scores_a: np.ndarray, scores_b: np.ndarray, labels: np.ndarray, z: float = Z95
) -> PairedAUC:
    """DeLong, DeLong & Clarke-Pearson (1988) comparison of two correlated AUCs.

    Both markers are oriented so that *higher* means positive (negate a marker whose
    low values indicate the positive outcome). ``var(A − B) = (s²₁₀(A) + s²₁₀(B) −
    2 cov₁₀)/m + (s²₀₁(A) + s²₀₁(B) − 2 cov₀₁)/n`` with ``m`` positives and ``n``
    negatives; the interval is ``diff ± z·se``.
    """
    y = np.asarray(labels).astype(bool)
    a = np.asarray(scores_a, dtype=np.float64)
    b = np.asarray(scores_b, dtype=np.float64)
    m, n = int(y.sum()), int((~y).sum())
    if m < 2 or n < 2:
        nan = float("nan")
        return PairedAUC(nan, nan, nan, nan, nan, nan)
    a10, a01 = _components(a, y)
    b10, b01 = _components(b, y)
    s10 = np.cov(np.vstack([a10, b10]))
    s01 = np.cov(np.vstack([a01, b01]))
    var = (s10[0, 0] + s10[1, 1] - 2 * s10[0, 1]) / m + (s01[0, 0] + s01[1, 1] - 2 * s01[0, 1]) / n
    se = float(np.sqrt(max(var, 0.0)))
    auc_a, auc_b = float(a10.mean()), float(b10.mean())
    diff = auc_a - auc_b
    return PairedAUC(auc_a, auc_b, diff, se, max(-1.0, diff - z * se), min(1.0, diff + z * se))


def combine_differences(diffs: Sequence[float], ses: Sequence[float]) -> dict[str, float] | None:
    """Inverse-variance (fixed-effect) pooling of per-site AUC differences.

    A site with ``se == 0`` (both markers separating perfectly) gets the variance floor
    ``1e-6``. Returns ``diff``, ``se``, ``ci_low``, ``ci_high`` or ``None`` without sites.
    """
    d = np.asarray(diffs, dtype=np.float64)
    v = np.maximum(np.asarray(ses, dtype=np.float64) ** 2, 1e-6)
    if d.size == 0:
        return None
    w = 1.0 / v
    est = float((w * d).sum() / w.sum())
    se = float(np.sqrt(1.0 / w.sum()))
    return {"diff": est, "se": se, "ci_low": est - Z95 * se, "ci_high": est + Z95 * se}
