"""The wire contract: every record and metric that may cross between a site and the server.

This module is the one place that declares what leaves a hospital. The client checks each
outbound reply against it (:func:`check_reply`, called by ``client.egress``) and refuses
to send anything undeclared; the server checks each inbound reply against it again
(``server.ingress``) before using it.

May leave a site: federated weights, example counts, scalar training metrics, evaluation
*sufficient statistics* (fixed-threshold confusion counts, fixed-bin score histograms per
class, loss and squared-error sums, calibration-bin counts and sums), 95 % intervals the
site computed on its own scores, cumulative privacy spend, counts per tracer/scanner, and
the site's chosen pseudonym and role. Every count-bearing cell is subject to the site's
small-cell rule (:data:`DEFAULT_MIN_CELL_COUNT`). Never: pixels, headers, UIDs, names, dates, paths, per-patient
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
INVENTORY = "inventory"  #: ConfigRecord of scan counts per tracer/scanner (query replies)
#: MetricRecord in a train reply: the evaluation (EVAL_METRICS) of the weights the site
#: received, done before training when the instruction asks for it (``evaluate-received``),
#: so that one message per round carries both (its status: site field ``evaluation-status``)
EVALUATION = "evaluation"

# --- message types ---------------------------------------------------------------------------
TRAIN = "train"
EVALUATE = "evaluate"
EXTERNAL = "evaluate.external"  #: evaluation-only round after training
#: ``fedmi`` method only: embedding moments of the final model at a training site
FEATURES = "query.features"
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
#: ``suppressed``: the site evaluated fewer than its minimum cell count of cases (or of
#: one class) and sent counts only (see :data:`DEFAULT_MIN_CELL_COUNT`).
#: ``budget-exhausted``: the next round would exceed the site's DP budget (ε, δ);
#: ``ledger-error``: the site's privacy ledger is corrupt or missing and a person must act.
STATUSES = ("ok", "no-data", "budget-exhausted", "error", "suppressed", "ledger-error")
ROLES = ("train", "holdout")
#: Fixed equal-width calibration bins on the predicted probability, shared by all sites.
CALIBRATION_BINS = 10
#: Small-cell rule applied at the site before anything leaves: a statistic computed from
#: fewer than this many cases is suppressed (the site's ``min-cell-count`` overrides it).
#: Histogram and calibration bins holding 0 < n < k cases are merged with neighbours;
#: a site with fewer than k evaluated cases, or fewer than k of either class, replies
#: ``status = "suppressed"`` with counts only.
DEFAULT_MIN_CELL_COUNT = 10


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
    "compute-seconds": _NONNEG,  # the training loop alone
    # the whole instruction at the site (model build, weights in and out, checks, ledger,
    # and the received model's evaluation when asked): what the coordinator waits for
    "site-seconds": _NONNEG,
    # --- sample-level DP-SGD at the site (absent when the site trains without DP) -------
    "epsilon": _NONNEG,  # cumulative ε of the site's dataset (all runs) after this round
    "epsilon-budget": _NONNEG,  # the site's own ε budget
    "delta": _PROB,
    "noise-multiplier": _NONNEG,  # σ of this round's DP-SGD steps
    "sample-rate": _PROB,  # Poisson sampling rate q
    "dp-steps": MetricSpec("int", 0, 10_000_000),  # DP-SGD steps charged this round
    "max-grad-norm": _NONNEG,  # per-sample clipping norm
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
    "compute-seconds": _NONNEG,  # scoring the scans and the statistics
    "site-seconds": _NONNEG,  # the whole instruction at the site (see TRAIN_METRICS)
    # --- computed at the site from its own scores; only these values leave -------------
    "sq-error-sum": _NONNEG,  # Σ (p − y)²: Brier score = sq-error-sum / num-examples
    "cal-count": MetricSpec("int-list", 0, MAX_EXAMPLES, CALIBRATION_BINS),
    "cal-sum-prob": MetricSpec("float-list", 0.0, MAX_EXAMPLES, CALIBRATION_BINS),
    "cal-sum-label": MetricSpec("int-list", 0, MAX_EXAMPLES, CALIBRATION_BINS),
    # the AUC of the site's unbinned scores with its DeLong s.e. and 95 % interval (the
    # interval's centre: a summary of >= k cases, unlike the scores it comes from)
    "auc-exact": _PROB,
    "auc-se": MetricSpec("float", 0.0, 1.0),
    "auc-ci-low": _PROB,
    "auc-ci-high": _PROB,
    # 95 % Wilson intervals of sensitivity and specificity at OPERATING_THRESHOLD
    "sens-ci-low": _PROB,
    "sens-ci-high": _PROB,
    "spec-ci-low": _PROB,
    "spec-ci-high": _PROB,
    # small-cell suppression: the k applied, and how many bins were merged away
    "min-cell-count": MetricSpec("int", 1, 10_000),
    "suppressed-cells": _COUNT,
}

QUERY_METRICS: dict[str, MetricSpec] = {
    "num-examples": _COUNT,  # labelled scans usable for the task
    "num-train": _COUNT,
    "num-test": _COUNT,
    "num-positive": _COUNT,
    "min-cell-count": MetricSpec("int", 1, 10_000),
    "suppressed-cells": _COUNT,  # scan-count categories pooled or withheld (< k)
}

#: ``query.features`` replies (``fedmi`` runs): per-feature mean and population variance
#: of the final model's embedding over all of a training site's scans — aggregates over
#: at least the site's min cell count of scans, never per-scan values; a site under its
#: small-cell rule replies ``suppressed`` with the count only. The same moments per class
#: (``-neg``/``-pos``, with ``num-positive``) are added only when each class holds at
#: least the min cell count of scans; they let an unseen site match the federation at its
#: own prevalence (:meth:`fedmi.shared.harmonization.ClassMoments.mixture`).
FEATURE_DIM_MAX = 1024
#: The per-feature lists of a ``query.features`` reply (one common length).
FEATURE_LISTS = (
    "feat-mean",
    "feat-var",
    "feat-mean-neg",
    "feat-var-neg",
    "feat-mean-pos",
    "feat-var-pos",
)
FEATURE_METRICS: dict[str, MetricSpec] = {
    "num-examples": _COUNT,
    "num-positive": _COUNT,
    **{
        k: MetricSpec("float-list", 0.0, 1e18)
        if "var" in k
        else MetricSpec("float-list", -1e9, 1e9)
        for k in FEATURE_LISTS
    },
}
#: Which site-local harmonization layers a site evaluated with (``harmonization`` site
#: field of evaluate replies in ``fedbn``/``fedmi`` runs): trained at the site, adapted
#: label-free from the site's unlabelled scans, identity (none learned), or none.
HARMONIZATION_STATES = ("trained", "adapted", "identity", "none")

#: Inventory record of query replies: counts of the site's accepted scans per category,
#: as parallel lists ``<field>-names`` (short labels) and ``<field>-counts``. Categories
#: below the site's min cell count are pooled into ``other`` before they leave.
INVENTORY_FIELDS: tuple[str, ...] = ("tracer", "manufacturer", "model")
#: The label given to pooled small categories.
OTHER = "other"

# --- uncertainty, out-of-distribution scores, the output as a biomarker -----------------
#: ``evaluate.external`` only. Everything below is an aggregate computed at the site from
#: its own scans (shared/uncertainty.py, shared/ood.py, shared/biomarker.py), subject to
#: the site's small-cell rule: histogram and calibration bins are merged, a family is left
#: out entirely when its cases (or either class) number fewer than the site's k.
#: Fractions of a site's evaluated scans referred to a reader, most uncertain first
#: (uncertainty = predictive entropy of the MC-dropout mean probability).
REFERRAL_RATES: tuple[float, ...] = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5)
_NR = len(REFERRAL_RATES)
#: OOD score (smallest Mahalanobis distance to the training classes' feature means):
#: fixed bins on log10(distance) over this range; lower/higher scores go to the end bins.
OOD_BINS = 100
OOD_LOG10_RANGE: tuple[float, float] = (0.0, 3.0)
#: Shrinkage λ of the pooled feature covariance towards a scaled identity.
OOD_SHRINKAGE = 0.1
#: Biomarker baseline: fixed bins of the meta-ROI SUVR (reference-region normalised).
SUVR_BINS = 100
SUVR_RANGE: tuple[float, float] = (0.4, 2.0)

UNCERTAINTY_METRICS: dict[str, MetricSpec] = {
    "mc-passes": MetricSpec("int", 1, 10_000),  # T stochastic passes (dropout on)
    # calibration of the MC-dropout mean probability (same bins as cal-*)
    "mc-sq-error-sum": _NONNEG,
    "mc-cal-count": MetricSpec("int-list", 0, MAX_EXAMPLES, CALIBRATION_BINS),
    "mc-cal-sum-prob": MetricSpec("float-list", 0.0, MAX_EXAMPLES, CALIBRATION_BINS),
    "mc-cal-sum-label": MetricSpec("int-list", 0, MAX_EXAMPLES, CALIBRATION_BINS),
    # per REFERRAL_RATES: scans kept after referral, and correct calls among them
    "referral-retained": MetricSpec("int-list", 0, MAX_EXAMPLES, _NR),
    "referral-correct": MetricSpec("int-list", 0, MAX_EXAMPLES, _NR),
}
OOD_METRICS: dict[str, MetricSpec] = {
    "ood-num-examples": _COUNT,  # scans scored (the evaluated scans)
    "ood-hist": MetricSpec("int-list", 0, MAX_EXAMPLES, OOD_BINS),
}
BIOMARKER_METRICS: dict[str, MetricSpec] = {
    "bio-num-examples": _COUNT,  # MCI scans with a conversion outcome
    "bio-num-converters": _COUNT,
    # per outcome (pos = converter): the model's probability and the meta-ROI SUVR
    "bio-hist-model-pos": MetricSpec("int-list", 0, MAX_EXAMPLES, HIST_BINS),
    "bio-hist-model-neg": MetricSpec("int-list", 0, MAX_EXAMPLES, HIST_BINS),
    "bio-hist-suvr-pos": MetricSpec("int-list", 0, MAX_EXAMPLES, SUVR_BINS),
    "bio-hist-suvr-neg": MetricSpec("int-list", 0, MAX_EXAMPLES, SUVR_BINS),
    # each marker's AUC on the site's unbinned values (a summary of >= k per outcome)
    "bio-auc-model-exact": _PROB,
    "bio-auc-suvr-exact": _PROB,
    # AUC(model) − AUC(SUVR) with its paired DeLong s.e. and 95 % interval (site's scans)
    "bio-auc-diff": MetricSpec("float", -1.0, 1.0),
    "bio-auc-diff-se": MetricSpec("float", 0.0, 1.0),
    "bio-auc-diff-ci-low": MetricSpec("float", -1.0, 1.0),
    "bio-auc-diff-ci-high": MetricSpec("float", -1.0, 1.0),
}
EXTERNAL_METRICS: dict[str, MetricSpec] = {
    **EVAL_METRICS,
    **UNCERTAINTY_METRICS,
    **OOD_METRICS,
    **BIOMARKER_METRICS,
}

#: ``query.ood`` replies (every method): per class (negative, positive) the count, feature
#: sum and sum of outer products of the final model's embedding over a training site's
#: *train* split; a class with fewer than the site's k scans is withheld (count and sums 0).
#: The server sums them into class means and a pooled covariance (shared/ood.py).
OOD_STATS = "query.ood"
#: (the regional model's features are its 52 regional ratios)
OOD_FEATURE_DIM_MAX = 256
OOD_CLASSES = 2
OOD_STATS_METRICS: dict[str, MetricSpec] = {
    "num-examples": _COUNT,
    "min-cell-count": MetricSpec("int", 1, 10_000),
    "ood-class-count": MetricSpec("int-list", 0, MAX_EXAMPLES, OOD_CLASSES),
    "ood-feat-sum": MetricSpec("float-list", -1e12, 1e12),  # C·d, class-major
    "ood-feat-outer": MetricSpec("float-list", -1e15, 1e15),  # C·d·d, class-major
}


#: Declared string facts a site may send (ConfigRecord ``site``) and their allowed values
#: (``None``: a short free token, checked by :func:`_token_ok`).
SITE_FIELDS: dict[str, tuple[str, ...] | None] = {
    "site-id": None,
    "role": ROLES,
    "status": STATUSES,
    "task": None,
    "harmonization": HARMONIZATION_STATES,
    "evaluation-status": STATUSES,  # train replies carrying an EVALUATION record
}

#: Per message type: which records a reply may hold, and the metrics of its MetricRecord.
REPLY_RECORDS: dict[str, dict[str, str]] = {
    TRAIN: {ARRAYS: "array", METRICS: "metric", SITE: "config", EVALUATION: "metric"},
    EVALUATE: {METRICS: "metric", SITE: "config"},
    EXTERNAL: {METRICS: "metric", SITE: "config"},
    QUERY: {METRICS: "metric", SITE: "config", INVENTORY: "config"},
    FEATURES: {METRICS: "metric", SITE: "config"},
    OOD_STATS: {METRICS: "metric", SITE: "config"},
}
REPLY_METRICS: dict[str, dict[str, MetricSpec]] = {
    TRAIN: TRAIN_METRICS,
    EVALUATE: EVAL_METRICS,
    EXTERNAL: EXTERNAL_METRICS,
    QUERY: QUERY_METRICS,
    FEATURES: FEATURE_METRICS,
    OOD_STATS: OOD_STATS_METRICS,
}


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
    inventory = content.get(INVENTORY)
    if inventory is not None and _record_kind(inventory) == "config":
        problems.extend(check_inventory(inventory))  # type: ignore[arg-type]
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
    if base == TRAIN and status == "ok":
        arrays = content.get(ARRAYS)
        if arrays is None:
            problems.append("train reply without weights")
        elif _record_kind(arrays) == "array" and expected_arrays is not None:
            problems.extend(check_arrays(arrays, expected_arrays))
    return problems


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
