"""Out-of-distribution scores in the model's feature space, from aggregates only.

The federation describes its training data by class-conditional means and one shared
(pooled within-class) covariance of the final model's embedding (``FedmiNet.features``).
Each training site sends, per class, its count, feature sum and sum of outer products
over its *train* split (:func:`class_feature_statistics`; declared in
:mod:`fedmi.shared.contract` as the ``query.ood`` reply). Summing them
(:func:`pool_feature_statistics`) gives exactly the pooled moments of all training scans,
from which :func:`describe` forms the means and a shrinkage-regularised covariance
``Σ = (1 − λ)·S + λ·(tr S / d)·I``.

A site scores a scan by its smallest Mahalanobis distance to the class means
(:func:`mahalanobis_scores`) and releases only a fixed-bin histogram of the scores
(:func:`ood_histogram`, bins on ``log10`` of the distance over
:data:`~fedmi.shared.contract.OOD_LOG10_RANGE`). The coordinator derives the flagging threshold
(the 95th percentile of the training sites' own test-scan scores, as a bin edge:
:func:`threshold_bin`) and the detection AUROC of a site's scans against those
in-distribution scans (:func:`detection_auroc`), both from histograms alone.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from fedmi.shared.contract import OOD_BINS, OOD_LOG10_RANGE, OOD_SHRINKAGE
from fedmi.shared.stats import BinnedAUC, auc_from_histograms


@dataclass(frozen=True)
class FeatureStatistics:
    """Per-class sufficient statistics of embeddings.

    Attributes
    ----------
    counts
        ``(C,)`` scans per class.
    sums
        ``(C, d)`` feature sums per class.
    outers
        ``(C, d, d)`` sums of outer products ``f fᵀ`` per class.
    """

    counts: np.ndarray
    sums: np.ndarray
    outers: np.ndarray

    @property
    def dim(self) -> int:
        return int(self.sums.shape[1])


def class_feature_statistics(
    features: np.ndarray, labels: np.ndarray, n_classes: int = 2, min_count: int = 1
) -> FeatureStatistics:
    """Count, sum and sum of outer products of ``features`` per class.

    A class with fewer than ``min_count`` scans (the site's small-cell rule) is withheld:
    its count and sums are released as zeros.
    """
    f = np.asarray(features, dtype=np.float64)
    y = np.asarray(labels).astype(np.int64)
    d = f.shape[1]
    counts = np.zeros(n_classes, dtype=np.int64)
    sums = np.zeros((n_classes, d))
    outers = np.zeros((n_classes, d, d))
    for c in range(n_classes):
        fc = f[y == c]
        if len(fc) < max(1, min_count):
            continue
        counts[c] = len(fc)
        sums[c] = fc.sum(axis=0)
        outers[c] = fc.T @ fc
    return FeatureStatistics(counts, sums, outers)


def pool_feature_statistics(parts: Sequence[FeatureStatistics]) -> FeatureStatistics:
    """Sum several sites' statistics (exactly the statistics of their pooled scans)."""
    if not parts:
        raise ValueError("no feature statistics to pool")
    if len({p.sums.shape for p in parts}) > 1:
        raise ValueError("feature statistics of different shapes")
    return FeatureStatistics(
        np.sum([p.counts for p in parts], axis=0),
        np.sum([p.sums for p in parts], axis=0),
        np.sum([p.outers for p in parts], axis=0),
    )


@dataclass(frozen=True)
class FeatureDescription:
    """Class means (``(C, d)``; rows of empty classes are NaN) and the shared covariance."""

    means: np.ndarray
    covariance: np.ndarray
    count: int

    def precision(self) -> np.ndarray:
        """Inverse covariance (pseudo-inverse when singular)."""
        return np.linalg.pinv(self.covariance, hermitian=True)


def pooled_moments(stats: FeatureStatistics) -> tuple[np.ndarray, np.ndarray]:
    """Class means and the pooled within-class covariance ``S`` (divisor ``N − C``).

    ``S = Σ_c (O_c − n_c μ_c μ_cᵀ) / (N − C)`` over the classes present, with ``O_c`` the
    summed outer products: identical to the covariance of the pooled features after
    subtracting each scan's class mean.
    """
    present = stats.counts > 0
    if not present.any():
        raise ValueError("no class has any scans")
    n = stats.counts.astype(np.float64)
    means = np.full(stats.sums.shape, np.nan)
    means[present] = stats.sums[present] / n[present, None]
    scatter = np.zeros((stats.dim, stats.dim))
    for c in np.flatnonzero(present):
        scatter += stats.outers[c] - n[c] * np.outer(means[c], means[c])
    dof = max(1.0, float(n[present].sum()) - int(present.sum()))
    cov = scatter / dof
    return means, (cov + cov.T) / 2.0


def describe(stats: FeatureStatistics, shrinkage: float = OOD_SHRINKAGE) -> FeatureDescription:
    """Means and shrinkage-regularised covariance ``(1 − λ)·S + λ·(tr S / d)·I``."""
    means, s = pooled_moments(stats)
    d = stats.dim
    scale = float(np.trace(s)) / d
    if not scale > 0:
        scale = 1.0
    cov = (1.0 - shrinkage) * s + shrinkage * scale * np.eye(d)
    return FeatureDescription(means, cov, int(stats.counts.sum()))


def mahalanobis_scores(features: np.ndarray, description: FeatureDescription) -> np.ndarray:
    """Smallest Mahalanobis distance of each feature vector to the class means."""
    f = np.asarray(features, dtype=np.float64)
    prec = description.precision()
    best = np.full(len(f), np.inf)
    for mu in description.means:
        if not np.isfinite(mu).all():
            continue
        diff = f - mu
        d2 = np.einsum("ij,jk,ik->i", diff, prec, diff)
        best = np.minimum(best, np.sqrt(np.maximum(d2, 0.0)))
    return best


def ood_edges(bins: int = OOD_BINS) -> np.ndarray:
    """The fixed histogram edges in distance units (``10**`` of equal steps in log10)."""
    lo, hi = OOD_LOG10_RANGE
    return 10.0 ** np.linspace(lo, hi, bins + 1)


def ood_bin(scores: np.ndarray, bins: int = OOD_BINS) -> np.ndarray:
    """Bin index of each distance (below the range → bin 0, above → the last bin)."""
    lo, hi = OOD_LOG10_RANGE
    s = np.log10(np.maximum(np.asarray(scores, dtype=np.float64), 10.0**lo))
    idx = np.floor((s - lo) / (hi - lo) * bins).astype(np.int64)
    return np.clip(idx, 0, bins - 1)


def ood_histogram(scores: np.ndarray, bins: int = OOD_BINS) -> list[int]:
    """Counts of OOD scores in the fixed bins."""
    return [int(v) for v in np.bincount(ood_bin(scores, bins), minlength=bins)]


def threshold_bin(in_distribution: Sequence[int], quantile: float = 0.95) -> int | None:
    """First bin *above* the ``quantile`` of in-distribution scores.

    The threshold is the upper edge of the bin where the cumulative in-distribution
    fraction first reaches ``quantile``; scans in this bin or later are flagged.
    ``None`` without in-distribution scans.
    """
    h = np.asarray(in_distribution, dtype=np.float64)
    if h.sum() <= 0:
        return None
    cum = np.cumsum(h) / h.sum()
    return int(np.searchsorted(cum, quantile - 1e-12, side="left")) + 1


def flagged(hist: Sequence[int], first_flagged_bin: int) -> int:
    """Scans of a histogram in or above ``first_flagged_bin``."""
    return int(np.asarray(hist, dtype=np.int64)[first_flagged_bin:].sum())


def detection_auroc(hist_ood: Sequence[int], hist_in: Sequence[int]) -> BinnedAUC:
    """AUROC of OOD scores separating a site's scans from in-distribution scans.

    The probability that a scan of the site scores higher than an in-distribution scan
    (pairs in one bin count half), with the binning bound of
    :func:`fedmi.shared.stats.auc_from_histograms`.
    """
    return auc_from_histograms(hist_ood, hist_in)


# --- the description on the wire (server → site, in the evaluate.external config) --------

#: Config keys of the description: class means (C·d floats, row-major), covariance (d·d).
DESCRIPTION_KEYS = ("ood-means", "ood-covariance", "ood-count")


def description_config(desc: FeatureDescription) -> dict[str, object]:
    """The description as ConfigRecord values (empty classes' means are withheld as 0 rows)."""
    means = np.where(np.isfinite(desc.means), desc.means, 0.0)
    present = [int(np.isfinite(m).all()) for m in desc.means]
    return {
        "ood-means": [float(v) for v in means.ravel()],
        "ood-covariance": [float(v) for v in desc.covariance.ravel()],
        "ood-count": int(desc.count),
        "ood-classes": present,
    }


def description_from_config(config: Mapping[str, object] | None) -> FeatureDescription | None:
    """Inverse of :func:`description_config`; ``None`` when absent or malformed."""
    c = dict(config or {})
    if not all(k in c for k in DESCRIPTION_KEYS):
        return None
    cov = np.asarray(c["ood-covariance"], dtype=np.float64)
    d = int(round(np.sqrt(cov.size)))
    means = np.asarray(c["ood-means"], dtype=np.float64)
    if d < 1 or d * d != cov.size or means.size % d or not np.isfinite(cov).all():
        return None
    means = means.reshape(-1, d).copy()
    present = list(c.get("ood-classes", [1] * len(means)))  # type: ignore[call-overload]
    for i, ok in enumerate(present[: len(means)]):
        if not ok:
            means[i] = np.nan
    return FeatureDescription(means, cov.reshape(d, d), int(c["ood-count"]))  # type: ignore[call-overload]
