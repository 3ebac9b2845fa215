"""Evaluation sufficient statistics and the metrics computed from them.

A site turns its per-scan scores into fixed-bin histograms per class and confusion counts
at fixed thresholds (:func:`sufficient_statistics`); only those leave the site. The server
computes AUC, sensitivity and specificity from them (:func:`auc_from_histograms`,
:func:`operating_point`) and pools sites by summing histograms.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from shared.contract import HIST_BINS, OPERATING_THRESHOLD, THRESHOLDS


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
    return out
