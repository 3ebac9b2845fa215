"""Small-cell suppression applied at the site before any statistic leaves it.

The rule (declared in :mod:`fedmi.shared.contract`, :data:`~fedmi.shared.contract.DEFAULT_MIN_CELL_COUNT`):
no released cell may describe 0 < n < k cases, where ``k`` is the site's ``min-cell-count``.

* Score histograms (``hist-pos``/``hist-neg``, one cell per bin and class) and calibration
  bins (``cal-*``, one cell per bin) are *merged*: neighbouring bins are pooled into
  contiguous groups until every group's cells are 0 or at least ``k``; a group's counts
  are placed in one bin inside it (:func:`merge_score_histograms` picks the grouping that
  ties the fewest positive/negative pairs; :func:`merge_calibration_bins`). Pooling keeps
  the AUC's binning bound honest: pairs of a merged group count as ties and widen it.
* Rates are released only when their denominators are at least ``k``: a site with fewer
  than ``k`` evaluated cases, or fewer than ``k`` of either class, sends counts only with
  ``status = "suppressed"`` (:func:`suppress_evaluation`).
* Category counts (scans per tracer or scanner) below ``k`` are pooled into ``other``;
  when ``other`` itself stays below ``k`` the smallest released categories join it
  (:func:`suppress_categories`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from fedmi.shared.contract import OTHER

#: What a suppressed evaluation reply still carries.
COUNT_KEYS = ("num-examples", "num-positive")


def _ok(cells: np.ndarray, k: int) -> bool:
    return bool(np.all((cells == 0) | (cells >= k)))


def merge_groups(cells: np.ndarray, k: int) -> list[tuple[int, int]] | None:
    """Contiguous bin groups ``(first, last)`` whose summed cells are each 0 or ≥ ``k``.

    Parameters
    ----------
    cells
        ``(bins, c)`` counts: one column per cell kind (e.g. positives and negatives).
    k
        Minimum cell count.

    Returns
    -------
    list of (int, int) or None
        Groups covering every non-empty bin, left to right (bins already fine stay on
        their own when they start a group); ``None`` when even pooling everything
        leaves a cell with 0 < n < ``k``.
    """
    cells = np.asarray(cells, dtype=np.int64).reshape(len(cells), -1)
    groups: list[tuple[int, int]] = []
    start, acc = 0, np.zeros(cells.shape[1], dtype=np.int64)
    for i, row in enumerate(cells):
        acc = acc + row
        if acc.any() and _ok(acc, k):
            groups.append((start, i))
            start, acc = i + 1, np.zeros_like(acc)
    if acc.any():  # a short tail: pool it into the groups to its left until it passes
        last = len(cells) - 1
        while groups and not _ok(acc, k):
            first, _ = groups.pop()
            acc = acc + cells[first:start].sum(axis=0)
            start = first
        if not _ok(acc, k):
            return None
        groups.append((start, last))
    return groups


def small_cells(cells: np.ndarray, k: int) -> int:
    """How many cells hold 0 < n < ``k`` cases."""
    cells = np.asarray(cells)
    return int(((cells > 0) & (cells < k)).sum())


def score_groups(cells: np.ndarray, k: int) -> list[tuple[int, int]] | None:
    """Contiguous groups for a two-class histogram that tie the fewest positive/negative pairs.

    Dynamic programming over the bins: every group's positive and negative counts must be
    0 or at least ``k``; among valid partitions the one with the fewest within-group
    (tied) pairs wins — the pairs that widen the AUC's binning bound — then the one with
    more groups. ``cells`` is ``(bins, 2)``; ``None`` when no valid partition exists.
    """
    cells = np.asarray(cells, dtype=np.int64)
    bins = len(cells)
    cum = np.vstack([np.zeros((1, 2), dtype=np.int64), np.cumsum(cells, axis=0)])
    inf = (float("inf"), 0)
    best: list[tuple[float, int]] = [(0.0, 0)] + [inf] * bins
    back = [0] * (bins + 1)
    for i in range(1, bins + 1):
        for j in range(i - 1, -1, -1):
            if best[j] == inf:
                continue
            pos, neg = cum[i] - cum[j]
            if not ((pos == 0 or pos >= k) and (neg == 0 or neg >= k)):
                continue
            cost = (best[j][0] + float(pos) * float(neg), best[j][1] - int(pos + neg > 0))
            if cost < best[i]:
                best[i], back[i] = cost, j
    if best[bins] == inf:
        return None
    groups: list[tuple[int, int]] = []
    i = bins
    while i > 0:
        j = back[i]
        if cells[j:i].any():
            groups.append((j, i - 1))
        i = j
    return groups[::-1]


def merge_score_histograms(
    hist_pos: Sequence[int], hist_neg: Sequence[int], k: int
) -> tuple[list[int], list[int], int] | None:
    """Pool score-histogram bins so no bin holds 0 < n < ``k`` positives or negatives.

    Groups come from :func:`score_groups` (fewest tied pairs); a merged group's counts go
    to the middle of its occupied bins. Returns the new histograms and the number of
    small cells before merging, or ``None`` when either class has fewer than ``k`` cases.
    """
    cells = np.stack([np.asarray(hist_pos), np.asarray(hist_neg)], axis=1).astype(np.int64)
    groups = score_groups(cells, k)
    if groups is None:
        return None
    out = np.zeros_like(cells)
    for first, last in groups:
        occupied = np.flatnonzero(cells[first : last + 1].any(axis=1)) + first
        out[(int(occupied[0]) + int(occupied[-1])) // 2] += cells[first : last + 1].sum(axis=0)
    return [int(v) for v in out[:, 0]], [int(v) for v in out[:, 1]], small_cells(cells, k)


def merge_calibration_bins(
    count: Sequence[int], sum_prob: Sequence[float], sum_label: Sequence[int], k: int
) -> tuple[list[int], list[float], list[int], int] | None:
    """Pool calibration bins so no bin holds 0 < n < ``k`` cases.

    A merged group's sums go to the bin holding the group's mean predicted probability
    (always inside the group), so the reliability curve stays in place.
    """
    n = np.asarray(count, dtype=np.int64)
    sp = np.asarray(sum_prob, dtype=np.float64)
    sl = np.asarray(sum_label, dtype=np.int64)
    groups = merge_groups(n[:, None], k)
    if groups is None:
        return None
    bins = len(n)
    out_n, out_sp, out_sl = np.zeros_like(n), np.zeros_like(sp), np.zeros_like(sl)
    for first, last in groups:
        gn = int(n[first : last + 1].sum())
        gsp, gsl = float(sp[first : last + 1].sum()), int(sl[first : last + 1].sum())
        target = min(max(int(gsp / gn * bins), first), last, bins - 1)
        out_n[target] += gn
        out_sp[target] += gsp
        out_sl[target] += gsl
    return (
        [int(v) for v in out_n],
        [float(v) for v in out_sp],
        [int(v) for v in out_sl],
        small_cells(n, k),
    )


def suppress_evaluation(stats: Mapping[str, object], k: int) -> tuple[dict[str, object], str]:
    """Apply the small-cell rule to one evaluation reply's metrics.

    Parameters
    ----------
    stats
        The site's full evaluation metrics (declared names of ``EVAL_METRICS``).
    k
        The site's minimum cell count.

    Returns
    -------
    (dict, str)
        The metrics that may leave, with ``min-cell-count`` and ``suppressed-cells``
        added, and the reply status: ``"ok"``, or ``"suppressed"`` when the site has
        fewer than ``k`` cases of either class (then only :data:`COUNT_KEYS` remain).
    """
    n = int(stats.get("num-examples", 0))  # type: ignore[call-overload]
    n_pos = int(stats.get("num-positive", 0))  # type: ignore[call-overload]
    out: dict[str, object] = dict(stats)
    out["min-cell-count"] = int(k)
    if n < k or n_pos < k or n - n_pos < k:
        kept = {key: stats[key] for key in COUNT_KEYS if key in stats}
        return kept | {"min-cell-count": int(k), "suppressed-cells": 0}, "suppressed"
    suppressed = 0
    if "hist-pos" in stats and "hist-neg" in stats:
        merged = merge_score_histograms(stats["hist-pos"], stats["hist-neg"], k)  # type: ignore[arg-type]
        assert merged is not None  # both classes hold at least k cases
        out["hist-pos"], out["hist-neg"], small = merged
        suppressed += small
    if "cal-count" in stats:
        cal = merge_calibration_bins(
            stats["cal-count"],  # type: ignore[arg-type]
            stats["cal-sum-prob"],  # type: ignore[arg-type]
            stats["cal-sum-label"],  # type: ignore[arg-type]
            k,
        )
        assert cal is not None  # at least k cases in all
        out["cal-count"], out["cal-sum-prob"], out["cal-sum-label"], small = cal
        suppressed += small
    out["suppressed-cells"] = suppressed
    return out, "ok"


def suppress_categories(counts: Mapping[str, int], k: int) -> tuple[dict[str, int], int]:
    """Pool categories with fewer than ``k`` scans into :data:`~fedmi.shared.contract.OTHER`.

    Returns the releasable counts (every value ≥ ``k``) and how many categories were
    pooled or withheld. When the pool stays below ``k``, the smallest released categories
    join it; when the total is below ``k`` nothing is released.
    """
    counts = {str(name): int(c) for name, c in counts.items() if int(c) > 0}
    kept = {name: c for name, c in counts.items() if c >= k and name != OTHER}
    pooled = sum(counts.values()) - sum(kept.values())
    while 0 < pooled < k and kept:
        smallest = min(kept, key=lambda name: (kept[name], name))
        pooled += kept.pop(smallest)
    withheld = len(counts) - len(kept)
    if 0 < pooled < k:
        return {}, len(counts)
    if pooled:
        kept[OTHER] = pooled
    return dict(sorted(kept.items())), withheld
