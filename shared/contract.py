"""The wire contract: every record and metric that may cross between a site and the server.

This module is the one place that declares what leaves a hospital. The client checks each
outbound reply against it (:func:`check_reply`, called by ``client.egress``) and refuses
to send anything undeclared; the server checks each inbound reply against it again
(``server.ingress``) before using it.

May leave a site: federated weights, example counts, scalar training metrics, evaluation
*sufficient statistics* (fixed-threshold confusion counts, fixed-bin score histograms per
class, loss sums), cumulative privacy spend, counts per tracer/scanner, and the site's
chosen pseudonym and role. Never: pixels, headers, UIDs, names, dates, paths, per-patient
values or site-local (harmonization) parameters.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

# --- record names inside a Message's RecordDict -------------------------------------------
ARRAYS = "arrays"  #: ArrayRecord of federated weights (server → site, site → server)
CONFIG = "config"  #: ConfigRecord of instructions (server → site)
METRICS = "metrics"  #: MetricRecord of declared metrics (site → server)
SITE = "site"  #: ConfigRecord of declared site facts (site → server)

# --- message types ---------------------------------------------------------------------------
TRAIN = "train"
EVALUATE = "evaluate"
EXTERNAL = "evaluate.external"  #: evaluation-only round after training
QUERY = "query"

#: Score histogram bins: fixed edges on the predicted probability, shared by all sites.
HIST_BINS = 100
#: Probability thresholds at which confusion counts are reported (0.5 is the
#: pre-specified operating point).
THRESHOLDS: tuple[float, ...] = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
OPERATING_THRESHOLD = 0.5
#: The most examples a single site may claim in one reply.
MAX_EXAMPLES = 1_000_000
#: Site statuses a reply may carry.
STATUSES = ("ok", "no-data", "budget-exhausted", "error")
ROLES = ("train", "holdout")


@dataclass(frozen=True)
class MetricSpec:
    """One declared metric: its kind, bounds and (for lists) length."""

    kind: str  # "int", "float", "int-list", "float-list"
    low: float = -math.inf
    high: float = math.inf
    length: int | None = None

    def problems(self, name: str, value: object) -> list[str]:
        """Reasons ``value`` violates this spec (empty when it conforms)."""
        out: list[str] = []
        values: list[object]
        if self.kind.endswith("-list"):
            if not isinstance(value, list):
                return [f"{name}: expected a list, got {type(value).__name__}"]
            if self.length is not None and len(value) != self.length:
                out.append(f"{name}: expected {self.length} values, got {len(value)}")
            values = value
        else:
            if isinstance(value, list):
                return [f"{name}: expected a single number, got a list"]
            values = [value]
        want_int = self.kind.startswith("int")
        for v in values:
            if isinstance(v, bool) or not isinstance(v, (int, float, np.integer, np.floating)):
                out.append(f"{name}: {type(v).__name__} is not a number")
                break
            if want_int and not float(v).is_integer():
                out.append(f"{name}: {v!r} is not an integer")
                break
            if not math.isfinite(float(v)):
                out.append(f"{name}: non-finite value")
                break
            if not (self.low <= float(v) <= self.high):
                out.append(f"{name}: {v!r} outside [{self.low}, {self.high}]")
                break
        return out


_COUNT = MetricSpec("int", 0, MAX_EXAMPLES)
_NONNEG = MetricSpec("float", 0.0)
_PROB = MetricSpec("float", 0.0, 1.0)
_NT = len(THRESHOLDS)

TRAIN_METRICS: dict[str, MetricSpec] = {
    "num-examples": _COUNT,
    "train-loss": _NONNEG,
    "train-accuracy": _PROB,
    "local-epochs": MetricSpec("int", 0, 10_000),
    "local-steps": MetricSpec("int", 0, 10_000_000),
    "compute-seconds": _NONNEG,
}

EVAL_METRICS: dict[str, MetricSpec] = {
    "num-examples": _COUNT,
    "num-positive": _COUNT,
    "loss-sum": _NONNEG,
    "hist-pos": MetricSpec("int-list", 0, MAX_EXAMPLES, HIST_BINS),
    "hist-neg": MetricSpec("int-list", 0, MAX_EXAMPLES, HIST_BINS),
    "tp": MetricSpec("int-list", 0, MAX_EXAMPLES, _NT),
    "fp": MetricSpec("int-list", 0, MAX_EXAMPLES, _NT),
    "tn": MetricSpec("int-list", 0, MAX_EXAMPLES, _NT),
    "fn": MetricSpec("int-list", 0, MAX_EXAMPLES, _NT),
    "compute-seconds": _NONNEG,
}

QUERY_METRICS: dict[str, MetricSpec] = {
    "num-examples": _COUNT,  # labelled scans usable for the task
    "num-train": _COUNT,
    "num-test": _COUNT,
    "num-positive": _COUNT,
}

#: Declared string facts a site may send (ConfigRecord ``site``) and their allowed values
#: (``None``: a short free token, checked by :func:`_token_ok`).
SITE_FIELDS: dict[str, tuple[str, ...] | None] = {
    "site-id": None,
    "role": ROLES,
    "status": STATUSES,
    "task": None,
}

#: Per message type: which records a reply may hold, and the metrics of its MetricRecord.
REPLY_RECORDS: dict[str, dict[str, str]] = {
    TRAIN: {ARRAYS: "array", METRICS: "metric", SITE: "config"},
    EVALUATE: {METRICS: "metric", SITE: "config"},
    EXTERNAL: {METRICS: "metric", SITE: "config"},
    QUERY: {METRICS: "metric", SITE: "config"},
}
REPLY_METRICS: dict[str, dict[str, MetricSpec]] = {
    TRAIN: TRAIN_METRICS,
    EVALUATE: EVAL_METRICS,
    EXTERNAL: EVAL_METRICS,
    QUERY: QUERY_METRICS,
}


def _token_ok(value: str) -> bool:
    return 0 < len(value) <= 64 and all(c.isalnum() or c in "-_." for c in value)


def _record_kind(record: object) -> str:
    from flwr.app import ArrayRecord, ConfigRecord, MetricRecord

    if isinstance(record, ArrayRecord):
        return "array"
    if isinstance(record, MetricRecord):
        return "metric"
    if isinstance(record, ConfigRecord):
        return "config"
    return type(record).__name__


def check_reply(
    message_type: str,
    content: Mapping[str, object],
    expected_arrays: Mapping[str, tuple[tuple[int, ...], str]] | None = None,
) -> list[str]:
    """Check one reply's RecordDict against the contract.

    Parameters
    ----------
    message_type
        ``train``, ``evaluate``, ``evaluate.external`` or ``query``.
    content
        The reply's RecordDict.
    expected_arrays
        For train replies: name → (shape, dtype string) of every federated array. When
        given, names, shapes and dtypes must match exactly.

    Returns
    -------
    list of str
        Every violation found; empty when the reply conforms. A reply with a
        ``status`` other than ``ok`` may omit its arrays.
    """
    base = message_type.split(".")[0] if message_type not in REPLY_RECORDS else message_type
    allowed = REPLY_RECORDS.get(message_type) or REPLY_RECORDS.get(base)
    if allowed is None:
        return [f"message type {message_type!r} is not declared"]
    problems: list[str] = []
    for name, record in content.items():
        if name not in allowed:
            problems.append(f"record {name!r} is not declared for {message_type} replies")
        elif _record_kind(record) != allowed[name]:
            problems.append(f"record {name!r} must be a {allowed[name]} record")
    status = "ok"
    site = content.get(SITE)
    if site is not None and _record_kind(site) == "config":
        for key, value in site.items():
            if key not in SITE_FIELDS:
                problems.append(f"site field {key!r} is not declared")
            elif not isinstance(value, str) or not _token_ok(value):
                problems.append(f"site field {key!r} must be a short token")
            elif SITE_FIELDS[key] is not None and value not in SITE_FIELDS[key]:
                problems.append(f"site field {key!r}={value!r} not in {SITE_FIELDS[key]}")
        status = str(site.get("status", "ok"))
    metrics = content.get(METRICS)
    specs = REPLY_METRICS.get(message_type) or REPLY_METRICS[base]
    if metrics is None:
        problems.append("no metrics record")
    elif _record_kind(metrics) == "metric":
        for key, value in metrics.items():
            if key not in specs:
                problems.append(f"metric {key!r} is not declared for {message_type} replies")
            else:
                problems.extend(specs[key].problems(key, value))
        if "num-examples" not in metrics:
            problems.append("metric 'num-examples' is missing")
    if base == TRAIN and status == "ok":
        arrays = content.get(ARRAYS)
        if arrays is None:
            problems.append("train reply without weights")
        elif _record_kind(arrays) == "array" and expected_arrays is not None:
            problems.extend(check_arrays(arrays, expected_arrays))
    return problems


def check_arrays(
    arrays: Mapping[str, object], expected: Mapping[str, tuple[tuple[int, ...], str]]
) -> list[str]:
    """Names, shapes, dtypes and finiteness of an ArrayRecord against ``expected``."""
    problems: list[str] = []
    names = set(arrays.keys())
    if names != set(expected):
        missing, extra = sorted(set(expected) - names), sorted(names - set(expected))
        if missing:
            problems.append(f"arrays missing: {missing[:5]}")
        if extra:
            problems.append(f"undeclared arrays: {extra[:5]}")
    for name in sorted(names & set(expected)):
        arr = arrays[name].numpy()  # type: ignore[attr-defined]
        shape, dtype = expected[name]
        if tuple(arr.shape) != tuple(shape):
            problems.append(f"array {name}: shape {tuple(arr.shape)} != {tuple(shape)}")
        elif str(arr.dtype) != dtype:
            problems.append(f"array {name}: dtype {arr.dtype} != {dtype}")
        elif arr.dtype.kind == "f" and not np.isfinite(arr).all():
            problems.append(f"array {name}: non-finite values")
    return problems


def array_record(arrays: Mapping[str, object]) -> object:
    """An ArrayRecord from name → NumPy array or torch tensor (CPU copies, names kept)."""
    from flwr.app import Array, ArrayRecord

    out = {}
    for name, value in arrays.items():
        if hasattr(value, "detach"):
            value = value.detach().cpu().numpy()  # type: ignore[union-attr]
        out[name] = Array(np.ascontiguousarray(value))
    return ArrayRecord(out)
