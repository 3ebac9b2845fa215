"""The declared metrics: :class:`MetricSpec` and, per message type, every metric a reply may hold.

A key that is not declared here for its message type does not leave a site
(:data:`REPLY_METRICS`); the names, bins and thresholds the declarations use come from
:mod:`fedmi.shared.contract.records`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from fedmi.shared.contract.records import (
    CALIBRATION_BINS,
    EVALUATE,
    EXTERNAL,
    FEATURE_LISTS,
    FEATURES,
    HIST_BINS,
    MAX_EXAMPLES,
    NORMATIVE_BINS,
    NORMATIVE_DESIGN,
    NORMATIVE_EVAL,
    NORMATIVE_GROUPS,
    NORMATIVE_STATS,
    OOD_BINS,
    OOD_CLASSES,
    OOD_STATS,
    PRETRAIN,
    QUERY,
    REFERRAL_RATES,
    SUVR_BINS,
    THRESHOLDS,
    TRAIN,
)


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
_NR = len(REFERRAL_RATES)

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

#: ``train.pretrain`` replies: the masked-image pretraining round's counts, its mean
#: reconstruction loss (sent only without DP, like ``train-loss``) and, under DP-SGD,
#: the same privacy metrics as a train reply.
PRETRAIN_METRICS: dict[str, MetricSpec] = {
    "num-examples": _COUNT,
    "pretrain-loss": _NONNEG,
    "local-epochs": TRAIN_METRICS["local-epochs"],
    "local-steps": TRAIN_METRICS["local-steps"],
    "compute-seconds": _NONNEG,
    "site-seconds": _NONNEG,
    **{
        k: TRAIN_METRICS[k]
        for k in (
            "epsilon",
            "epsilon-budget",
            "delta",
            "noise-multiplier",
            "sample-rate",
            "dp-steps",
            "max-grad-norm",
        )
    },
}

EVAL_METRICS: dict[str, MetricSpec] = {
    "num-examples": _COUNT,
    "num-positive": _COUNT,
    "loss-sum": _NONNEG,
    "hist-pos": MetricSpec("int-list", 0, MAX_EXAMPLES, HIST_BINS),
    "hist-neg": MetricSpec("int-list", 0, MAX_EXAMPLES, HIST_BINS),
    # under DP, a site whose (noisy) class count is below its min cell count sends its noisy
    # histograms under these names instead: summed with the other training sites' for the
    # federation's operating point, never reported as the site's own figures. Same
    # mechanism and charge as hist-pos/hist-neg (charged when the release opened).
    "pool-hist-pos": MetricSpec("int-list", 0, MAX_EXAMPLES, HIST_BINS),
    "pool-hist-neg": MetricSpec("int-list", 0, MAX_EXAMPLES, HIST_BINS),
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
    # DP on: the sd of the Gaussian noise on auc-exact (the interval above includes it)
    "auc-noise-sd": _NONNEG,
    # DP on: the site's cumulative ε after this release was charged (all runs, all kinds)
    "epsilon": _NONNEG,
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
    "epsilon": _NONNEG,  # DP on: cumulative ε after this release
    "num-train": _COUNT,
    "num-test": _COUNT,
    "num-positive": _COUNT,
    "min-cell-count": MetricSpec("int", 1, 10_000),
    "suppressed-cells": _COUNT,  # scan-count categories pooled or withheld (< k)
}

#: ``query.features`` replies: see :data:`fedmi.shared.contract.records.FEATURE_DIM_MAX`.
FEATURE_METRICS: dict[str, MetricSpec] = {
    "num-examples": _COUNT,
    "epsilon": _NONNEG,  # DP on: cumulative ε after this release
    "num-positive": _COUNT,
    **{
        k: MetricSpec("float-list", 0.0, 1e18)
        if "var" in k
        else MetricSpec("float-list", -1e9, 1e9)
        for k in FEATURE_LISTS
    },
}

# --- uncertainty, out-of-distribution scores, the output as a biomarker -----------------
#: ``evaluate.external`` only. Everything below is an aggregate computed at the site from
#: its own scans (shared/uncertainty.py, shared/ood.py, shared/biomarker.py), subject to
#: the site's small-cell rule: histogram and calibration bins are merged, a family is left
#: out entirely when its cases (or either class) number fewer than the site's k.
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

#: ``query.ood`` replies: see :data:`fedmi.shared.contract.records.OOD_STATS`.
OOD_STATS_METRICS: dict[str, MetricSpec] = {
    "num-examples": _COUNT,
    "epsilon": _NONNEG,  # DP on: cumulative ε after this release
    "min-cell-count": MetricSpec("int", 1, 10_000),
    "ood-class-count": MetricSpec("int-list", 0, MAX_EXAMPLES, OOD_CLASSES),
    "ood-feat-sum": MetricSpec("float-list", -1e12, 1e12),  # C·d, class-major
    "ood-feat-outer": MetricSpec("float-list", -1e15, 1e15),  # C·d·d, class-major
}

#: ``query.normative`` replies: see :data:`fedmi.shared.contract.records.NORMATIVE_STATS`
#: (noisy under DP, so the sums may be negative; the consistency of the lengths is checked
#: in :mod:`fedmi.shared.contract.check`).
NORMATIVE_STATS_METRICS: dict[str, MetricSpec] = {
    "num-examples": _COUNT,
    "epsilon": _NONNEG,
    "nrm-count": MetricSpec("float", -1e6, MAX_EXAMPLES),
    "nrm-xtx": MetricSpec("float-list", -1e9, 1e9, NORMATIVE_DESIGN * NORMATIVE_DESIGN),
    "nrm-xty": MetricSpec("float-list", -1e9, 1e9),  # design-major, NORMATIVE_DESIGN·R
    "nrm-yty": MetricSpec("float-list", -1e9, 1e9),  # R
    "nrm-noise-sd": MetricSpec("float-list", 0.0, 1e9, 4),  # count, xtx, xty, yty
    "nrm-clip": MetricSpec("float", 0.0, 100.0),
}
#: ``evaluate.normative`` replies: see :data:`fedmi.shared.contract.records.NORMATIVE_EVAL`.
NORMATIVE_EVAL_METRICS: dict[str, MetricSpec] = {
    "num-examples": _COUNT,
    "epsilon": _NONNEG,
    "min-cell-count": MetricSpec("int", 1, 10_000),
    # anomaly-score histograms, group-major (NORMATIVE_GROUPS · NORMATIVE_BINS)
    "nrm-hist": MetricSpec("int-list", 0, MAX_EXAMPLES, NORMATIVE_GROUPS * NORMATIVE_BINS),
    # normals over NORMATIVE_OLD_AGE: count, and the sums over them of the fraction of
    # regions with z < −2, age-adjusted then unadjusted
    "nrm-old-count": MetricSpec("float", 0.0, MAX_EXAMPLES),
    "nrm-old-fp": MetricSpec("float-list", 0.0, MAX_EXAMPLES, 2),
    # every normal: the same fractions (adjusted, unadjusted)
    "nrm-fp": MetricSpec("float-list", 0.0, MAX_EXAMPLES, 2),
    # per group: scans whose lowest regions match the group's expected pattern
    "nrm-match": MetricSpec("int-list", 0, MAX_EXAMPLES, NORMATIVE_GROUPS),
    # per group: scans the supervised classifier calls positive at its operating point
    "nrm-clf-positive": MetricSpec("int-list", 0, MAX_EXAMPLES, NORMATIVE_GROUPS),
    # DP on: noise sd of a histogram cell, a false-positive entry, a match and a call count
    "nrm-noise-sd": MetricSpec("float-list", 0.0, 1e9, 4),
}

#: Per message type: the metrics of its reply's MetricRecord.
REPLY_METRICS: dict[str, dict[str, MetricSpec]] = {
    TRAIN: TRAIN_METRICS,
    PRETRAIN: PRETRAIN_METRICS,
    EVALUATE: EVAL_METRICS,
    EXTERNAL: EXTERNAL_METRICS,
    QUERY: QUERY_METRICS,
    FEATURES: FEATURE_METRICS,
    OOD_STATS: OOD_STATS_METRICS,
    NORMATIVE_STATS: NORMATIVE_STATS_METRICS,
    NORMATIVE_EVAL: NORMATIVE_EVAL_METRICS,
}
