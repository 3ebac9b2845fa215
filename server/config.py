"""The federation-wide run configuration, parsed once into a frozen dataclass.

Keys are the flat kebab-case keys of ``[tool.flwr.app.config]`` in pyproject.toml,
overridable with ``flwr run --run-config`` (or by the one-machine runner).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path

from shared.tasks import TASKS

METHODS = ("fedavg", "fedprox", "fedadam")


class RunConfigError(ValueError):
    """A run-config value is unusable; the message names the key and the fix."""


@dataclass(frozen=True)
class RunConfig:
    """Federation-wide settings chosen by the coordinator."""

    task: str = "fdg-ad"
    num_server_rounds: int = 20
    local_epochs: int = 2
    batch_size: int = 16
    learning_rate: float = 1e-3
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

    def validate(self) -> None:
        """Raise :class:`RunConfigError` on values no run could use."""
        if self.task not in TASKS:
            raise RunConfigError(f"run config task={self.task!r}: choose one of {', '.join(TASKS)}")
        if self.method not in METHODS:
            raise RunConfigError(
                f"run config method={self.method!r}: choose one of {', '.join(METHODS)}"
            )
        for key in (
            "num_server_rounds",
            "local_epochs",
            "batch_size",
            "min_train_replies",
            "max_examples",
        ):
            if getattr(self, key) < 1:
                raise RunConfigError(f"run config {key.replace('_', '-')} must be at least 1")
        if self.learning_rate <= 0:
            raise RunConfigError("run config learning-rate must be positive")

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
