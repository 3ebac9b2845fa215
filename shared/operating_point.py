"""The decision threshold and calibration from per-class score histograms (pure maths).

A site releases, per class, the histogram of its scores in ``B`` equal bins of [0, 1]
(``hist-pos``, ``hist-neg``; under DP the noisy deciles placed in the middle bin of each
tenth). Summed over the training sites they are the pooled histograms, and everything here
works on them: the federation's operating point (:func:`choose_threshold`), the confusion
counts at it at any site (:func:`confusion_at`), sensitivity, specificity, PPV and NPV with
Wilson intervals (:func:`rates_at`), calibration (ECE, slope, calibration-in-the-large:
:func:`calibration_summary`) and Platt recalibration (:func:`fit_platt`).

Thresholds are bin edges ``k / B``: a scan is called positive when its score is
``>= threshold``. From histograms the chosen threshold is therefore within one bin width
of the one the pooled unbinned scores would give (:func:`threshold_from_scores`).
Scores inside a bin are taken at the bin's midpoint for the calibration fits.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy.special import expit

from fedmi.shared.stats import OperatingPoint, expected_calibration_error, wilson_interval

#: criteria of the federation's operating point (run config ``operating-point``)
CRITERIA = ("youden", "sensitivity", "specificity")
#: the model card's and report.json's key (shared with ``fedmi-site predict``)
CARD_KEY = "operating_point"
_EPS = 1e-6
_RIDGE = 1e-9


@dataclass(frozen=True)
class ThresholdChoice:
    """A chosen threshold, the rule that chose it and its confusion counts there."""

    threshold: float
    criterion: str
    target: float | None
    point: OperatingPoint


def check_histograms(
    hist_pos: Sequence[float], hist_neg: Sequence[float]
) -> tuple[np.ndarray, ...]:
    """Both histograms as float arrays; ``ValueError`` naming the problem if unusable.

    They must have one length (at least 2), hold finite, non-negative whole counts.
    """
    hp = np.asarray(hist_pos, dtype=np.float64)
    hn = np.asarray(hist_neg, dtype=np.float64)
    if hp.ndim != 1 or hn.ndim != 1 or hp.shape != hn.shape or hp.size < 2:
        raise ValueError(
            f"score histograms must be two 1-D lists of one length >= 2, got {hp.shape}, {hn.shape}"
        )
    for name, h in (("hist-pos", hp), ("hist-neg", hn)):
        if not np.isfinite(h).all() or (h < 0).any() or (h != np.rint(h)).any():
            raise ValueError(f"{name}: counts must be finite, non-negative whole numbers")
    return hp, hn


def confusion_at(
    hist_pos: Sequence[float], hist_neg: Sequence[float], threshold: float
) -> OperatingPoint:
    """Confusion counts when scores ``>= threshold`` are called positive.

    ``threshold`` is rounded to the nearest bin edge (exact for the thresholds chosen here).
    """
    hp, hn = check_histograms(hist_pos, hist_neg)
    cut = int(np.clip(round(float(threshold) * hp.size), 0, hp.size))
    return OperatingPoint(
        cut / hp.size,
        int(hp[cut:].sum()),
        int(hn[cut:].sum()),
        int(hn[:cut].sum()),
        int(hp[:cut].sum()),
    )


#: Among thresholds that tie for the best Youden J the one nearest this: the model's own
#: decision point (a probability of 0.5)
TIE_PIVOT = 0.5


def _select(
    sens: np.ndarray,
    spec: np.ndarray,
    criterion: str,
    target: float | None,
    thresholds: np.ndarray,
) -> int:
    """Index of the chosen cut among candidate cuts sorted by increasing threshold.

    Youden: of the cuts that tie for the largest J, the one whose threshold is nearest
    :data:`TIE_PIVOT` (the lower on an exact tie). A tie means the data cannot tell those
    thresholds apart — histograms whose small cells were merged, or DP deciles, leave wide
    plateaus — and the model's own 0.5 is then kept wherever the data allow it.
    """
    if criterion == "youden":
        j = sens + spec - 1
        best = np.flatnonzero(j >= j.max() - 1e-12)
        return int(best[np.argmin(np.abs(thresholds[best] - TIE_PIVOT))])
    if target is None or not 0 < target < 1:
        raise ValueError(f"criterion {criterion!r} needs a target in (0, 1), got {target!r}")
    if criterion == "sensitivity":  # the highest threshold that still reaches the target
        ok = np.flatnonzero(sens >= target - 1e-12)
        return int(ok[-1]) if ok.size else 0
    if criterion == "specificity":  # the lowest threshold that reaches the target
        ok = np.flatnonzero(spec >= target - 1e-12)
        return int(ok[0]) if ok.size else len(spec) - 1
    raise ValueError(f"unknown criterion {criterion!r}: use one of {', '.join(CRITERIA)}")


def choose_threshold(
    hist_pos: Sequence[float],
    hist_neg: Sequence[float],
    criterion: str = "youden",
    target: float | None = None,
) -> ThresholdChoice:
    """The operating point on pooled histograms: Youden's J, or a target sensitivity or
    specificity (the most specific threshold reaching the sensitivity target, the most
    sensitive one reaching the specificity target).

    Raises ``ValueError`` when either class is empty.
    """
    hp, hn = check_histograms(hist_pos, hist_neg)
    if hp.sum() == 0 or hn.sum() == 0:
        raise ValueError("an operating point needs scans of both classes")
    # cut k calls bins k.. positive, k = 0..B (threshold k/B)
    sens = np.concatenate([np.cumsum(hp[::-1])[::-1], [0.0]]) / hp.sum()
    spec = np.concatenate([[0.0], np.cumsum(hn)]) / hn.sum()
    k = _select(sens, spec, criterion, target, np.arange(hp.size + 1) / hp.size)
    threshold = k / hp.size
    return ThresholdChoice(threshold, criterion, target, confusion_at(hp, hn, threshold))


def threshold_from_scores(
    scores: Sequence[float],
    labels: Sequence[int],
    criterion: str = "youden",
    target: float | None = None,
) -> float:
    """The same rule on unbinned scores: candidate thresholds are the distinct scores.

    Every threshold in ``(previous score, score]`` calls the same scans positive. Youden
    returns, of the tied best cuts, the threshold nearest :data:`TIE_PIVOT` within them (as
    the histogram rule picks the bin edge nearest it on a plateau); the target criteria
    return the score itself.
    """
    s = np.asarray(scores, dtype=np.float64)
    y = np.asarray(labels).astype(bool)
    cands = np.unique(np.concatenate([s, [np.inf]]))
    sens = np.array([(s[y] >= t).mean() for t in cands])
    spec = np.array([(s[~y] < t).mean() for t in cands])
    # the point of each cut's interval (previous score, score] nearest the pivot
    low = np.nextafter(np.concatenate([[-np.inf], cands[:-1]]), np.inf)
    nearest = np.clip(TIE_PIVOT, low, cands)
    k = _select(sens, spec, criterion, target, nearest)
    t = float(nearest[k] if criterion == "youden" else cands[k])
    return min(t, 1.0)


def _proportion(successes: int, n: int) -> dict[str, object]:
    low, high = wilson_interval(successes, n)
    value = successes / n if n else None
    return {
        "value": value,
        "ci": None if n == 0 else [low, high],
        "successes": int(successes),
        "n": int(n),
    }


def rates_at(point: OperatingPoint) -> dict[str, object]:
    """Sensitivity, specificity, PPV, NPV (each with its 95 % Wilson interval and counts)
    and balanced accuracy at ``point``, at the site's own prevalence."""
    tp, fp, tn, fn = point.tp, point.fp, point.tn, point.fn
    sens, spec = _proportion(tp, tp + fn), _proportion(tn, tn + fp)
    ba = (
        (sens["value"] + spec["value"]) / 2  # type: ignore[operator]
        if sens["value"] is not None and spec["value"] is not None
        else None
    )
    return {
        "threshold": point.threshold,
        "sensitivity": sens,
        "specificity": spec,
        "ppv": _proportion(tp, tp + fp),
        "npv": _proportion(tn, tn + fn),
        "balanced_accuracy": ba,
    }


def best_balanced_accuracy(hist_pos: Sequence[float], hist_neg: Sequence[float]) -> float | None:
    """The highest balanced accuracy any bin-edge threshold reaches (None: a class is empty)."""
    hp, hn = check_histograms(hist_pos, hist_neg)
    if hp.sum() == 0 or hn.sum() == 0:
        return None
    choice = choose_threshold(hp, hn, "youden")
    return (choice.point.sensitivity + choice.point.specificity) / 2


# --- calibration -----------------------------------------------------------------------------


def _logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(p, _EPS, 1 - _EPS)
    return np.log(p / (1 - p))


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return expit(z)


def _binned(hist_pos: Sequence[float], hist_neg: Sequence[float]) -> tuple[np.ndarray, ...]:
    """(midpoint probability, weight, label) rows: one per bin and class."""
    hp, hn = check_histograms(hist_pos, hist_neg)
    mid = (np.arange(hp.size) + 0.5) / hp.size
    p = np.concatenate([mid, mid])
    w = np.concatenate([hp, hn])
    y = np.concatenate([np.ones_like(hp), np.zeros_like(hn)])
    keep = w > 0
    return p[keep], w[keep], y[keep]


def weighted_logistic(
    x: np.ndarray, y: np.ndarray, w: np.ndarray, offset: np.ndarray | None = None
) -> np.ndarray:
    """Maximum-likelihood ``(intercept[, slope])`` of ``y ~ a (+ b·x) + offset`` (Newton).

    ``x`` of shape (n, 0) fits the intercept alone. A tiny ridge (:data:`_RIDGE`) keeps
    separable data (a perfectly separating model) finite.
    """
    design = np.column_stack([np.ones(len(y)), x])
    off = np.zeros(len(y)) if offset is None else offset
    beta = np.zeros(design.shape[1])
    for _ in range(100):
        mu = _sigmoid(design @ beta + off)
        grad = design.T @ (w * (y - mu)) - _RIDGE * beta
        hess = (design * (w * mu * (1 - mu))[:, None]).T @ design + _RIDGE * np.eye(len(beta))
        step = np.clip(np.linalg.solve(hess, grad), -5.0, 5.0)  # damped when separable
        beta = beta + step
        if np.abs(step).max() < 1e-10:
            break
    return beta


@dataclass(frozen=True)
class Platt:
    """``p' = σ(a + b·logit p)``: Platt scaling on the model's logit."""

    a: float
    b: float

    def apply(self, p: np.ndarray | float) -> np.ndarray:
        return _sigmoid(self.a + self.b * _logit(np.asarray(p, dtype=np.float64)))


def fit_platt(hist_pos: Sequence[float], hist_neg: Sequence[float]) -> Platt:
    """Platt scaling fitted on pooled histograms (scores at their bin midpoints)."""
    p, w, y = _binned(hist_pos, hist_neg)
    a, b = weighted_logistic(_logit(p)[:, None], y, w)
    return Platt(float(a), float(b))


def fit_intercept(scores: Sequence[float], labels: Sequence[int]) -> float:
    """Commissioning: the intercept shift ``c`` with ``p'' = σ(c + logit p)`` on a few local
    labelled scans (``p`` already the federation's recalibrated probability)."""
    s = np.asarray(scores, dtype=np.float64)
    y = np.asarray(labels, dtype=np.float64)
    if s.size == 0 or y.min() == y.max():
        raise ValueError("intercept recalibration needs labelled scans of both classes")
    (c,) = weighted_logistic(np.zeros((s.size, 0)), y, np.ones_like(y), offset=_logit(s))
    return float(c)


def calibration_summary(
    hist_pos: Sequence[float],
    hist_neg: Sequence[float],
    recalibration: Platt | None = None,
    ece_bins: int = 10,
) -> dict[str, float | None]:
    """ECE (``ece_bins`` equal bins), calibration slope and calibration-in-the-large.

    * ECE = Σ_b (n_b/n)·|mean p_b − observed rate_b|;
    * slope: ``b`` of ``y ~ a + b·logit p`` (1 when calibrated, < 1 when over-confident);
    * calibration-in-the-large (CITL): ``a`` of ``y ~ a + offset(logit p)`` (0 when the
      mean risk is right; > 0 when the model under-predicts).

    With ``recalibration``, the midpoints are mapped through it first.
    """
    p, w, y = _binned(hist_pos, hist_neg)
    if recalibration is not None:
        p = recalibration.apply(p)
    n = w.sum()
    if n == 0 or (w * y).sum() in (0, n):
        return {"ece": None, "slope": None, "citl": None, "n": int(n)}
    b = np.minimum((p * ece_bins).astype(np.int64), ece_bins - 1)
    ece = expected_calibration_error(
        np.bincount(b, weights=w, minlength=ece_bins),
        np.bincount(b, weights=w * p, minlength=ece_bins),
        np.bincount(b, weights=w * y, minlength=ece_bins),
    )
    z = _logit(p)
    _, slope = weighted_logistic(z[:, None], y, w)
    (citl,) = weighted_logistic(np.zeros((len(y), 0)), y, w, offset=z)
    return {"ece": ece, "slope": float(slope), "citl": float(citl), "n": int(n)}


def recalibrated_threshold(threshold: float, platt: Platt) -> float:
    """The operating threshold on the recalibrated scale (σ(a + b·logit t); a monotone map
    when ``b > 0``, so the same scans are called positive)."""
    if threshold <= 0 or threshold >= 1:
        return float(threshold)
    return float(platt.apply(threshold))


def finite(value: float | None) -> float | None:
    """``None`` for NaN/inf (JSON-safe)."""
    return None if value is None or not math.isfinite(value) else float(value)
