"""The federation-wide run configuration, parsed once into a frozen dataclass.

Keys are the flat kebab-case keys of ``[tool.flwr.app.config]`` in pyproject.toml,
overridable with ``flwr run --run-config``, ``fedmi-server run --run-config`` or
``fedmi-sim run --config``. :data:`RUN_CONFIG` declares every key once (type, default,
allowed values, doc; in :mod:`fedmi.shared.run_settings`, re-exported here);
:meth:`RunConfig.from_mapping` is the door: an unknown key, a wrong type or a value out of
range raises :class:`RunConfigError` naming the key (and the close match).
docs/configuration.md is generated from the declaration.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from fedmi.shared.methods import get_method
from fedmi.shared.run_settings import (
    CENTRAL_DP,
    MODEL_DEFAULTS,
    RUN_CONFIG,
    ModelDefaults,
    RunConfigError,
    check_prevalences,
    parse_prevalences,
)

__all__ = [
    "CENTRAL_DP",
    "MODEL_DEFAULTS",
    "RUN_CONFIG",
    "ModelDefaults",
    "RunConfig",
    "RunConfigError",
]


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
    adaptation: str = _default("adaptation")
    proximal_mu: float = _default("proximal-mu")
    server_learning_rate: float = _default("server-learning-rate")
    seed: int = _default("seed")
    round_timeout: float = _default("round-timeout")
    min_nodes: int = _default("min-nodes")
    min_train_replies: int = _default("min-train-replies")
    max_examples: int = _default("max-examples")
    robust_aggregation: str = _default("robust-aggregation")
    robust_norm_bound: float = _default("robust-norm-bound")
    robust_norm_factor: float = _default("robust-norm-factor")
    robust_weight_cap: float = _default("robust-weight-cap")
    robust_aggregator: str = _default("robust-aggregator")
    robust_trim_fraction: float = _default("robust-trim-fraction")
    robust_malicious_sites: int = _default("robust-malicious-sites")
    node_wait: float = _default("node-wait")
    out_dir: str = _default("out-dir")
    validation_timeout: float = _default("validation-timeout")
    report_prevalences: str = _default("report-prevalences")
    operating_point: str = _default("operating-point")
    operating_point_target: float = _default("operating-point-target")
    normative_model: str = _default("normative-model")
    normative_clip: float = _default("normative-clip")
    pretrain_rounds: int = _default("pretrain-rounds")
    pretrain_epochs: int = _default("pretrain-epochs")
    pretrain_mask_ratio: float = _default("pretrain-mask-ratio")
    pretrain_holdouts: bool = _default("pretrain-holdouts")
    linear_probe_rounds: int = _default("linear-probe-rounds")
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
    sim_default_pretrain_share: float = _default("sim-default-pretrain-share")
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
        cfg = cls(**{RUN_CONFIG.setting(k).field: v for k, v in typed.items()})
        cfg._check_combinations(source)
        return cfg

    def _check_combinations(self, source: str) -> None:
        """Settings valid one by one that no run can use together.

        Raises
        ------
        RunConfigError
            ``pretrain-rounds`` > 0 with a model other than ``cnn`` (masked-image
            pretraining trains the CNN's encoder; the regional model has none), or with
            a method whose site-local layers need harmonization groups (``fedbn``,
            ``fedmi``: unlabelled scans carry none yet); ``linear-probe-rounds`` > 0 without
            pretraining (there is nothing pretrained to keep frozen) or beyond
            ``num-server-rounds``.
        """
        if self.linear_probe_rounds > 0 and self.pretrain_rounds == 0:
            raise RunConfigError(
                f"{source}: `linear-probe-rounds` = {self.linear_probe_rounds} needs "
                "`pretrain-rounds` > 0 (it freezes the pretrained encoder stages): set "
                "pretrain-rounds or linear-probe-rounds=0"
            )
        if self.linear_probe_rounds > self.num_server_rounds:
            raise RunConfigError(
                f"{source}: `linear-probe-rounds` = {self.linear_probe_rounds} exceeds "
                f"`num-server-rounds` = {self.num_server_rounds}: at most every training "
                "round can be a probe round"
            )
        if self.pretrain_rounds > 0 and self.model != "cnn":
            raise RunConfigError(
                f'{source}: `pretrain-rounds` = {self.pretrain_rounds} needs `model` = "cnn" '
                f"(masked-image pretraining trains the CNN's encoder), not {self.model!r}: "
                "set model=cnn or pretrain-rounds=0"
            )
        if self.pretrain_rounds > 0 and get_method(self.method).harmonization is not None:
            raise RunConfigError(
                f"{source}: `pretrain-rounds` = {self.pretrain_rounds} is not available with "
                f"`method` = {self.method!r} yet (its site-local layers need a harmonization "
                "group for every unlabelled scan): use fedavg, fedprox or fedadam, or "
                "pretrain-rounds=0"
            )

    @property
    def pretrains(self) -> bool:
        """Whether the run starts with federated self-supervised pretraining."""
        return self.pretrain_rounds > 0

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

    @property
    def builds_normative_model(self) -> bool:
        """Whether the run builds the normative model (``auto``: the FDG task only)."""
        if self.normative_model == "auto":
            return self.task == "fdg-ad"
        return self.normative_model == "on"

    def validate(self) -> None:
        """Raise :class:`RunConfigError` on values no run could use (as :meth:`from_mapping`)."""
        RUN_CONFIG.validate(self.as_dict(), "run config")
        self._check_combinations("run config")

    def prevalences(self) -> tuple[float, ...]:
        """``report-prevalences`` parsed: each strictly between 0 and 1."""
        parsed = parse_prevalences(self.report_prevalences)
        if parsed is None:
            raise RunConfigError(
                f"run config: `report-prevalences` {check_prevalences(self.report_prevalences)}"
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
