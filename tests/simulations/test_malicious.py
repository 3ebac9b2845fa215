"""The malicious site's tampering, exact (the whole-federation runs are in test_robust_e2e.py)."""

from __future__ import annotations

import numpy as np
import pytest
from flwr.app import MetricRecord, RecordDict

from fedmi.shared import contract
from fedmi.simulations.malicious import LIE, LocalGrid, tamper


def _content(w: list[float], n: int = 10) -> RecordDict:
    return RecordDict(
        {
            contract.ARRAYS: contract.array_record(
                {"w": np.array(w, np.float32), "k": np.array([3], np.int64)}
            ),
            contract.METRICS: MetricRecord({"num-examples": n}),
        }
    )


def test_sign_flip_count_lie_and_noise():
    sent = _content([1.0, 1.0])
    flipped = tamper("sign-flip", _content([1.5, 0.5]), sent)
    np.testing.assert_array_equal(flipped[contract.ARRAYS]["w"].numpy(), [-499.0, 501.0])
    assert flipped[contract.ARRAYS]["k"].numpy().tolist() == [3]  # counters as sent
    assert tamper("count-lie", _content([1.5, 0.5]), sent)[contract.METRICS]["num-examples"] == LIE
    noisy = tamper("noise", _content([1.5, 0.5]), sent, seed=0)[contract.ARRAYS]["w"].numpy()
    expected = 1.0 + np.random.default_rng(0).normal(size=2)
    np.testing.assert_allclose(noisy, expected.astype(np.float32))


def test_an_unknown_attack_is_named():
    with pytest.raises(ValueError, match="sign-flip, count-lie"):
        LocalGrid(2, {}, attacker=1, attack="flip")
