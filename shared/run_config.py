"""The federation-wide run configuration, parsed once into a frozen dataclass.

Keys are the flat kebab-case keys of ``[tool.flwr.app.config]`` in pyproject.toml,
overridable with ``flwr run --run-config`` (or by the one-machine runner).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path

from fedmi.shared.methods import FEDERATED_METHODS, METHODS
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


class RunConfigError(ValueError):
    """A run-config value is unusable; the message names the key and the fix."""


@dataclass(frozen=True)
class RunConfig:
    """Federation-wide settings chosen by the coordinator."""

    task: str = "fdg-ad"
    #: ``regional`` (atlas pooling + linear head: learns under sample-level DP) or
    #: ``cnn`` (3-D residual CNN: for runs without sample-level DP)
    model: str = "regional"
    num_server_rounds: int = 6
    #: 0 = the model's default (see MODEL_DEFAULTS)
    local_epochs: int = 0
    #: 0 = the model's default; the instruction's batch-size 0 means a site's whole split
    batch_size: int = 0
    #: 0 = the model's default (see MODEL_DEFAULTS)
    learning_rate: float = 0.0
    #: "auto" = the model's default (see MODEL_DEFAULTS), else "sgd" or "adamw"
    optimizer: str = "auto"
    method: str = "fedavg"
    proximal_mu: float = 0.01
    server_learning_rate: float = 0.01
    seed: int = 0
    round_timeout: float = 1800.0
    min_nodes: int = 1
    min_train_replies: int = 1
    max_examples: int = 100_000
    node_wait: float = 600.0
    out_dir: str = ""
    #: seconds each site has to answer the final evaluation-only round
    validation_timeout: float = 600.0
    #: prevalences (comma-separated) at which the report gives PPV and NPV besides each
    #: site's own (e.g. screening vs memory clinic)
    report_prevalences: str = "0.05,0.2"
    #: optional client-level central DP at the server: "off" or "fixed" (Flower's
    #: server-side fixed-clipping wrapper; see docs/privacy.md)
    central_dp: str = "off"
    central_noise_multiplier: float = 1.0
    central_clipping_norm: float = 1.0

    @classmethod
    def from_mapping(cls, values: Mapping[str, object]) -> RunConfig:
        """Parse kebab-case keys; unknown keys are ignored (sites' keys share the table)."""
        kwargs: dict[str, object] = {}
        for f in fields(cls):
            key = f.name.replace("_", "-")
            if key not in values:
                continue
            raw = values[key]
            try:
                kwargs[f.name] = type(getattr(cls(), f.name))(raw)
            except (TypeError, ValueError):
                raise RunConfigError(f"run config {key}={raw!r}: expected a {f.type}") from None
        cfg = cls(**kwargs)  # type: ignore[arg-type]
        cfg.validate()
        return cfg

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
        """Raise :class:`RunConfigError` on values no run could use."""
        if self.model not in MODEL_DEFAULTS:
            raise RunConfigError(
                f"run config model={self.model!r}: choose one of {', '.join(MODEL_DEFAULTS)}"
            )
        if self.optimizer not in ("auto", "sgd", "adamw"):
            raise RunConfigError(
                f"run config optimizer={self.optimizer!r}: choose auto, sgd or adamw"
            )
        if self.task not in TASKS:
            raise RunConfigError(f"run config task={self.task!r}: choose one of {', '.join(TASKS)}")
        if self.method not in METHODS or not METHODS[self.method].federated:
            raise RunConfigError(
                f"run config method={self.method!r}: choose one of {', '.join(FEDERATED_METHODS)}"
            )
        for key in ("num_server_rounds", "min_train_replies", "max_examples"):
            if getattr(self, key) < 1:
                raise RunConfigError(f"run config {key.replace('_', '-')} must be at least 1")
        for key in ("local_epochs", "batch_size"):
            if getattr(self, key) < 0:
                raise RunConfigError(
                    f"run config {key.replace('_', '-')} must be at least 1 "
                    "(or 0 for the model's default)"
                )
        if self.learning_rate < 0:
            raise RunConfigError(
                "run config learning-rate must be positive (or 0 for the model's default)"
            )
        if self.central_dp not in CENTRAL_DP:
            raise RunConfigError(
                f"run config central-dp={self.central_dp!r}: choose one of {', '.join(CENTRAL_DP)}"
            )
        if self.central_noise_multiplier < 0 or self.central_clipping_norm <= 0:
            raise RunConfigError(
                "run config central-noise-multiplier must be >= 0 and central-clipping-norm > 0"
            )
        if self.validation_timeout <= 0:
            raise RunConfigError("run config validation-timeout must be positive (seconds)")
        self.prevalences()

    def prevalences(self) -> tuple[float, ...]:
        """``report-prevalences`` parsed: each strictly between 0 and 1."""
        out = []
        for item in self.report_prevalences.split(","):
            if not item.strip():
                continue
            try:
                value = float(item)
            except ValueError:
                value = -1.0
            if not 0.0 < value < 1.0:
                raise RunConfigError(
                    f"run config report-prevalences={self.report_prevalences!r}: give "
                    'comma-separated numbers between 0 and 1, e.g. "0.05,0.2"'
                )
            out.append(value)
        return tuple(out)

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
