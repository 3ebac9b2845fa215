"""The head benchmark's figures: balanced accuracy at a threshold and the best any gives."""

import argparse

import numpy as np
import pytest

from benchmarks.bench_regional_head import balanced_accuracy, figures, parse_variant


def test_balanced_accuracy_and_the_best_threshold():
    scores = np.array([0.1, 0.4, 0.45, 0.6, 0.55, 0.9])
    labels = np.array([0, 0, 1, 0, 1, 1])
    # at 0.5: positives 0.45 (missed), 0.55, 0.9 → 2/3; negatives 0.1, 0.4 right, 0.6 wrong → 2/3
    assert balanced_accuracy(scores, labels, 0.5) == pytest.approx(2 / 3)
    f = figures(scores, labels)
    assert f["ba_at_0.5"] == pytest.approx(2 / 3)
    # the best cut is at 0.45 (every positive, two of three negatives): 5/6
    assert f["best_ba"] == pytest.approx(5 / 6)
    assert f["auc"] == pytest.approx(7 / 9)
    # a collapse (every scan one class) reads 0.5
    assert balanced_accuracy(np.full(6, 0.99), labels, 0.5) == 0.5


def test_variants_are_parsed_or_refused():
    assert parse_variant("centred:3.0") == (True, 3.0)
    assert parse_variant("uncentred:0.6") == (False, 0.6)
    for bad in ("centered:3", "centred", "centred:"):
        with pytest.raises(argparse.ArgumentTypeError, match="centred:LR"):
            parse_variant(bad)
