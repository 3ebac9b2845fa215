"""Checking a reply against the contract, and building the records that carry weights.

:func:`check_reply` is what ``client.egress`` runs on every outbound reply and
``server.ingress`` on every inbound one: records, site fields, inventory, metrics and
arrays, each step naming every violation it finds.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from fedmi.shared.contract.metrics import EVAL_METRICS, REPLY_METRICS, MetricSpec
from fedmi.shared.contract.records import (
    ARRAYS,
    EVALUATION,
    FEATURE_DIM_MAX,
    FEATURE_LISTS,
    FEATURES,
    INVENTORY,
    INVENTORY_FIELDS,
    MAX_EXAMPLES,
    METRICS,
    NORMATIVE_DESIGN,
    NORMATIVE_REGIONS_MAX,
    NORMATIVE_STATS,
    OOD_CLASSES,
    OOD_FEATURE_DIM_MAX,
    OOD_STATS,
    PRETRAIN,
    REPLY_RECORDS,
    SITE,
    SITE_FIELDS,
    TRAIN,
)

#: (shape, dtype string) of each federated array, by name
_ExpectedArrays = Mapping[str, tuple[tuple[int, ...], str]]


def _token_ok(value: str) -> bool:
    return 0 < len(value) <= 64 and all(c.isalnum() or c in "-_." for c in value)


def _label_ok(value: object) -> bool:
    """A category label (tracer key, DICOM (0008,0070) *Manufacturer* or (0008,1090)
    *Manufacturer's Model Name*): short printable text, no path or date separators."""
    return (
        isinstance(value, str)
        and 0 < len(value) <= 64
        and all(c.isalnum() or c in " -_.+()" for c in value)
    )


def check_inventory(record: Mapping[str, object]) -> list[str]:
    """Problems of an ``inventory`` record (see :data:`INVENTORY_FIELDS`)."""
    problems: list[str] = []
    allowed = {f"{f}-{part}" for f in INVENTORY_FIELDS for part in ("names", "counts")}
    for key in record.keys():
        if key not in allowed:
            problems.append(f"inventory field {key!r} is not declared")
    for f in INVENTORY_FIELDS:
        names, counts = record.get(f"{f}-names", []), record.get(f"{f}-counts", [])
        if not isinstance(names, list) or not isinstance(counts, list):
            problems.append(f"inventory {f}: names and counts must be lists")
            continue
        if len(names) != len(counts) or len(names) > 64:
            problems.append(f"inventory {f}: names and counts differ in length (or > 64)")
        if not all(_label_ok(n) for n in names):
            problems.append(f"inventory {f}: a name is not a short label")
        if len(set(names)) != len(names):
            problems.append(f"inventory {f}: repeated names")
        problems.extend(MetricSpec("int-list", 1, MAX_EXAMPLES).problems(f"{f}-counts", counts))
    return problems


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
    expected_arrays: _ExpectedArrays | None = None,
) -> list[str]:
    """Check one reply's RecordDict against the contract.

    Parameters
    ----------
    message_type
        ``train``, ``evaluate``, ``evaluate.external`` or ``query``.
    content
        The reply's RecordDict.
    expected_arrays
        For train and ``train.pretrain`` replies: name → (shape, dtype string) of every
        federated array. When given, names, shapes and dtypes must match exactly.

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
    problems = _record_problems(message_type, content, allowed)
    site_problems, status = _site_problems(content.get(SITE))
    problems.extend(site_problems)
    inventory = content.get(INVENTORY)
    if inventory is not None and _record_kind(inventory) == "config":
        problems.extend(check_inventory(inventory))  # type: ignore[arg-type]
    problems.extend(_reply_metric_problems(message_type, base, content))
    if base in (TRAIN, PRETRAIN) and status == "ok":
        problems.extend(_train_array_problems(content.get(ARRAYS), expected_arrays))
    return problems


def _record_problems(
    message_type: str, content: Mapping[str, object], allowed: Mapping[str, str]
) -> list[str]:
    """Records not declared for ``message_type`` replies, or of the wrong kind."""
    problems: list[str] = []
    for name, record in content.items():
        if name not in allowed:
            problems.append(f"record {name!r} is not declared for {message_type} replies")
        elif _record_kind(record) != allowed[name]:
            problems.append(f"record {name!r} must be a {allowed[name]} record")
    return problems


def _site_problems(site: object) -> tuple[list[str], str]:
    """Undeclared or ill-formed site fields, and the reply's status (``ok`` when unsaid)."""
    if site is None or _record_kind(site) != "config":
        return [], "ok"
    problems: list[str] = []
    for key, value in site.items():  # type: ignore[attr-defined]
        if key not in SITE_FIELDS:
            problems.append(f"site field {key!r} is not declared")
        elif not isinstance(value, str) or not _token_ok(value):
            problems.append(f"site field {key!r} must be a short token")
        elif SITE_FIELDS[key] is not None and value not in SITE_FIELDS[key]:
            problems.append(f"site field {key!r}={value!r} not in {SITE_FIELDS[key]}")
    return problems, str(site.get("status", "ok"))  # type: ignore[attr-defined]


def _reply_metric_problems(
    message_type: str, base: str, content: Mapping[str, object]
) -> list[str]:
    """The metrics record (required), a train reply's evaluation record, and the
    consistency rules of ``query.features`` and ``query.ood`` metrics."""
    problems: list[str] = []
    metrics = content.get(METRICS)
    specs = REPLY_METRICS.get(message_type) or REPLY_METRICS[base]
    if metrics is None:
        problems.append("no metrics record")
    elif _record_kind(metrics) == "metric":
        problems.extend(_metric_problems(metrics, specs, f"{message_type} replies", "metric"))
    evaluation = content.get(EVALUATION)
    if evaluation is not None and _record_kind(evaluation) == "metric":
        problems.extend(
            _metric_problems(evaluation, EVAL_METRICS, "evaluations", "evaluation metric")
        )
    if message_type == FEATURES and metrics is not None and _record_kind(metrics) == "metric":
        problems.extend(_feature_problems(metrics))  # type: ignore[arg-type]
    if message_type == OOD_STATS and metrics is not None and _record_kind(metrics) == "metric":
        problems.extend(_ood_stats_problems(metrics))  # type: ignore[arg-type]
    if (
        message_type == NORMATIVE_STATS
        and metrics is not None
        and _record_kind(metrics) == "metric"
    ):
        problems.extend(_normative_stats_problems(metrics))  # type: ignore[arg-type]
    return problems


def _train_array_problems(arrays: object, expected_arrays: _ExpectedArrays | None) -> list[str]:
    """The weights an ``ok`` train reply must carry (checked when ``expected_arrays`` is given)."""
    if arrays is None:
        return ["train reply without weights"]
    if _record_kind(arrays) == "array" and expected_arrays is not None:
        return check_arrays(arrays, expected_arrays)  # type: ignore[arg-type]
    return []


def _metric_problems(
    record: Mapping[str, object], specs: Mapping[str, MetricSpec], where: str, what: str
) -> list[str]:
    """Undeclared keys, out-of-spec values and a missing ``num-examples`` of ``record``."""
    problems: list[str] = []
    for key, value in record.items():
        if key not in specs:
            problems.append(f"{what} {key!r} is not declared for {where}")
        else:
            problems.extend(specs[key].problems(key, value))
    if "num-examples" not in record:
        problems.append(f"{what} 'num-examples' is missing")
    return problems


def received_evaluation(content: Mapping[str, object]) -> object | None:
    """The evaluation part of a train reply as an ``evaluate`` reply's RecordDict.

    ``None`` when the reply carries none (the instruction did not ask for it). The
    ``metrics`` record is absent when the site had nothing to evaluate (status ``no-data``):
    the result then fails :func:`check_reply` for lack of metrics, as such a reply would.
    """
    from flwr.app import ConfigRecord, RecordDict

    site = content.get(SITE)
    if _record_kind(site) != "config" or "evaluation-status" not in site:  # type: ignore[operator]
        return None
    facts = {k: v for k, v in site.items() if k != "evaluation-status"}  # type: ignore[attr-defined]
    facts["status"] = site["evaluation-status"]  # type: ignore[index]
    out = RecordDict({SITE: ConfigRecord(facts)})
    evaluation = content.get(EVALUATION)
    if evaluation is not None:
        out[METRICS] = evaluation  # type: ignore[assignment]
    return out


def _feature_problems(metrics: Mapping[str, object]) -> list[str]:
    """One common length; per-class moments complete, with both classes present."""
    problems = []
    lengths = {len(metrics[k]) for k in FEATURE_LISTS if k in metrics}  # type: ignore[arg-type]
    if len(lengths) > 1 or any(n > FEATURE_DIM_MAX for n in lengths):
        problems.append(f"{', '.join(FEATURE_LISTS)} must have one common length")
    per_class = ("num-positive", *FEATURE_LISTS[2:])
    present = [k in metrics for k in per_class]
    if any(present) and not all(present):
        problems.append(f"per-class moments need all of {', '.join(per_class)}")
    elif all(present):
        n, n_pos = metrics.get("num-examples", 0), metrics["num-positive"]
        if not 0 < n_pos < n:  # type: ignore[operator]
            problems.append("num-positive must lie strictly between 0 and num-examples")
    return problems


def _ood_stats_problems(metrics: Mapping[str, object]) -> list[str]:
    """``ood-feat-sum`` and ``ood-feat-outer`` must be C·d and C·d·d long for one d."""
    sums, outer = metrics.get("ood-feat-sum"), metrics.get("ood-feat-outer")
    if sums is None and outer is None:
        return []
    if not isinstance(sums, list) or not isinstance(outer, list):
        return ["ood-feat-sum and ood-feat-outer must be sent together"]
    d = len(sums) // OOD_CLASSES
    if d < 1 or d > OOD_FEATURE_DIM_MAX or len(sums) != OOD_CLASSES * d:
        return [
            f"ood-feat-sum: length {len(sums)} is not {OOD_CLASSES}·d (d ≤ {OOD_FEATURE_DIM_MAX})"
        ]
    if len(outer) != OOD_CLASSES * d * d:
        return [f"ood-feat-outer: length {len(outer)} != {OOD_CLASSES}·{d}·{d}"]
    return []


def _normative_stats_problems(metrics: Mapping[str, object]) -> list[str]:
    """``nrm-xty`` is ``NORMATIVE_DESIGN``·R long for the R of ``nrm-yty``; all or none sent."""
    keys = ("nrm-count", "nrm-xtx", "nrm-xty", "nrm-yty", "nrm-noise-sd", "nrm-clip")
    present = [k for k in keys if k in metrics]
    if not present:
        return []
    if len(present) != len(keys):
        return [f"normative statistics need all of {', '.join(keys)}"]
    xty, yty = metrics["nrm-xty"], metrics["nrm-yty"]
    if not isinstance(xty, list) or not isinstance(yty, list):
        return []  # the specs already said so
    r = len(yty)
    if not 2 <= r <= NORMATIVE_REGIONS_MAX or len(xty) != NORMATIVE_DESIGN * r:
        return [
            f"nrm-xty: length {len(xty)} is not {NORMATIVE_DESIGN}·R for the R = {r} regions "
            f"of nrm-yty (2 ≤ R ≤ {NORMATIVE_REGIONS_MAX})"
        ]
    return []


def check_arrays(arrays: Mapping[str, object], expected: _ExpectedArrays) -> list[str]:
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
