"""Evaluation statistics under DP: what a site with DP on sends instead of exact ones.

Three Gaussian mechanisms on the evaluated scans (add/remove one scan; sizes are public):

* ``count``: the number of positives (sensitivity 1);
* ``histogram``: the per-class score histograms in :data:`DP_HIST_BINS` deciles (one scan
  is one cell: sensitivity 1) — the deciles give the confusion counts at every threshold
  and the calibration bins exactly, and ten cells carry far less noise than a hundred; each
  decile's count is placed in its middle bin of the declared 100-bin histogram;
* ``auc``: the Mann–Whitney AUC computed as ``S / (max(P, m)·max(N, m))`` (``S`` the
  positive-over-negative pairs, ties half), whose sensitivity is at most ``1/m`` for any
  fixed ``m`` — ``m`` is taken from the *noisy* count, three noise standard deviations
  below the smaller class, so it is itself public; when the true classes are at least ``m``
  (nearly always) the statistic is the exact AUC.

Everything else in the reply is derived from those noisy values at the site (confusion
counts and calibration bins from the histogram, intervals from the noisy AUC and counts),
which costs nothing more. The AUC's standard error is Hanley and McNeil's from the noisy
AUC and counts, widened by the noise: its interval includes the privacy noise.

The ``evaluate.external`` extras follow the same pattern: MC-dropout calibration from a
noisy 10-bin histogram per class of the MC mean, referral counts (a scan counts at up to
every rate: sensitivity √rates), the OOD-score histogram and the biomarker histograms
(one scan in one cell of each of the two markers: sensitivity √2).
"""

from __future__ import annotations

import math

import numpy as np

from fedmi.client.privacy.release import Release
from fedmi.shared.contract import (
    CALIBRATION_BINS,
    HIST_BINS,
    OPERATING_THRESHOLD,
    REFERRAL_RATES,
    THRESHOLDS,
)
from fedmi.shared.stats import hanley_mcneil_se, operating_point, wilson_interval
from fedmi.shared.uncertainty import mc_summary, referral_statistics

#: mechanism weights of a release's ρ (the AUC is what the report leads with)
EVALUATION_MECHANISMS = {"count": 0.1, "histogram": 0.3, "auc": 0.6}
#: extras of ``evaluate.external``, each a small part of the release
EXTRA_MECHANISMS = {
    "mc-calibration": 0.03,
    "referral": 0.03,
    "ood": 0.05,
    "biomarker-count": 0.02,
    "biomarker": 0.05,
}
Z95 = 1.959963984540054
#: histogram cells of a DP release (on the thresholds and calibration bins' edges)
DP_HIST_BINS = 10


def noisy_counts(release: Release, mechanism: str, counts, sensitivity: float = 1.0) -> list[int]:
    """Counts plus noise, rounded and clipped at 0 (post-processing)."""
    noisy = release.gaussian(mechanism, np.asarray(counts, dtype=np.float64), sensitivity)
    return [int(v) for v in np.clip(np.rint(noisy), 0, None)]


def auc_m(scores: np.ndarray, labels: np.ndarray, m: int) -> float:
    """``S / (max(P, m)·max(N, m))``: the exact AUC when both classes hold ``m`` or more."""
    y = np.asarray(labels).astype(bool)
    pos, neg = np.asarray(scores)[y], np.asarray(scores)[~y]
    pairs = (pos[:, None] > neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum()
    return float(pairs) / (max(len(pos), m) * max(len(neg), m))


def _histograms(scores: np.ndarray, labels: np.ndarray, bins: int) -> tuple[np.ndarray, ...]:
    idx = np.minimum((np.clip(scores, 0, 1) * bins).astype(np.int64), bins - 1)
    y = labels.astype(bool)
    return np.bincount(idx[y], minlength=bins), np.bincount(idx[~y], minlength=bins)


def spread(coarse: list[int], bins: int) -> list[int]:
    """A coarse histogram as a ``bins``-long one: each cell's count in its middle bin."""
    out = [0] * bins
    per = bins // len(coarse)
    for i, count in enumerate(coarse):
        out[i * per + per // 2] = int(count)
    return out


def derived_statistics(hist_pos: list[int], hist_neg: list[int]) -> dict[str, object]:
    """Confusion counts, calibration bins, squared-error and log-loss sums from histograms.

    Scores are taken at their bin's midpoint; the thresholds and calibration bins fall on
    histogram bin edges, so the counts are those of the histogram exactly.
    """
    hp, hn = np.asarray(hist_pos), np.asarray(hist_neg)
    bins = len(hp)
    mid = (np.arange(bins) + 0.5) / bins
    out: dict[str, object] = {k: [] for k in ("tp", "fp", "tn", "fn")}
    for t in THRESHOLDS:
        cut = int(round(t * bins))
        out["tp"].append(int(hp[cut:].sum()))  # type: ignore[union-attr]
        out["fp"].append(int(hn[cut:].sum()))  # type: ignore[union-attr]
        out["tn"].append(int(hn[:cut].sum()))  # type: ignore[union-attr]
        out["fn"].append(int(hp[:cut].sum()))  # type: ignore[union-attr]
    per = bins // CALIBRATION_BINS
    total = (hp + hn).reshape(CALIBRATION_BINS, per)
    out["cal-count"] = [int(v) for v in total.sum(1)]
    out["cal-sum-label"] = [int(v) for v in hp.reshape(CALIBRATION_BINS, per).sum(1)]
    out["cal-sum-prob"] = [
        float(v) for v in ((hp + hn) * mid).reshape(CALIBRATION_BINS, per).sum(1)
    ]
    out["sq-error-sum"] = float((hp * (1 - mid) ** 2 + hn * mid**2).sum())
    p = np.clip(mid, 1e-7, 1 - 1e-7)
    out["loss-sum"] = float(-(hp * np.log(p) + hn * np.log(1 - p)).sum())
    return out


def private_evaluation(
    scores: np.ndarray, labels: np.ndarray, release: Release, min_cell_count: int
) -> tuple[dict[str, object], str]:
    """The declared evaluation metrics of ``scores`` against ``labels`` under DP.

    Returns the metrics and the status: ``suppressed`` when the noisy count of either
    class is below ``min_cell_count``, else ``ok``. A suppressed site's noisy histograms
    go out only as ``pool-hist-pos`` / ``pool-hist-neg``: the coordinator adds them to
    the other training sites' to choose the federation's operating point and reports no
    figure of this site from them. They are the same Gaussian release as ``hist-pos`` /
    ``hist-neg`` (charged when the release was opened, whatever the status): what a
    small class count forbids is reading the site's own sensitivity or AUC off a
    histogram dominated by noise, not the DP release itself.
    """
    y = np.asarray(labels).astype(np.int64)
    s = np.asarray(scores, dtype=np.float64)
    n = int(y.size)
    n_pos = min(n, noisy_counts(release, "count", [int(y.sum())])[0])
    stats: dict[str, object] = {"num-examples": n, "num-positive": n_pos}
    hp, hn = _histograms(s, y, DP_HIST_BINS)
    noisy_pos = spread(noisy_counts(release, "histogram", hp), HIST_BINS)
    noisy_neg = spread(noisy_counts(release, "histogram", hn), HIST_BINS)
    if min(n_pos, n - n_pos) < min_cell_count:
        stats["pool-hist-pos"], stats["pool-hist-neg"] = noisy_pos, noisy_neg
        return stats, "suppressed"
    stats["hist-pos"], stats["hist-neg"] = noisy_pos, noisy_neg
    stats |= derived_statistics(stats["hist-pos"], stats["hist-neg"])  # type: ignore[arg-type]
    stats |= _noisy_auc(s, y, release, n_pos, min_cell_count)
    op = operating_point(stats, OPERATING_THRESHOLD)  # type: ignore[arg-type]
    stats["sens-ci-low"], stats["sens-ci-high"] = wilson_interval(op.tp, op.tp + op.fn)
    stats["spec-ci-low"], stats["spec-ci-high"] = wilson_interval(op.tn, op.tn + op.fp)
    return stats, "ok"


def _noisy_auc(
    s: np.ndarray, y: np.ndarray, release: Release, n_pos: int, min_cell_count: int
) -> dict[str, object]:
    """The AUC mechanism (module docstring) and its noise-inclusive interval."""
    n = int(y.size)
    m = int(math.floor(min(n_pos, n - n_pos) - 3 * release.sd("count")))
    if m < min_cell_count:
        return {}
    noise_sd = release.sd("auc", 1.0 / m)
    auc = float(np.clip(release.gaussian("auc", auc_m(s, y, m), 1.0 / m), 0.0, 1.0))
    se = math.sqrt(hanley_mcneil_se(auc, n_pos, n - n_pos) ** 2 + noise_sd**2)
    return {
        "auc-exact": auc,
        "auc-noise-sd": noise_sd,
        "auc-se": min(1.0, se),
        "auc-ci-low": max(0.0, auc - Z95 * se),
        "auc-ci-high": min(1.0, auc + Z95 * se),
    }


def private_uncertainty(
    pass_probs: np.ndarray, labels: np.ndarray, release: Release
) -> dict[str, object]:
    """MC-dropout calibration and referral counts under DP (module docstring)."""
    y = np.asarray(labels).astype(np.int64)
    mean, entropy, _ = mc_summary(pass_probs)
    hp, hn = _histograms(mean, y, CALIBRATION_BINS)
    noisy_p = noisy_counts(release, "mc-calibration", hp)
    noisy_n = noisy_counts(release, "mc-calibration", hn)
    derived = derived_statistics(noisy_p, noisy_n)
    retained, correct = referral_statistics(mean, y, entropy, REFERRAL_RATES)
    noisy_correct = noisy_counts(
        release, "referral", correct, sensitivity=math.sqrt(len(REFERRAL_RATES))
    )
    return {
        "mc-passes": int(np.asarray(pass_probs).shape[0]),
        "mc-sq-error-sum": derived["sq-error-sum"],
        "mc-cal-count": derived["cal-count"],
        "mc-cal-sum-prob": derived["cal-sum-prob"],
        "mc-cal-sum-label": derived["cal-sum-label"],
        "referral-retained": [int(v) for v in retained],
        "referral-correct": [min(c, r) for c, r in zip(noisy_correct, retained, strict=True)],
    }


def private_ood(scores_hist: list[int], n: int, release: Release) -> dict[str, object]:
    """The OOD-score histogram under DP (sensitivity 1); the number scored is public."""
    return {"ood-num-examples": int(n), "ood-hist": noisy_counts(release, "ood", scores_hist)}


def private_biomarker(
    model_hists: tuple[np.ndarray, np.ndarray],
    suvr_hists: tuple[np.ndarray, np.ndarray],
    n_mci: int,
    n_converters: int,
    release: Release,
    min_cell_count: int,
) -> dict[str, object]:
    """The biomarker histograms under DP; the AUCs are computed from them by the server.

    The MCI count and the converter count change together when a converter is added
    (sensitivity √2), and a scan is one cell of the model histogram and one of the SUVR
    histogram (√2).
    """
    n, c = noisy_counts(release, "biomarker-count", [n_mci, n_converters], math.sqrt(2))
    c = min(c, n)
    out: dict[str, object] = {"bio-num-examples": n, "bio-num-converters": c}
    if min(c, n - c) < min_cell_count:
        return out
    root2 = math.sqrt(2)
    for name, (pos, neg) in (("model", model_hists), ("suvr", suvr_hists)):
        out[f"bio-hist-{name}-pos"] = noisy_counts(release, "biomarker", pos, root2)
        out[f"bio-hist-{name}-neg"] = noisy_counts(release, "biomarker", neg, root2)
    return out


#: mechanisms of the embedding-statistic releases (``query.ood``, ``query.features``)
EMBEDDING_MECHANISMS = {"count": 0.2, "sum": 0.4, "second": 0.4}


def clip_rows(features: np.ndarray, norm: float) -> np.ndarray:
    """Each embedding scaled down to L2 norm at most ``norm`` (bounds one scan's weight)."""
    f = np.asarray(features, dtype=np.float64)
    lengths = np.linalg.norm(f, axis=1, keepdims=True)
    return f * np.minimum(1.0, norm / np.maximum(lengths, 1e-12))


def private_class_sums(
    features: np.ndarray,
    labels: np.ndarray,
    release: Release,
    clip_norm: float,
    *,
    outer: bool,
    n_classes: int = 2,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Noisy per-class counts, feature sums and second moments of clipped embeddings.

    ``outer``: the second moments are full outer-product sums (``query.ood``; Frobenius
    sensitivity ``C²``), else per-feature sums of squares (``query.features``; L2
    sensitivity at most ``C²``). Counts have sensitivity 1, sums ``C``. Outer products are
    made symmetric again after the noise (post-processing).
    """
    f = clip_rows(features, clip_norm)
    y = np.asarray(labels).astype(np.int64)
    d = f.shape[1]
    counts = np.array([(y == c).sum() for c in range(n_classes)], dtype=np.float64)
    sums = np.stack([f[y == c].sum(0) for c in range(n_classes)]) if d else np.zeros((n_classes, 0))
    if outer:
        second = np.stack([f[y == c].T @ f[y == c] for c in range(n_classes)])
    else:
        second = np.stack([(f[y == c] ** 2).sum(0) for c in range(n_classes)])
    counts = np.clip(np.rint(release.gaussian("count", counts)), 0, None)
    sums = release.gaussian("sum", sums, clip_norm)
    second = release.gaussian("second", second, clip_norm**2)
    if outer:
        second = (second + np.swapaxes(second, 1, 2)) / 2
    return counts, sums, second
