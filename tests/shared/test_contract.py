import numpy as np
from flwr.app import ConfigRecord, MetricRecord, RecordDict

from fedmi.shared import contract

EXPECTED = {"w": ((2, 3), "float32"), "b": ((3,), "float32")}


def _train_reply(**metric_overrides):
    metrics = {"num-examples": 10, "train-loss": 0.5, "train-accuracy": 0.8, **metric_overrides}
    return RecordDict(
        {
            contract.ARRAYS: contract.array_record(
                {"w": np.zeros((2, 3), np.float32), "b": np.zeros(3, np.float32)}
            ),
            contract.METRICS: MetricRecord(metrics),
            contract.SITE: ConfigRecord({"site-id": "site-a", "role": "train", "status": "ok"}),
        }
    )


def test_conforming_train_reply_passes():
    assert contract.check_reply(contract.TRAIN, _train_reply(), EXPECTED) == []


def test_undeclared_metric_is_refused():
    problems = contract.check_reply(
        contract.TRAIN, _train_reply(**{"patient-0042-loss": 0.1}), EXPECTED
    )
    assert any("not declared" in p for p in problems)


def test_undeclared_record_is_refused():
    reply = _train_reply()
    reply["predictions"] = MetricRecord({"p": [0.1, 0.9]})
    assert any(
        "record 'predictions'" in p for p in contract.check_reply(contract.TRAIN, reply, EXPECTED)
    )


def test_site_fields_must_be_declared_tokens():
    reply = _train_reply()
    reply[contract.SITE] = ConfigRecord({"site-id": "site-a", "path": "/data/dicom"})
    problems = contract.check_reply(contract.TRAIN, reply, EXPECTED)
    assert any("'path' is not declared" in p for p in problems)
    reply[contract.SITE] = ConfigRecord({"site-id": "Doe^Jane 1950-01-01"})
    assert contract.check_reply(contract.TRAIN, reply, EXPECTED)


def test_histogram_length_and_integrality():
    good = {k: v for k, v in _eval_metrics().items()}
    assert (
        contract.check_reply(contract.EVALUATE, RecordDict({contract.METRICS: MetricRecord(good)}))
        == []
    )
    bad = dict(good, **{"hist-pos": [0.5] * contract.HIST_BINS})
    assert contract.check_reply(
        contract.EVALUATE, RecordDict({contract.METRICS: MetricRecord(bad)})
    )
    short = dict(good, **{"hist-neg": [1, 2]})
    assert contract.check_reply(
        contract.EVALUATE, RecordDict({contract.METRICS: MetricRecord(short)})
    )


def _eval_metrics():
    nb, nt = contract.HIST_BINS, len(contract.THRESHOLDS)
    return {
        "num-examples": 4,
        "num-positive": 2,
        "loss-sum": 1.0,
        "hist-pos": [0] * (nb - 1) + [2],
        "hist-neg": [2] + [0] * (nb - 1),
        "tp": [2] * nt,
        "fp": [0] * nt,
        "tn": [2] * nt,
        "fn": [0] * nt,
    }


def test_status_reply_without_weights_is_allowed():
    reply = RecordDict(
        {
            contract.METRICS: MetricRecord({"num-examples": 0}),
            contract.SITE: ConfigRecord({"site-id": "s", "status": "budget-exhausted"}),
        }
    )
    assert contract.check_reply(contract.TRAIN, reply, EXPECTED) == []


def _normative_stats(r: int = 4, **over):
    metrics = {
        "num-examples": 12,
        "nrm-count": 12.0,
        "nrm-xtx": [1.0] * 9,
        "nrm-xty": [0.0] * (3 * r),
        "nrm-yty": [0.1] * r,
        "nrm-noise-sd": [0.0] * 4,
        "nrm-clip": 1.0,
        **over,
    }
    return RecordDict(
        {
            contract.METRICS: MetricRecord(metrics),
            contract.SITE: ConfigRecord({"site-id": "site-a", "role": "train", "status": "ok"}),
        }
    )


def test_normative_statistics_must_be_consistent():
    assert contract.check_reply(contract.NORMATIVE_STATS, _normative_stats()) == []
    cases = {
        "length": _normative_stats(**{"nrm-xty": [0.0] * 11}),
        "one region": _normative_stats(r=1),
        "too many regions": _normative_stats(r=contract.NORMATIVE_REGIONS_MAX + 1),
        "xtx shape": _normative_stats(**{"nrm-xtx": [1.0] * 4}),
        "undeclared": _normative_stats(**{"nrm-profile-0": [0.1] * 4}),
        "infinite": _normative_stats(**{"nrm-yty": [float("inf")] * 4}),
        "negative noise": _normative_stats(**{"nrm-noise-sd": [-1.0] * 4}),
    }
    for name, reply in cases.items():
        assert contract.check_reply(contract.NORMATIVE_STATS, reply), name
    partial = _normative_stats()
    del partial[contract.METRICS]["nrm-yty"]
    assert any("need all of" in p for p in contract.check_reply(contract.NORMATIVE_STATS, partial))


def test_normative_evaluation_histograms_are_declared_counts():
    g, b = contract.NORMATIVE_GROUPS, contract.NORMATIVE_BINS
    metrics = {
        "num-examples": 5,
        "min-cell-count": 1,
        "nrm-hist": [0] * (g * b),
        "nrm-old-count": 1.0,
        "nrm-old-fp": [0.1, 0.2],
        "nrm-fp": [0.1, 0.2],
        "nrm-match": [0] * g,
        "nrm-clf-positive": [0] * g,
    }
    ok = RecordDict({contract.METRICS: MetricRecord(metrics)})
    assert contract.check_reply(contract.NORMATIVE_EVAL, ok) == []
    for bad in (
        {"nrm-hist": [0.5] * (g * b)},  # not counts
        {"nrm-hist": [0] * b},  # one group only
        {"nrm-match": [-1] * g},
        {"nrm-scores": [2.5, 3.1]},  # per-scan scores never leave
    ):
        reply = RecordDict({contract.METRICS: MetricRecord({**metrics, **bad})})
        assert contract.check_reply(contract.NORMATIVE_EVAL, reply), bad
