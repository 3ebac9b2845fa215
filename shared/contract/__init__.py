"""The wire contract: every record and metric that may cross between a site and the server.

This package is the one place that declares what leaves a hospital. The client checks each
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

Modules (every public name is re-exported here: ``contract.X`` is the way to use them):

- :mod:`~fedmi.shared.contract.records`: record names, message types, statuses, roles,
  site fields, the records each reply may hold, and the fixed bins and thresholds;
- :mod:`~fedmi.shared.contract.metrics`: :class:`MetricSpec` and the metrics each reply
  may hold;
- :mod:`~fedmi.shared.contract.check`: :func:`check_reply` and its parts
  (:func:`check_arrays`, :func:`check_inventory`), :func:`received_evaluation` and
  :func:`array_record`.
"""

from __future__ import annotations

from fedmi.shared.contract.check import (
    array_record,
    check_arrays,
    check_inventory,
    check_reply,
    received_evaluation,
)
from fedmi.shared.contract.metrics import (
    BIOMARKER_METRICS,
    EVAL_METRICS,
    EXTERNAL_METRICS,
    FEATURE_METRICS,
    NORMATIVE_EVAL_METRICS,
    NORMATIVE_STATS_METRICS,
    OOD_METRICS,
    OOD_STATS_METRICS,
    PRETRAIN_METRICS,
    QUERY_METRICS,
    REPLY_METRICS,
    TRAIN_METRICS,
    UNCERTAINTY_METRICS,
    MetricSpec,
)
from fedmi.shared.contract.records import (
    ARRAYS,
    CALIBRATION_BINS,
    CONFIG,
    DEFAULT_MIN_CELL_COUNT,
    EVALUATE,
    EVALUATION,
    EXTERNAL,
    FEATURE_DIM_MAX,
    FEATURE_LISTS,
    FEATURES,
    HARMONIZATION_STATES,
    HIST_BINS,
    INVENTORY,
    INVENTORY_FIELDS,
    MAX_EXAMPLES,
    METRICS,
    NORMATIVE_BINS,
    NORMATIVE_DESIGN,
    NORMATIVE_DP_BLOCK,
    NORMATIVE_EVAL,
    NORMATIVE_GROUPS,
    NORMATIVE_OLD_AGE,
    NORMATIVE_REGIONS_MAX,
    NORMATIVE_SCORE_RANGE,
    NORMATIVE_STATS,
    OOD_BINS,
    OOD_CLASSES,
    OOD_FEATURE_DIM_MAX,
    OOD_LOG10_RANGE,
    OOD_SHRINKAGE,
    OOD_STATS,
    OPERATING_THRESHOLD,
    OTHER,
    PRETRAIN,
    QUERY,
    REFERRAL_RATES,
    REPLY_RECORDS,
    ROLES,
    SITE,
    SITE_FIELDS,
    STATUSES,
    SUVR_BINS,
    SUVR_RANGE,
    THRESHOLDS,
    TRAIN,
)

__all__ = [
    "ARRAYS",
    "BIOMARKER_METRICS",
    "CALIBRATION_BINS",
    "CONFIG",
    "DEFAULT_MIN_CELL_COUNT",
    "EVALUATE",
    "EVALUATION",
    "EVAL_METRICS",
    "EXTERNAL",
    "EXTERNAL_METRICS",
    "FEATURES",
    "FEATURE_DIM_MAX",
    "FEATURE_LISTS",
    "FEATURE_METRICS",
    "HARMONIZATION_STATES",
    "HIST_BINS",
    "INVENTORY",
    "INVENTORY_FIELDS",
    "MAX_EXAMPLES",
    "METRICS",
    "MetricSpec",
    "NORMATIVE_BINS",
    "NORMATIVE_DESIGN",
    "NORMATIVE_DP_BLOCK",
    "NORMATIVE_EVAL",
    "NORMATIVE_EVAL_METRICS",
    "NORMATIVE_GROUPS",
    "NORMATIVE_OLD_AGE",
    "NORMATIVE_REGIONS_MAX",
    "NORMATIVE_SCORE_RANGE",
    "NORMATIVE_STATS",
    "NORMATIVE_STATS_METRICS",
    "OOD_BINS",
    "OOD_CLASSES",
    "OOD_FEATURE_DIM_MAX",
    "OOD_LOG10_RANGE",
    "OOD_METRICS",
    "OOD_SHRINKAGE",
    "OOD_STATS",
    "OOD_STATS_METRICS",
    "OPERATING_THRESHOLD",
    "OTHER",
    "PRETRAIN",
    "QUERY",
    "QUERY_METRICS",
    "REFERRAL_RATES",
    "REPLY_METRICS",
    "REPLY_RECORDS",
    "ROLES",
    "SITE",
    "SITE_FIELDS",
    "STATUSES",
    "SUVR_BINS",
    "SUVR_RANGE",
    "THRESHOLDS",
    "TRAIN",
    "PRETRAIN_METRICS",
    "TRAIN_METRICS",
    "UNCERTAINTY_METRICS",
    "array_record",
    "check_arrays",
    "check_inventory",
    "check_reply",
    "received_evaluation",
]
