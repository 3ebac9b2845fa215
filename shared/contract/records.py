"""The names of the wire contract: records, message types, statuses and fixed constants.

Which records a reply of each message type may hold (:data:`REPLY_RECORDS`), the string
facts a site may send (:data:`SITE_FIELDS`), and the fixed bins, thresholds and limits
every site uses so that their statistics can be summed. The metrics themselves are
declared in :mod:`fedmi.shared.contract.metrics`.
"""

from __future__ import annotations

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
#: Self-supervised pretraining round (masked-image modelling, :mod:`fedmi.shared.pretraining`):
#: a train handler routed by message type ``train.pretrain``; the reply carries the federated
#: encoder-and-decoder weights after DP-SGD, like ``train`` (records: :data:`REPLY_RECORDS`;
#: metrics: :data:`fedmi.shared.contract.metrics.PRETRAIN_METRICS`).
PRETRAIN = "train.pretrain"
EVALUATE = "evaluate"
EXTERNAL = "evaluate.external"  #: evaluation-only round after training
#: ``fedmi`` method only: embedding moments of the final model at a training site
FEATURES = "query.features"
QUERY = "query"
#: ``query.ood`` replies (every method): per class (negative, positive) the count, feature
#: sum and sum of outer products of the final model's embedding over a training site's
#: *train* split; a class with fewer than the site's k scans is withheld (count and sums 0).
#: The server sums them into class means and a pooled covariance (shared/ood.py).
OOD_STATS = "query.ood"
#: ``query.normative`` replies (training sites): the sufficient statistics of the site's
#: normal scans for the normative model (:mod:`fedmi.shared.normative`): count, ``XᵀX``,
#: ``XᵀY`` and ``Σ y²`` of the design ``[1, age, sex]`` and the clipped regional profiles.
NORMATIVE_STATS = "query.normative"
#: ``evaluate.normative`` replies (holdout sites): the anomaly score's histograms per
#: group (normal, then the task's disorders), the regional false-positive fractions of
#: normals, the named-pattern matches and the supervised classifier's positive calls.
NORMATIVE_EVAL = "evaluate.normative"

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
#: ``ledger-error``: the site's privacy ledger is corrupt or missing and a person must act;
#: ``refused``: the site's query policy allows no more replies of this kind (per run or
#: per day, :mod:`fedmi.client.privacy.release`).
STATUSES = (
    "ok",
    "no-data",
    "budget-exhausted",
    "error",
    "suppressed",
    "ledger-error",
    "refused",
)
ROLES = ("train", "holdout")
#: Fixed equal-width calibration bins on the predicted probability, shared by all sites.
CALIBRATION_BINS = 10
#: Small-cell rule applied at the site before anything leaves: a statistic computed from
#: fewer than this many cases is suppressed (the site's ``min-cell-count`` overrides it).
#: Histogram and calibration bins holding 0 < n < k cases are merged with neighbours;
#: a site with fewer than k evaluated cases, or fewer than k of either class, replies
#: ``status = "suppressed"`` with counts only.
DEFAULT_MIN_CELL_COUNT = 10

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
#: ``evaluate.external`` only (metrics: :mod:`fedmi.shared.contract.metrics`).
#: Fractions of a site's evaluated scans referred to a reader, most uncertain first
#: (uncertainty = predictive entropy of the MC-dropout mean probability).
REFERRAL_RATES: tuple[float, ...] = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5)
#: OOD score (smallest Mahalanobis distance to the training classes' feature means):
#: fixed bins on log10(distance) over this range; lower/higher scores go to the end bins.
OOD_BINS = 100
OOD_LOG10_RANGE: tuple[float, float] = (0.0, 3.0)
#: Shrinkage λ of the pooled feature covariance towards a scaled identity.
OOD_SHRINKAGE = 0.1
#: Biomarker baseline: fixed bins of the meta-ROI SUVR (reference-region normalised).
SUVR_BINS = 100
SUVR_RANGE: tuple[float, float] = (0.4, 2.0)

#: ``query.ood`` replies (:data:`OOD_STATS`): the longest feature vector d
#: (the regional model's features are its 52 regional ratios)
OOD_FEATURE_DIM_MAX = 256
OOD_CLASSES = 2

#: ``query.normative``: the most regions a profile may have, and the design's width.
NORMATIVE_REGIONS_MAX = 256
NORMATIVE_DESIGN = 3
#: ``evaluate.normative``: groups per reply (normal + up to three disorders, in
#: :data:`fedmi.shared.normative.NORMATIVE_GROUPS` order; unused groups are zeros), fixed
#: bins of the anomaly score over a range (end bins take what lies beyond).
NORMATIVE_GROUPS = 4
NORMATIVE_BINS = 100
NORMATIVE_SCORE_RANGE: tuple[float, float] = (-2.0, 18.0)
#: Under DP a site sums blocks of this many bins and releases one noisy count per block,
#: in the block's middle bin.
NORMATIVE_DP_BLOCK = 5
#: Normals at least this old make the "normals over 80" false-positive figures.
NORMATIVE_OLD_AGE = 80.0


#: Declared string facts a site may send (ConfigRecord ``site``) and their allowed values
#: (``None``: a short free token, as :mod:`fedmi.shared.contract.check` checks it).
SITE_FIELDS: dict[str, tuple[str, ...] | None] = {
    "site-id": None,
    "role": ROLES,
    "status": STATUSES,
    "task": None,
    "harmonization": HARMONIZATION_STATES,
    "evaluation-status": STATUSES,  # train replies carrying an EVALUATION record
}

#: Per message type: which records a reply may hold, and their kinds (the metrics of its
#: MetricRecord: :data:`fedmi.shared.contract.metrics.REPLY_METRICS`).
REPLY_RECORDS: dict[str, dict[str, str]] = {
    TRAIN: {ARRAYS: "array", METRICS: "metric", SITE: "config", EVALUATION: "metric"},
    PRETRAIN: {ARRAYS: "array", METRICS: "metric", SITE: "config"},
    EVALUATE: {METRICS: "metric", SITE: "config"},
    EXTERNAL: {METRICS: "metric", SITE: "config"},
    QUERY: {METRICS: "metric", SITE: "config", INVENTORY: "config"},
    FEATURES: {METRICS: "metric", SITE: "config"},
    OOD_STATS: {METRICS: "metric", SITE: "config"},
    NORMATIVE_STATS: {METRICS: "metric", SITE: "config"},
    NORMATIVE_EVAL: {METRICS: "metric", SITE: "config"},
}
