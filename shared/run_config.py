"""The federation-wide run configuration, parsed once into a frozen dataclass.

Keys are the flat kebab-case keys of ``[tool.flwr.app.config]`` in pyproject.toml,
overridable with ``flwr run --run-config``, ``fedmi-server run --run-config`` or
``fedmi-sim run --config``. :data:`RUN_CONFIG` declares every key once (type, default,
allowed values, doc); :meth:`RunConfig.from_mapping` is the door: an unknown key, a wrong
type or a value out of range raises :class:`RunConfigError` naming the key (and the close
match). docs/configuration.md is generated from the declaration.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from fedmi.shared.config_schema import ConfigError, Schema, Setting
from fedmi.shared.contract import ROLES
from fedmi.shared.methods import METHODS
from fedmi.shared.tasks import TASKS

CENTRAL_DP = ("off", "fixed")


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


#: Per model. The regional model's values were chosen under DP-SGD at ε = 8 and without DP
#: (issue notes): full-batch steps give each step the least noise per example (σ·C / n),
#: and three local epochs give 18 steps over the 6 default rounds.
MODEL_DEFAULTS = {
    "regional": ModelDefaults("sgd", 0.6, False, batch_size=0, local_epochs=3),
    "cnn": ModelDefaults("adamw", 1e-3, True, batch_size=16, local_epochs=1),
}


class RunConfigError(ConfigError):
    """A run-config value is unusable; the message names the key and the fix."""


def _prevalences(text: str) -> tuple[float, ...] | None:
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


def _check_prevalences(text: str) -> str | None:
    if _prevalences(text) is None:
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
                "local learning rate (0: the model's default, 0.6 regional / 0.001 cnn)",
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
                check=_check_prevalences,
                check_doc="numbers between 0 and 1, comma-separated",
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


def _default(key: str) -> Any:
    """The declared default of a run-config key (one source for the dataclass and the docs)."""
    return RUN_CONFIG.setting(key).default


@dataclass(frozen=True)
class RunConfig:
    """Federation-wide settings chosen by the coordinator (keys: :data:`RUN_CONFIG`).

    Build it with :meth:`from_mapping`, which validates every key; the effective_*
    properties fill settings left at 0 / "auto" from :data:`MODEL_DEFAULTS`.
    """

    task: str = _default("task")
    model: str = _default("model")
    num_server_rounds: int = _default("num-server-rounds")
    local_epochs: int = _default("local-epochs")
    batch_size: int = _default("batch-size")
    learning_rate: float = _default("learning-rate")
    optimizer: str = _default("optimizer")
    method: str = _default("method")
    proximal_mu: float = _default("proximal-mu")
    server_learning_rate: float = _default("server-learning-rate")
    seed: int = _default("seed")
    round_timeout: float = _default("round-timeout")
    min_nodes: int = _default("min-nodes")
    min_train_replies: int = _default("min-train-replies")
    max_examples: int = _default("max-examples")
    node_wait: float = _default("node-wait")
    out_dir: str = _default("out-dir")
    validation_timeout: float = _default("validation-timeout")
    report_prevalences: str = _default("report-prevalences")
    central_dp: str = _default("central-dp")
    central_noise_multiplier: float = _default("central-noise-multiplier")
    central_clipping_norm: float = _default("central-clipping-norm")
    client_threads: int = _default("client-threads")
    sim_data_root: str = _default("sim-data-root")
    sim_state_root: str = _default("sim-state-root")
    sim_cache_root: str = _default("sim-cache-root")
    sim_role_overrides: str = _default("sim-role-overrides")
    sim_min_cell_count: int = _default("sim-min-cell-count")
    sim_default_epsilon: float = _default("sim-default-epsilon")
    sim_default_dp: str = _default("sim-default-dp")
    sim_ledger_root: str = _default("sim-ledger-root")

    @classmethod
    def from_mapping(cls, values: Mapping[str, object], source: str = "run config") -> RunConfig:
        """Parse and validate kebab-case keys (missing keys take their defaults).

        Parameters
        ----------
        values
            Key → value, typed as TOML / Flower give them (an int where a number is
            expected is accepted; a string never stands for a number).
        source
            Where the values come from, first in every error message (``"--config"``).

        Raises
        ------
        RunConfigError
            An unknown key (with the close match), a wrong type or a value out of range.
        """
        typed = RUN_CONFIG.validate(values, source)
        return cls(**{RUN_CONFIG.setting(k).field: v for k, v in typed.items()})

    @property
    def effective_optimizer(self) -> str:
        """The optimizer sites use: the configured one, or the model's default."""
        return MODEL_DEFAULTS[self.model].optimizer if self.optimizer == "auto" else self.optimizer

    @property
    def effective_augment(self) -> bool:
        """Whether sites augment (flip, shift) their training scans: the model's default."""
        return MODEL_DEFAULTS[self.model].augment

    @property
    def effective_learning_rate(self) -> float:
        """The local learning rate: the configured one, or the model's default."""
        default = MODEL_DEFAULTS[self.model].learning_rate
        return default if self.learning_rate <= 0 else self.learning_rate

    @property
    def effective_local_epochs(self) -> int:
        """Local epochs per round: the configured number, or the model's default."""
        return self.local_epochs or MODEL_DEFAULTS[self.model].local_epochs

    @property
    def effective_batch_size(self) -> int:
        """The batch size sent to the sites (0: each site's whole train split)."""
        return self.batch_size or MODEL_DEFAULTS[self.model].batch_size

    def validate(self) -> None:
        """Raise :class:`RunConfigError` on values no run could use (as :meth:`from_mapping`)."""
        RUN_CONFIG.validate(self.as_dict(), "run config")

    def prevalences(self) -> tuple[float, ...]:
        """``report-prevalences`` parsed: each strictly between 0 and 1."""
        parsed = _prevalences(self.report_prevalences)
        if parsed is None:
            raise RunConfigError(
                f"run config: `report-prevalences` {_check_prevalences(self.report_prevalences)}"
                f", not {self.report_prevalences!r}"
            )
        return parsed

    def output_dir(self, run_id: int | str) -> Path:
        """Where this run's checkpoints and reports go (an absolute path)."""
        base = (
            Path(self.out_dir).expanduser()
            if self.out_dir
            else Path.home() / "fedmi-runs" / str(run_id)
        )
        return base.resolve()

    def as_dict(self) -> dict[str, object]:
        return {f.name.replace("_", "-"): getattr(self, f.name) for f in fields(self)}
