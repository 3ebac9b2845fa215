"""Evaluation sufficient statistics and the metrics computed from them.

A site turns its per-scan scores into fixed-bin histograms per class and confusion counts
at fixed thresholds (:func:`sufficient_statistics`); only those leave the site. The server
computes AUC, sensitivity and specificity from them (:func:`auc_from_histograms`,
:func:`operating_point`) and pools sites by summing histograms.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from fedmi.shared.contract import CALIBRATION_BINS, HIST_BINS, OPERATING_THRESHOLD, THRESHOLDS


def histogram_edges(bins: int = HIST_BINS) -> np.ndarray:
    """Fixed bin edges on [0, 1] shared by every site."""
    return np.linspace(0.0, 1.0, bins + 1)


def sufficient_statistics(
    scores: np.ndarray, labels: np.ndarray, bins: int = HIST_BINS
) -> dict[str, list[int] | int]:
    """Per-class score histograms and confusion counts at :data:`THRESHOLDS`.

    Parameters
    ----------
    scores
        Predicted probabilities of the positive class, in [0, 1].
    labels
        0/1 truth.

    Returns
    -------
    dict
        ``hist-pos``, ``hist-neg`` (``bins`` counts each), ``tp``, ``fp``, ``tn``, ``fn``
        (one count per threshold; a score ``>= t`` is called positive), ``num-examples``
        and ``num-positive``.
    """
    scores = np.clip(np.asarray(scores, dtype=np.float64), 0.0, 1.0)
    labels = np.asarray(labels).astype(bool)
    idx = np.minimum((scores * bins).astype(np.int64), bins - 1)
    hist_pos = np.bincount(idx[labels], minlength=bins)
    hist_neg = np.bincount(idx[~labels], minlength=bins)
    out: dict[str, list[int] | int] = {
        "hist-pos": [int(v) for v in hist_pos],
        "hist-neg": [int(v) for v in hist_neg],
        "num-examples": int(labels.size),
        "num-positive": int(labels.sum()),
    }
    for key in ("tp", "fp", "tn", "fn"):
        out[key] = []
    for t in THRESHOLDS:
        called = scores >= t
        out["tp"].append(int((called & labels).sum()))  # type: ignore[union-attr]
        out["fp"].append(int((called & ~labels).sum()))  # type: ignore[union-attr]
        out["tn"].append(int((~called & ~labels).sum()))  # type: ignore[union-attr]
        out["fn"].append(int((~called & labels).sum()))  # type: ignore[union-attr]
    return out


@dataclass(frozen=True)
class BinnedAUC:
    """AUC from binned scores with its worst-case binning error.

    ``auc`` counts a positive/negative pair in the same bin as half; the exact AUC of the
    unbinned scores lies in ``[auc - bound, auc + bound]`` where ``bound`` is half the
    fraction of pairs that share a bin.
    """

    auc: float
    bound: float
    n_pos: int
    n_neg: int


def auc_from_histograms(hist_pos: Sequence[int], hist_neg: Sequence[int]) -> BinnedAUC:
    """Mann–Whitney AUC from per-class histograms on the same fixed bins."""
    pos = np.asarray(hist_pos, dtype=np.float64)
    neg = np.asarray(hist_neg, dtype=np.float64)
    n_pos, n_neg = pos.sum(), neg.sum()
    if n_pos == 0 or n_neg == 0:
        return BinnedAUC(float("nan"), float("nan"), int(n_pos), int(n_neg))
    neg_below = np.concatenate([[0.0], np.cumsum(neg)[:-1]])
    greater = float((pos * neg_below).sum())
    ties = float((pos * neg).sum())
    pairs = n_pos * n_neg
    return BinnedAUC((greater + 0.5 * ties) / pairs, 0.5 * ties / pairs, int(n_pos), int(n_neg))


@dataclass(frozen=True)
class OperatingPoint:
    """Confusion counts and rates at one threshold."""

    threshold: float
    tp: int
    fp: int
    tn: int
    fn: int

    @property
    def sensitivity(self) -> float:
        return self.tp / (self.tp + self.fn) if self.tp + self.fn else float("nan")

    @property
    def specificity(self) -> float:
        return self.tn / (self.tn + self.fp) if self.tn + self.fp else float("nan")

    @property
    def accuracy(self) -> float:
        n = self.tp + self.fp + self.tn + self.fn
        return (self.tp + self.tn) / n if n else float("nan")


def operating_point(
    stats: dict[str, Sequence[int]], threshold: float = OPERATING_THRESHOLD
) -> OperatingPoint:
    """Confusion counts at ``threshold`` (one of :data:`THRESHOLDS`) from sufficient statistics."""
    i = THRESHOLDS.index(threshold)
    return OperatingPoint(
        threshold,
        int(stats["tp"][i]),
        int(stats["fp"][i]),
        int(stats["tn"][i]),
        int(stats["fn"][i]),
    )


def pool_statistics(stats: Sequence[dict[str, Sequence[int] | int]]) -> dict[str, list[int] | int]:
    """Sum sufficient statistics of several sites (pooled ROC, pooled operating point)."""
    out: dict[str, list[int] | int] = {}
    for key in ("hist-pos", "hist-neg", "tp", "fp", "tn", "fn"):
        arrs = [np.asarray(s[key], dtype=np.int64) for s in stats]
        out[key] = [int(v) for v in np.sum(arrs, axis=0)] if arrs else []
    for key in ("num-examples", "num-positive"):
        out[key] = int(sum(int(s[key]) for s in stats))  # type: ignore[arg-type]
    # optional sums, pooled only when every site sent them
    for key in ("cal-count", "cal-sum-label", "cal-sum-prob"):
        if stats and all(key in s for s in stats):
            total = np.sum([np.asarray(s[key], dtype=np.float64) for s in stats], axis=0)
            out[key] = [float(v) if key == "cal-sum-prob" else int(v) for v in total]
    for key in ("loss-sum", "sq-error-sum"):
        if stats and all(key in s for s in stats):
            out[key] = float(sum(float(s[key]) for s in stats))  # type: ignore[arg-type]
    return out


# --- calibration, Brier score, intervals (computed from scores at the site) -------------


def calibration_edges(bins: int = CALIBRATION_BINS) -> np.ndarray:
    """Fixed equal-width calibration bin edges on [0, 1] shared by every site."""
    return np.linspace(0.0, 1.0, bins + 1)


def calibration_statistics(
    scores: np.ndarray, labels: np.ndarray, bins: int = CALIBRATION_BINS
) -> dict[str, list[int] | list[float] | float]:
    """Per calibration bin: number of cases, sum of predicted probabilities, sum of labels.

    Also ``sq-error-sum`` = Σ (p − y)², from which the Brier score is ``sq-error-sum / n``.
    A probability ``p`` falls in bin ``min(floor(p · bins), bins − 1)``.
    """
    p = np.clip(np.asarray(scores, dtype=np.float64), 0.0, 1.0)
    y = np.asarray(labels).astype(np.float64)
    idx = np.minimum((p * bins).astype(np.int64), bins - 1)
    return {
        "cal-count": [int(v) for v in np.bincount(idx, minlength=bins)],
        "cal-sum-prob": [float(v) for v in np.bincount(idx, weights=p, minlength=bins)],
        "cal-sum-label": [int(round(v)) for v in np.bincount(idx, weights=y, minlength=bins)],
        "sq-error-sum": float(((p - y) ** 2).sum()),
    }


def brier_score(sq_error_sum: float, n: int) -> float:
    """Mean squared error of the predicted probability (NaN without cases)."""
    return float(sq_error_sum) / n if n else float("nan")


@dataclass(frozen=True)
class ReliabilityPoint:
    """One calibration bin: cases, mean predicted probability, observed positive fraction."""

    bin: int
    n: int
    mean_predicted: float
    observed: float


def reliability_curve(
    cal_count: Sequence[int], cal_sum_prob: Sequence[float], cal_sum_label: Sequence[int]
) -> list[ReliabilityPoint]:
    """The reliability diagram's points (non-empty bins only)."""
    return [
        ReliabilityPoint(i, int(n), float(sp) / n, float(sl) / n)
        for i, (n, sp, sl) in enumerate(zip(cal_count, cal_sum_prob, cal_sum_label, strict=True))
        if n > 0
    ]


def expected_calibration_error(
    cal_count: Sequence[int], cal_sum_prob: Sequence[float], cal_sum_label: Sequence[int]
) -> float:
    """ECE = Σ_b (n_b / n) · |mean predicted_b − observed_b| over the fixed bins."""
    n = float(np.sum(cal_count))
    if n == 0:
        return float("nan")
    gap = np.abs(np.asarray(cal_sum_prob, dtype=np.float64) - np.asarray(cal_sum_label))
    return float(gap.sum() / n)


def hanley_mcneil_se(auc: float, n_pos: int, n_neg: int) -> float:
    """Hanley and McNeil's (1982) standard error of an AUC from its value and class sizes."""
    a = min(max(auc, 1e-6), 1 - 1e-6)
    q1, q2 = a / (2 - a), 2 * a * a / (1 + a)
    var = (a * (1 - a) + (n_pos - 1) * (q1 - a * a) + (n_neg - 1) * (q2 - a * a)) / max(
        1, n_pos * n_neg
    )
    return math.sqrt(max(var, 0.0))


def wilson_interval(successes: int, n: int, z: float = 1.959963984540054) -> tuple[float, float]:
    """Wilson score interval of a binomial proportion (NaNs when ``n`` is 0)."""
    if n <= 0:
        return float("nan"), float("nan")
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return float(max(0.0, centre - half)), float(min(1.0, centre + half))


@dataclass(frozen=True)
class DeLongAUC:
    """Exact Mann–Whitney AUC with DeLong's standard error and 95 % interval."""

    auc: float
    se: float
    ci_low: float
    ci_high: float


def delong_auc(scores: np.ndarray, labels: np.ndarray, z: float = 1.959963984540054) -> DeLongAUC:
    """AUC of unbinned scores with DeLong et al. (1988) variance (ties count half).

    ``V10_i`` is the fraction of negatives a positive ``i`` outranks, ``V01_j`` the fraction
    of positives outranking a negative ``j``; ``var = s²(V10)/m + s²(V01)/n``. The interval is
    ``auc ± z·se`` clipped to [0, 1].
    """
    s = np.asarray(scores, dtype=np.float64)
    y = np.asarray(labels).astype(bool)
    pos, neg = np.sort(s[y]), np.sort(s[~y])
    m, n = pos.size, neg.size
    if m == 0 or n == 0:
        nan = float("nan")
        return DeLongAUC(nan, nan, nan, nan)
    v10 = (np.searchsorted(neg, pos, "left") + np.searchsorted(neg, pos, "right")) / (2.0 * n)
    v01 = (m - (np.searchsorted(pos, neg, "left") + np.searchsorted(pos, neg, "right")) / 2.0) / m
    auc = float(v10.mean())
    var = (v10.var(ddof=1) / m if m > 1 else 0.0) + (v01.var(ddof=1) / n if n > 1 else 0.0)
    se = float(np.sqrt(var))
    return DeLongAUC(auc, se, max(0.0, auc - z * se), min(1.0, auc + z * se))


def roc_from_histograms(
    hist_pos: Sequence[int], hist_neg: Sequence[int]
) -> list[tuple[float, float]]:
    """ROC points ``(1 − specificity, sensitivity)`` at every bin edge, from (0, 0) to (1, 1)."""
    pos = np.asarray(hist_pos, dtype=np.float64)
    neg = np.asarray(hist_neg, dtype=np.float64)
    if pos.sum() == 0 or neg.sum() == 0:
        return []
    # calling "positive" every bin at or above edge e, for e from the top down
    tpr = np.concatenate([[0.0], np.cumsum(pos[::-1])]) / pos.sum()
    fpr = np.concatenate([[0.0], np.cumsum(neg[::-1])]) / neg.sum()
    keep = np.concatenate([[True], (np.diff(tpr) != 0) | (np.diff(fpr) != 0)])
    return [(float(f), float(t)) for f, t in zip(fpr[keep], tpr[keep], strict=True)]


def predictive_values(
    sensitivity: float, specificity: float, prevalence: float
) -> tuple[float, float]:
    """PPV and NPV by Bayes' rule at ``prevalence`` (NaN where undefined)."""
    se, sp, pi = sensitivity, specificity, prevalence
    tp, fp = se * pi, (1 - sp) * (1 - pi)
    tn, fn = sp * (1 - pi), (1 - se) * pi
    ppv = tp / (tp + fp) if tp + fp > 0 else float("nan")
    npv = tn / (tn + fn) if tn + fn > 0 else float("nan")
    return float(ppv), float(npv)
