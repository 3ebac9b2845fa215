"""The run config's declared settings: every key of ``[tool.flwr.app.config]``, once.

:data:`RUN_CONFIG` declares each key (type, default, allowed values or rule, doc) of
:class:`fedmi.shared.run_config.RunConfig`; :data:`MODEL_DEFAULTS` says what a model uses
for settings left at "auto" / 0. :mod:`fedmi.shared.run_config` re-exports both, with
:class:`RunConfigError`, :class:`ModelDefaults` and :data:`CENTRAL_DP`.
docs/configuration.md is generated from the declaration.

The declaration is one long table on purpose: one :class:`~fedmi.shared.config_schema.Setting`
per key, in the order the reference lists them, so that every key of the run config is
read, reviewed and documented in one place (pyproject.toml holds the same keys).
"""

from __future__ import annotations

from dataclasses import dataclass

from fedmi.shared.config_schema import ConfigError, Schema, Setting
from fedmi.shared.contract import ROLES
from fedmi.shared.methods import METHODS
from fedmi.shared.operating_point import CRITERIA
from fedmi.shared.tasks import TASKS

CENTRAL_DP = ("off", "fixed")
ROBUST_AGGREGATORS = ("auto", "mean", "trimmed-mean", "median", "multikrum")


@dataclass(frozen=True)
class ModelDefaults:
    """What sites use for a model when the run config leaves a setting at "auto" / 0."""

    optimizer: str
    learning_rate: float
    #: flips and voxel shifts (the regional model trains without: they move scans
    #: against its fixed atlas)
    augment: bool
    #: 0 = each site's whole train split (full-batch gradient descent)
    batch_size: int
    local_epochs: int
    #: the site-local layers' learning rate as a share of the model's (the regional head's
    #: 3.0 would throw the fedmi input adapter's intensity affine off: 0.2 keeps it at 0.6)
    local_lr_scale: float = 1.0


#: Per model. The regional model's values were chosen under DP-SGD at ε = 8 and without DP
#: (issue notes): full-batch steps give each step the least noise per example (σ·C / n),
#: and three local epochs give 18 steps over the 6 default rounds. Its learning rate 3.0 is
#: for the template-centred head (shared/regional.py); measured FedAvg without Flower, 4 splits
#: of each default preset, holdout balanced accuracy at 0.5 (docs/operating-point.md).
MODEL_DEFAULTS = {
    "regional": ModelDefaults("sgd", 3.0, False, batch_size=0, local_epochs=3, local_lr_scale=0.2),
    "cnn": ModelDefaults("adamw", 1e-3, True, batch_size=16, local_epochs=1),
}


class RunConfigError(ConfigError):
    """A run-config value is unusable; the message names the key and the fix."""


def parse_prevalences(text: str) -> tuple[float, ...] | None:
    """``"0.05,0.2"`` → (0.05, 0.2); ``None`` when an item is not a number in (0, 1)."""
    out = []
    for item in text.split(","):
        if not item.strip():
            continue
        try:
            value = float(item)
        except ValueError:
            return None
        if not 0.0 < value < 1.0:
            return None
        out.append(value)
    return tuple(out)


def check_prevalences(text: str) -> str | None:
    """What ``report-prevalences`` must be, when ``text`` is not such a list; else ``None``."""
    if parse_prevalences(text) is None:
        return 'must list numbers between 0 and 1, comma-separated, e.g. "0.05,0.2"'
    return None


def _check_role_overrides(text: str) -> str | None:
    for item in text.split(","):
        if not item.strip():
            continue
        name, sep, role = item.partition("=")
        if not sep or not name.strip() or role.strip() not in ROLES:
            return f"must list site-id=role items, comma-separated, with role in {ROLES}"
    return None


def _federated_methods() -> tuple[str, ...]:
    return tuple(name for name, m in METHODS.items() if m.federated)


_SIM = "site side, simulation only (set by `fedmi-sim run`; a deployed site ignores them)"
_DP = "central DP at the server (docs/privacy.md)"
_ROBUST = "robust aggregation at the server (docs/robust-aggregation.md)"
_PRETRAIN = "self-supervised pretraining (labelled train scans and unlabelled archives)"

#: Every run-config key: pyproject's ``[tool.flwr.app.config]`` holds the same keys and
#: defaults (tests/shared/test_run_config.py).
RUN_CONFIG = Schema(
    "run config",
    {
        "": (
            Setting("task", str, "fdg-ad", "clinical task", choices=lambda: tuple(TASKS)),
            Setting(
                "model",
                str,
                "regional",
                "regional: atlas pooling + linear head (learns under sample-level DP); "
                "cnn: 3-D residual CNN (for runs without sample-level DP)",
                choices=lambda: tuple(MODEL_DEFAULTS),
            ),
            Setting("num-server-rounds", int, 6, "federated rounds", minimum=1),
            Setting(
                "local-epochs",
                int,
                0,
                "local epochs per round (0: the model's default, 3 regional / 1 cnn)",
                minimum=0,
            ),
            Setting(
                "batch-size",
                int,
                0,
                "local batch size (0: the model's default: each site's whole train split "
                "for regional, 16 for cnn)",
                minimum=0,
            ),
            Setting(
                "learning-rate",
                float,
                0.0,
                "local learning rate (0: the model's default, 3.0 regional / 0.001 cnn)",
                minimum=0,
            ),
            Setting(
                "optimizer",
                str,
                "auto",
                "local optimizer (auto: the model's default, sgd regional / adamw cnn)",
                choices=("auto", "sgd", "adamw"),
            ),
            Setting(
                "method",
                str,
                "fedavg",
                "training method (fedmi.shared.methods)",
                choices=_federated_methods,
            ),
            Setting(
                "adaptation",
                str,
                "on",
                "methods that adapt (fedmi): a site without trained local layers (a holdout) fits "
                "them label-free to the training sites' pooled feature moments; off: it uses "
                "identity layers (the federated model as trained)",
                choices=("on", "off"),
            ),
            Setting(
                "proximal-mu", float, 0.01, "FedProx: weight of mu/2·||w − w_global||²", minimum=0
            ),
            Setting(
                "server-learning-rate",
                float,
                0.01,
                "FedAdam: the server optimiser's learning rate",
                minimum=0,
                exclusive_minimum=True,
            ),
            Setting("seed", int, 0, "seed of splits, initial weights and training", minimum=0),
            Setting(
                "round-timeout",
                float,
                1800.0,
                "seconds each round (and the initial query) waits for replies; late sites are skipped",
                minimum=0,
                exclusive_minimum=True,
            ),
            Setting(
                "min-nodes",
                int,
                1,
                "sites to wait for (up to node-wait) before starting",
                minimum=1,
            ),
            Setting(
                "min-train-replies",
                int,
                1,
                "fewer valid updates than this: the round keeps the model unchanged",
                minimum=1,
            ),
            Setting(
                "max-examples",
                int,
                100_000,
                "largest num-examples the server believes from one site",
                minimum=1,
            ),
            Setting(
                "robust-aggregation",
                str,
                "on",
                "cap each update's num-examples and weight, and bound its norm, before "
                "aggregating (docs/robust-aggregation.md)",
                choices=("on", "off"),
                group=_ROBUST,
            ),
            Setting(
                "robust-norm-bound",
                float,
                0.0,
                "largest update norm (‖reply − global‖) aggregated unscaled "
                "(0: robust-norm-factor × the round's median norm)",
                minimum=0,
                group=_ROBUST,
            ),
            Setting(
                "robust-norm-factor",
                float,
                1.0,
                "the norm bound as a multiple of the round's median update norm",
                minimum=0,
                exclusive_minimum=True,
                group=_ROBUST,
            ),
            Setting(
                "robust-weight-cap",
                float,
                1.0,
                "largest num-examples of one site as a multiple of the round's median "
                "(0: only the declared training count caps it)",
                minimum=0,
                group=_ROBUST,
            ),
            Setting(
                "robust-aggregator",
                str,
                "auto",
                "auto: trimmed-mean for FedAvg methods, else the method's own; mean: the "
                "method's own aggregator; trimmed-mean, median, multikrum: Flower's "
                "FedTrimmedAvg, FedMedian, MultiKrum in its place",
                choices=ROBUST_AGGREGATORS,
                group=_ROBUST,
            ),
            Setting(
                "robust-trim-fraction",
                float,
                0.25,
                "trimmed-mean: fraction cut at each end per coordinate (FedTrimmedAvg beta; "
                "0.25 cuts one of four sites at each end)",
                minimum=0,
                maximum=0.49,
                group=_ROBUST,
            ),
            Setting(
                "robust-malicious-sites",
                int,
                1,
                "multikrum: sites assumed malicious (MultiKrum num_malicious_nodes)",
                minimum=0,
                group=_ROBUST,
            ),
            Setting("node-wait", float, 600.0, "seconds to wait for min-nodes sites", minimum=0),
            Setting(
                "out-dir",
                str,
                "",
                'run folder, an absolute path (`""`: `~/fedmi-runs/<run id>`)',
            ),
            Setting(
                "validation-timeout",
                float,
                600.0,
                "seconds each site has to answer the final evaluation-only round",
                minimum=0,
                exclusive_minimum=True,
            ),
            Setting(
                "report-prevalences",
                str,
                "0.05,0.2",
                "prevalences (comma-separated) at which the report gives PPV and NPV besides "
                "each site's own",
                check=check_prevalences,
                check_doc="numbers between 0 and 1, comma-separated",
            ),
            Setting(
                "operating-point",
                str,
                "youden",
                "how the federation's decision threshold is chosen on the training sites' "
                "pooled score histograms: Youden's J, or the most specific threshold reaching "
                "a target sensitivity, or the most sensitive one reaching a target specificity "
                "(docs/operating-point.md)",
                choices=CRITERIA,
            ),
            Setting(
                "operating-point-target",
                float,
                0.9,
                "the target of operating-point = sensitivity or specificity",
                minimum=0,
                exclusive_minimum=True,
                maximum=1,
                exclusive_maximum=True,
            ),
            Setting(
                "normative-model",
                str,
                "auto",
                "build the federated normative model of normal scans after training and "
                "evaluate its anomaly score at the holdout sites (docs/normative-model.md); "
                "auto: for fdg-ad",
                choices=("auto", "on", "off"),
            ),
            Setting(
                "normative-clip",
                float,
                1.0,
                "L2 bound of a normal scan's regional log profile around the centre before "
                "its sums are released (bounds one scan's effect; log units)",
                minimum=0,
                exclusive_minimum=True,
                maximum=100,
            ),
            Setting(
                "pretrain-rounds",
                int,
                0,
                "federated masked-image pretraining rounds of the CNN encoder before training "
                "(0: none; needs model = cnn; the method: shared/pretraining.py)",
                minimum=0,
                maximum=1000,
                group=_PRETRAIN,
            ),
            Setting(
                "pretrain-epochs",
                int,
                1,
                "local epochs per pretraining round",
                minimum=1,
                maximum=100,
                group=_PRETRAIN,
            ),
            Setting(
                "pretrain-mask-ratio",
                float,
                0.6,
                "share of each scan's 8-voxel patches hidden in pretraining",
                minimum=0.05,
                maximum=0.95,
                group=_PRETRAIN,
            ),
            Setting(
                "pretrain-holdouts",
                bool,
                True,
                "holdout sites pretrain too, on their unlabelled scans (never on labels)",
                group=_PRETRAIN,
            ),
            Setting(
                "linear-probe-rounds",
                int,
                0,
                "the first training rounds after pretraining train only the encoder's projection "
                "and the head, the pretrained stages frozen (linear probing, then fine-tuning; "
                "0: every weight from the first round; needs pretrain-rounds > 0)",
                minimum=0,
                maximum=1000,
                group=_PRETRAIN,
            ),
            Setting(
                "central-dp",
                str,
                "off",
                "client-level central DP at the server (Flower's server-side fixed clipping)",
                choices=CENTRAL_DP,
                group=_DP,
            ),
            Setting(
                "central-noise-multiplier",
                float,
                1.0,
                "noise multiplier of central DP",
                minimum=0,
                group=_DP,
            ),
            Setting(
                "central-clipping-norm",
                float,
                1.0,
                "clipping norm of central DP",
                minimum=0,
                exclusive_minimum=True,
                group=_DP,
            ),
            Setting("client-threads", int, 1, "torch threads per ClientApp", minimum=1, group=_SIM),
            Setting(
                "sim-data-root",
                str,
                "",
                "federation root: partition i is its i-th site folder, in sorted order",
                group=_SIM,
            ),
            Setting(
                "sim-state-root",
                str,
                "",
                'sites\' state folders (`""`: `<sim-data-root>/.fedmi-state/<site>`)',
                group=_SIM,
            ),
            Setting(
                "sim-cache-root",
                str,
                "",
                "sites' ingest caches (`\"\"`: `ingest/` in each site's state folder)",
                group=_SIM,
            ),
            Setting(
                "sim-role-overrides",
                str,
                "",
                "roles standing in for the sites' own, e.g. `site-b=holdout` (leave-one-site-out)",
                check=_check_role_overrides,
                check_doc="`site-id=role` items, comma-separated",
                group=_SIM,
            ),
            Setting(
                "sim-min-cell-count",
                int,
                0,
                "small-cell k of every simulated site (0: each site's own)",
                minimum=0,
                group=_SIM,
            ),
            Setting(
                "sim-default-epsilon",
                float,
                0.0,
                "ε for sites whose site.toml sets none (0: the built-in 8)",
                minimum=0,
                group=_SIM,
            ),
            Setting(
                "sim-default-pretrain-share",
                float,
                0.0,
                "pretrain-share for sites whose site.toml sets none (0: the built-in 0.3)",
                minimum=0,
                maximum=1,
                group=_SIM,
            ),
            Setting(
                "sim-default-dp",
                str,
                "",
                'DP for sites whose site.toml sets none (`""`: the built-in default, on)',
                choices=("", "on", "off"),
                group=_SIM,
            ),
            Setting(
                "sim-ledger-root",
                str,
                "",
                'sites\' privacy ledgers (`""`: `<data-root>/.fedmi-cache/<site>`)',
                group=_SIM,
            ),
        )
    },
    error=RunConfigError,
)
