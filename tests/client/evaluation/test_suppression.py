"""Small-cell suppression at the site (table-driven)."""

from __future__ import annotations

import numpy as np
import pytest

from fedmi.client.evaluation.statistics import evaluation_statistics
from fedmi.client.evaluation.suppression import (
    merge_calibration_bins,
    merge_groups,
    merge_score_histograms,
    suppress_categories,
    suppress_evaluation,
)
from fedmi.shared import contract


@pytest.mark.parametrize(
    ("cells", "k", "groups"),
    [
        ([0, 0, 0], 3, []),  # nothing to release
        ([5, 0, 4], 3, [(0, 0), (1, 2)]),  # fine bins stay alone; empty ones join the next
        ([1, 1, 1, 5], 3, [(0, 2), (3, 3)]),  # small bins pool left to right
        ([5, 1], 3, [(0, 1)]),  # a short tail pools into the group to its left
        ([3, 0, 1, 1], 3, [(0, 3)]),
        ([1, 1], 3, None),  # even everything pooled is below k
        ([2, 2, 2], 1, [(0, 0), (1, 1), (2, 2)]),  # k = 1: nothing to merge
    ],
)
def test_merge_groups_single_cell(cells, k, groups):
    assert merge_groups(np.array(cells)[:, None], k) == groups


@pytest.mark.parametrize(
    ("pos", "neg", "k", "want_pos", "want_neg", "small"),
    [
        # both classes' cells must be 0 or >= k: bins 0-1 pool (pos 0+0, neg 3+1)...
        ([0, 0, 4, 0], [3, 1, 0, 0], 4, [0, 0, 4, 0], [4, 0, 0, 0], 2),
        # ...and a bin with 2 positives and 2 negatives pools with its neighbour
        ([2, 2, 0, 0], [2, 2, 0, 0], 4, [4, 0, 0, 0], [4, 0, 0, 0], 4),
        ([5, 0, 0, 5], [0, 5, 5, 0], 5, [5, 0, 0, 5], [0, 5, 5, 0], 0),  # nothing small
    ],
)
def test_merge_score_histograms_table(pos, neg, k, want_pos, want_neg, small):
    out = merge_score_histograms(pos, neg, k)
    assert out == (want_pos, want_neg, small)
    assert sum(out[0]) == sum(pos) and sum(out[1]) == sum(neg)


def test_merge_score_histograms_refuses_a_class_below_k():
    assert merge_score_histograms([1, 2, 0], [5, 5, 5], 5) is None


@pytest.mark.parametrize(
    ("count", "sum_prob", "sum_label", "k", "want"),
    [
        # bins 0 and 1 (1 + 2 cases, mean 0.14) pool into bin 1; bin 9 keeps its 3 cases
        (
            [1, 2, 0, 0, 0, 0, 0, 0, 0, 3],
            [0.08, 0.34, 0, 0, 0, 0, 0, 0, 0, 2.85],
            [0, 1, 0, 0, 0, 0, 0, 0, 0, 3],
            3,
            ([0, 3, 0, 0, 0, 0, 0, 0, 0, 3], [0, 0.42, 0, 0, 0, 0, 0, 0, 0, 2.85], 2),
        ),
        # k = 1 leaves everything alone
        ([1, 0, 2], [0.1, 0, 1.5], [0, 0, 1], 1, ([1, 0, 2], [0.1, 0, 1.5], 0)),
    ],
)
def test_merge_calibration_bins_table(count, sum_prob, sum_label, k, want):
    n, sp, sl, small = merge_calibration_bins(count, sum_prob, sum_label, k)
    assert (n, small) == (want[0], want[2])
    assert sp == pytest.approx(want[1])
    assert sum(sl) == sum(sum_label)
    assert all(c == 0 or c >= k for c in n)


@pytest.mark.parametrize(
    ("counts", "k", "released", "withheld"),
    [
        ({"fdg": 60}, 10, {"fdg": 60}, 0),
        ({"SIEMENS": 40, "GE": 4, "Philips": 7}, 10, {"SIEMENS": 40, "other": 11}, 2),
        ({"A": 40, "B": 12, "C": 3}, 10, {"A": 40, "other": 15}, 2),  # B joins a short pool
        ({"A": 6, "B": 3}, 10, {}, 2),  # total below k: nothing
        ({"A": 0, "B": 20}, 10, {"B": 20}, 0),
        ({"A": 5, "B": 5}, 10, {"other": 10}, 2),
    ],
)
def test_suppress_categories_table(counts, k, released, withheld):
    assert suppress_categories(counts, k) == (released, withheld)


@pytest.mark.parametrize(
    ("n_pos", "n_neg", "k", "status"),
    [
        (30, 30, 10, "ok"),
        (5, 4, 10, "suppressed"),  # fewer than k cases
        (25, 6, 10, "suppressed"),  # fewer than k of one class
        (6, 6, 5, "ok"),
    ],
)
def test_suppress_evaluation_table(n_pos, n_neg, k, status):
    rng = np.random.default_rng(0)
    labels = np.array([1] * n_pos + [0] * n_neg)
    scores = rng.random(labels.size)
    stats, got = evaluation_statistics(scores, labels, k)
    assert got == status
    assert stats["min-cell-count"] == k
    if status == "suppressed":
        assert set(stats) == {"num-examples", "num-positive", "min-cell-count", "suppressed-cells"}
    else:
        for key in ("hist-pos", "hist-neg", "cal-count"):
            assert all(c == 0 or c >= k for c in stats[key]), key
        assert sum(stats["cal-count"]) == labels.size
    assert contract.check_reply(contract.EXTERNAL, _reply(stats, got)) == [], (
        "a suppressed reply must still be declared"
    )


def _reply(stats, status):
    from flwr.app import ConfigRecord, MetricRecord, RecordDict

    return RecordDict(
        {
            contract.METRICS: MetricRecord(stats),
            contract.SITE: ConfigRecord({"site-id": "s", "status": status}),
        }
    )


def test_suppress_evaluation_keeps_exact_counts_and_sums():
    stats = {
        "num-examples": 20,
        "num-positive": 10,
        "hist-pos": [0, 10, 0],
        "hist-neg": [10, 0, 0],
        "loss-sum": 3.0,
    }
    out, status = suppress_evaluation(stats, 10)
    assert status == "ok" and out["suppressed-cells"] == 0 and out["loss-sum"] == 3.0
