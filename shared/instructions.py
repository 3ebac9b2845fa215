"""What the coordinator asks of a site: one typed, frozen instruction per message type.

Every instruction travels as the ``config`` ConfigRecord of its Flower message
(:data:`fedmi.shared.contract.CONFIG`). The server writes it only with
:meth:`Instruction.to_record` and the site reads it only with :meth:`Instruction.from_record`,
which validates it: a missing or unknown key, a value of the wrong type or out of range
raises :class:`InstructionError`, and the site replies ``error`` instead of guessing. What a
site sends back is declared separately, in :mod:`fedmi.shared.contract`.

==================  ===========================  =====================================
message type        instruction                  what the site does
==================  ===========================  =====================================
``query``           :class:`QueryInstruction`    reports its role and counts
``train``           :class:`TrainInstruction`    trains the received weights
``train.pretrain``  :class:`PretrainInstruction` masked-image pretraining (no labels)
``evaluate``        :class:`EvaluateInstruction` evaluates them on its test split
``evaluate.external`` :class:`ExternalInstruction` final evaluation, with uncertainty,
                                                 OOD and (fedmi) label-free adaptation
``query.features``  :class:`FeaturesQuery`       embedding moments (fedmi runs)
``query.ood``       :class:`OodQuery`            per-class embedding sums for OOD
``query.normative`` :class:`NormativeQuery`      normal scans' sufficient statistics
``evaluate.         :class:`NormativeEvaluation` anomaly scores against the normative
normative``                                      model (holdout sites)
==================  ===========================  =====================================

Seeds: :func:`round_seed` is the one rule for the reproducible random stream of a round;
the per-site train/test split is fixed by the run's ``seed`` itself (:attr:`Instruction.seed`).
Randomness that protects privacy (DP-SGD's sampling and noise) never comes from these seeds.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any, ClassVar, TypeVar

from flwr.app import ConfigRecord

from fedmi.shared import contract
from fedmi.shared.harmonization import (
    ClassMoments,
    FeatureMoments,
    reference_config,
    reference_from_config,
)
from fedmi.shared.methods import FEDERATED_METHODS
from fedmi.shared.model import ARCHITECTURES, DEFAULT_ARCH
from fedmi.shared.normative import DEFAULT_CLIP, NormativeError, NormativeModel
from fedmi.shared.ood import FeatureDescription, description_config, description_from_config
from fedmi.shared.run_config import MODEL_DEFAULTS, RunConfig
from fedmi.shared.tasks import TASKS
from fedmi.shared.uncertainty import DEFAULT_MC_PASSES

#: Streams of successive rounds are this far apart (a prime larger than any round count).
SEED_STRIDE = 100_003
OPTIMIZERS = ("sgd", "adamw")
_DEFAULTS = MODEL_DEFAULTS[DEFAULT_ARCH]

I = TypeVar("I", bound="Instruction")  # noqa: E741


def round_seed(seed: int, server_round: int) -> int:
    """The seed of round ``server_round``'s random stream (shuffling, augmentation, dropout).

    ``seed · 100 003 + server_round``: a different but reproducible stream per round. The
    one-machine baselines train as one "round" (``server_round = 1``).
    """
    return int(seed) * SEED_STRIDE + int(server_round)


class InstructionError(ValueError):
    """An instruction is malformed; the message names the message type and the key."""


_KINDS = {str: "text", int: "a whole number", float: "a finite number", bool: "true or false"}


def _check(name: str, kind: type, value: object, where: str) -> object:
    """``value`` as ``kind`` (int, float, str or bool), or :class:`InstructionError`."""
    if kind is bool:
        ok = isinstance(value, bool)
    elif kind is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif kind is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        ok = ok and math.isfinite(float(value))  # type: ignore[arg-type]
    else:
        ok = isinstance(value, kind)
    if not ok:
        raise InstructionError(
            f"{where}: {name} must be {_KINDS[kind]}, not {type(value).__name__} {value!r}"
        )
    return float(value) if kind is float else value  # type: ignore[arg-type]


@dataclass(frozen=True)
class Instruction:
    """Fields every instruction carries: which task, model and method, and the run's seed.

    Attributes
    ----------
    task
        The clinical task (:data:`fedmi.shared.tasks.TASKS`).
    model
        The model architecture (:data:`fedmi.shared.model.ARCHITECTURES`).
    method
        The training method (:data:`fedmi.shared.methods.FEDERATED_METHODS`): decides
        which site-local layers the site's model has.
    seed
        The run's seed; it also fixes the per-patient train/test split at every site.
    """

    #: the Flower message type this instruction travels with
    message_type: ClassVar[str] = ""

    task: str = "fdg-ad"
    model: str = DEFAULT_ARCH
    method: str = "fedavg"
    seed: int = 0

    def __post_init__(self) -> None:
        where = f"{self.message_type} instruction"
        for f in fields(self):
            if f.metadata.get("wire", True):
                _check(_key(f.name), _TYPES[f.type], getattr(self, f.name), where)  # type: ignore[index]
        _choice(self.task, TASKS, "task", where)
        _choice(self.model, ARCHITECTURES, "model", where)
        _choice(self.method, FEDERATED_METHODS, "method", where)
        _at_least(self.seed, 0, "seed", where)

    @classmethod
    def from_run_config(cls: type[I], cfg: RunConfig, **values: Any) -> I:
        """The instruction the coordinator of ``cfg`` sends (``values`` set the rest)."""
        return cls(task=cfg.task, model=cfg.model, method=cfg.method, seed=cfg.seed, **values)

    def to_record(self) -> ConfigRecord:
        """The instruction as the ``config`` record of its message (every field written)."""
        out: dict[str, Any] = {}
        for f in fields(self):
            if f.metadata.get("wire", True):
                out[_key(f.name)] = getattr(self, f.name)
        out.update(self._extra_record())
        return ConfigRecord(out)

    @classmethod
    def from_record(cls: type[I], record: Mapping[str, object] | None) -> I:
        """Parse and validate the ``config`` record of a message.

        Raises
        ------
        InstructionError
            When the record is absent, lacks a key, has one this instruction does not
            declare, or a value of the wrong type or out of range.
        """
        where = f"{cls.message_type} instruction"
        if record is None:
            raise InstructionError(f"{where}: the message has no config record")
        values = dict(record)
        wire = {_key(f.name): f for f in fields(cls) if f.metadata.get("wire", True)}
        extra = cls._extra_keys()
        unknown = sorted(set(values) - set(wire) - extra)
        if unknown:
            raise InstructionError(f"{where}: undeclared key(s) {', '.join(unknown)}")
        missing = sorted(set(wire) - set(values))
        if missing:
            raise InstructionError(f"{where}: missing key(s) {', '.join(missing)}")
        kwargs = {f.name: values[k] for k, f in wire.items()}
        kwargs.update(cls._parse_extra({k: v for k, v in values.items() if k in extra}))
        return cls(**kwargs)

    # --- hooks for instructions with structured payloads (ExternalInstruction) ---------
    def _extra_record(self) -> dict[str, Any]:
        return {}

    @classmethod
    def _extra_keys(cls) -> set[str]:
        return set()

    @classmethod
    def _parse_extra(cls, values: dict[str, object]) -> dict[str, Any]:
        return {}


_TYPES = {"str": str, "int": int, "float": float, "bool": bool}


def _key(name: str) -> str:
    return name.replace("_", "-")


def _choice(value: object, allowed: tuple[str, ...] | Mapping[str, object], key: str, where: str):
    if value not in allowed:
        raise InstructionError(f"{where}: {key}={value!r} is not one of {', '.join(allowed)}")


def _at_least(value: float, low: float, key: str, where: str) -> None:
    if value < low:
        raise InstructionError(f"{where}: {key}={value!r} must be at least {low}")


@dataclass(frozen=True)
class QueryInstruction(Instruction):
    """``query``: report the site's pseudonym, role and labelled-scan counts."""

    message_type: ClassVar[str] = contract.QUERY


def _recipe(cfg: RunConfig) -> dict[str, Any]:
    """The local recipe a train and a pretraining round share (the model's defaults applied)."""
    return dict(
        batch_size=cfg.effective_batch_size,
        learning_rate=cfg.effective_learning_rate,
        optimizer=cfg.effective_optimizer,
        augment=cfg.effective_augment,
    )


def _check_recipe(ins: Any) -> str:
    """Validate the recipe fields of a train or pretraining instruction; where it is."""
    where = f"{ins.message_type} instruction"
    _at_least(ins.local_epochs, 1, "local-epochs", where)
    _at_least(ins.batch_size, 0, "batch-size", where)
    _choice(ins.optimizer, OPTIMIZERS, "optimizer", where)
    if not ins.learning_rate > 0:
        raise InstructionError(f"{where}: learning-rate must be positive")
    return where


@dataclass(frozen=True)
class TrainInstruction(Instruction):
    """``train``: train the received federated weights on the site's train split.

    Attributes
    ----------
    local_epochs, batch_size, learning_rate, optimizer, augment
        The local training recipe (``batch_size`` 0: the whole train split per step).
    num_server_rounds
        Rounds planned for the run: a site calibrates its DP-SGD noise for them.
    server_round
        This round (written by Flower's strategy).
    proximal_mu
        FedProx's ``mu`` (written by Flower's FedProx; 0: no proximal term).
    evaluate_received
        Evaluate the received weights on the test split first and send that evaluation
        with the train reply (:data:`fedmi.shared.contract.EVALUATION`).
    linear_probe_rounds
        Rounds ``1 … linear_probe_rounds`` train only the CNN encoder's projection and the
        head, its pretrained stages (and the harmonizer) frozen
        (:func:`fedmi.shared.pretraining.set_linear_probe`; 0: none).
    """

    message_type: ClassVar[str] = contract.TRAIN

    local_epochs: int = _DEFAULTS.local_epochs
    batch_size: int = _DEFAULTS.batch_size
    learning_rate: float = _DEFAULTS.learning_rate
    optimizer: str = _DEFAULTS.optimizer
    augment: bool = _DEFAULTS.augment
    num_server_rounds: int = 1
    server_round: int = 0
    proximal_mu: float = 0.0
    evaluate_received: bool = False
    linear_probe_rounds: int = 0

    def __post_init__(self) -> None:
        super().__post_init__()
        where = _check_recipe(self)
        _at_least(self.num_server_rounds, 1, "num-server-rounds", where)
        _at_least(self.server_round, 0, "server-round", where)
        _at_least(self.proximal_mu, 0.0, "proximal-mu", where)
        _at_least(self.linear_probe_rounds, 0, "linear-probe-rounds", where)
        if self.linear_probe_rounds > self.num_server_rounds:
            raise InstructionError(
                f"{where}: linear-probe-rounds={self.linear_probe_rounds} exceeds "
                f"num-server-rounds={self.num_server_rounds}"
            )
        if self.linear_probe_rounds and self.model != "cnn":
            raise InstructionError(
                f"{where}: linear-probe-rounds={self.linear_probe_rounds} with "
                f"model={self.model!r}: only the 'cnn' encoder has stages to freeze"
            )

    @classmethod
    def from_run_config(cls, cfg: RunConfig, **values: Any) -> TrainInstruction:
        """The round-independent train instruction of ``cfg`` (the model's defaults applied)."""
        recipe = dict(
            _recipe(cfg),
            local_epochs=cfg.effective_local_epochs,
            num_server_rounds=cfg.num_server_rounds,
            linear_probe_rounds=cfg.linear_probe_rounds,
        )
        return super().from_run_config(cfg, **{**recipe, **values})

    @property
    def round_seed(self) -> int:
        """The seed of this round's shuffling and augmentation (:func:`round_seed`)."""
        return round_seed(self.seed, self.server_round)

    @property
    def linear_probe(self) -> bool:
        """Whether this round trains the projection and head only (encoder stages frozen)."""
        return 1 <= self.server_round <= self.linear_probe_rounds


@dataclass(frozen=True)
class PretrainInstruction(Instruction):
    """``train.pretrain``: masked-image pretraining of the received encoder and decoder.

    The site pretrains on volumes only (its train split's scans and its unlabelled
    archive; a holdout site on its unlabelled archive alone), never on labels
    (:mod:`fedmi.shared.pretraining`).

    Attributes
    ----------
    local_epochs, batch_size, learning_rate, optimizer, augment
        The local recipe (the run's fine-tuning recipe, with ``local_epochs`` from
        ``pretrain-epochs``; ``batch_size`` 0: all the site's scans per step).
    mask_ratio
        Share of each scan's patches hidden, in ``(0, 1)``.
    num_pretrain_rounds
        Pretraining rounds planned for the run: a site calibrates its DP-SGD noise for them.
    server_round
        This pretraining round (1-based).
    """

    message_type: ClassVar[str] = contract.PRETRAIN

    local_epochs: int = 1
    batch_size: int = _DEFAULTS.batch_size
    learning_rate: float = _DEFAULTS.learning_rate
    optimizer: str = _DEFAULTS.optimizer
    augment: bool = _DEFAULTS.augment
    mask_ratio: float = 0.6
    num_pretrain_rounds: int = 1
    server_round: int = 1

    def __post_init__(self) -> None:
        super().__post_init__()
        where = _check_recipe(self)
        _at_least(self.num_pretrain_rounds, 1, "num-pretrain-rounds", where)
        _at_least(self.server_round, 1, "server-round", where)
        if not 0.0 < self.mask_ratio < 1.0:
            raise InstructionError(f"{where}: mask-ratio={self.mask_ratio!r} must lie in (0, 1)")
        if self.model != "cnn":
            raise InstructionError(f"{where}: model={self.model!r}: pretraining needs 'cnn'")

    @classmethod
    def from_run_config(cls, cfg: RunConfig, **values: Any) -> PretrainInstruction:
        """The pretraining instruction of ``cfg`` for round ``values["server_round"]``."""
        recipe = dict(
            _recipe(cfg),
            local_epochs=cfg.pretrain_epochs,
            mask_ratio=cfg.pretrain_mask_ratio,
            num_pretrain_rounds=max(1, cfg.pretrain_rounds),
        )
        return super().from_run_config(cfg, **{**recipe, **values})

    @property
    def round_seed(self) -> int:
        """The seed of this round's shuffling, augmentation and masks: a stream apart from
        the training rounds' (:func:`round_seed` of the round counted past any training)."""
        return round_seed(self.seed, SEED_STRIDE - self.server_round)


@dataclass(frozen=True)
class EvaluateInstruction(Instruction):
    """``evaluate``: evaluate the received weights on the site's test split."""

    message_type: ClassVar[str] = contract.EVALUATE

    server_round: int = 0

    def __post_init__(self) -> None:
        super().__post_init__()
        _at_least(self.server_round, 0, "server-round", f"{self.message_type} instruction")


@dataclass(frozen=True)
class ExternalInstruction(Instruction):
    """``evaluate.external``: the final model's evaluation at every site.

    Attributes
    ----------
    mc_passes
        MC-dropout passes for the uncertainty statistics.
    reference, classes
        The training sites' pooled embedding moments (overall and per class) that a
        ``fedmi`` site without trained local layers adapts to (``None``: none were pooled).
    ood
        The training data's feature description for the OOD scores (``None``: none).
    """

    message_type: ClassVar[str] = contract.EXTERNAL

    mc_passes: int = DEFAULT_MC_PASSES
    reference: FeatureMoments | None = field(default=None, metadata={"wire": False})
    classes: ClassMoments | None = field(default=None, metadata={"wire": False})
    ood: FeatureDescription | None = field(default=None, metadata={"wire": False})

    def __post_init__(self) -> None:
        super().__post_init__()
        where = f"{self.message_type} instruction"
        _at_least(self.mc_passes, 1, "mc-passes", where)
        if self.classes is not None and self.reference is None:
            raise InstructionError(f"{where}: per-class moments without the pooled moments")

    def _extra_record(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.reference is not None:
            out |= reference_config(self.reference, self.classes)
        if self.ood is not None:
            out |= description_config(self.ood)
        return out

    @classmethod
    def _extra_keys(cls) -> set[str]:
        moments = {
            f"{k}{s}" for k in ("feat-count", "feat-mean", "feat-var") for s in ("", "-neg", "-pos")
        }
        return moments | {"ood-means", "ood-covariance", "ood-count", "ood-classes"}

    @classmethod
    def _parse_extra(cls, values: dict[str, object]) -> dict[str, Any]:
        where = f"{cls.message_type} instruction"
        reference, classes = reference_from_config(values)
        moments = [k for k in values if k.startswith("feat-")]
        expected = 9 if classes is not None else 3
        if moments and (reference is None or len(moments) != expected):
            raise InstructionError(f"{where}: malformed feature moments ({', '.join(moments)})")
        ood = description_from_config(values)
        if any(k.startswith("ood-") for k in values) and ood is None:
            raise InstructionError(f"{where}: malformed OOD description")
        return {"reference": reference, "classes": classes, "ood": ood}


@dataclass(frozen=True)
class FeaturesQuery(Instruction):
    """``query.features``: embedding moments of the final model (``fedmi`` runs)."""

    message_type: ClassVar[str] = contract.FEATURES


@dataclass(frozen=True)
class OodQuery(Instruction):
    """``query.ood``: per-class embedding sums of the final model over the train split."""

    message_type: ClassVar[str] = contract.OOD_STATS


@dataclass(frozen=True)
class NormativeQuery(Instruction):
    """``query.normative``: sufficient statistics of the site's normal scans.

    Attributes
    ----------
    clip
        L2 bound of a profile minus ``centre`` (:func:`fedmi.shared.normative.clip_rows`).
    centre
        The public centre of the profiles, one value per region (``None``: zeros).
    """

    message_type: ClassVar[str] = contract.NORMATIVE_STATS

    clip: float = DEFAULT_CLIP
    centre: tuple[float, ...] | None = field(default=None, metadata={"wire": False})

    def __post_init__(self) -> None:
        super().__post_init__()
        where = f"{self.message_type} instruction"
        if not 0 < self.clip <= 100:
            raise InstructionError(f"{where}: clip={self.clip!r} must lie in (0, 100]")
        if self.centre is not None:
            if not 2 <= len(self.centre) <= contract.NORMATIVE_REGIONS_MAX or not all(
                isinstance(v, (int, float)) and math.isfinite(v) for v in self.centre
            ):
                raise InstructionError(
                    f"{where}: normative-centre must be 2–{contract.NORMATIVE_REGIONS_MAX} "
                    "finite numbers"
                )

    def _extra_record(self) -> dict[str, Any]:
        return {} if self.centre is None else {"normative-centre": [float(v) for v in self.centre]}

    @classmethod
    def _extra_keys(cls) -> set[str]:
        return {"normative-centre"}

    @classmethod
    def _parse_extra(cls, values: dict[str, object]) -> dict[str, Any]:
        centre = values.get("normative-centre")
        if centre is None:
            return {}
        if not isinstance(centre, list):
            raise InstructionError(f"{cls.message_type} instruction: normative-centre is a list")
        return {"centre": tuple(centre)}


@dataclass(frozen=True)
class NormativeEvaluation(Instruction):
    """``evaluate.normative``: score the site's scans against the normative model.

    Attributes
    ----------
    normative_model
        The age-adjusted model, :meth:`fedmi.shared.normative.NormativeModel.to_json`.
    normative_reference
        The same fit without age (the unadjusted reference), same form.
    threshold
        The supervised classifier's operating point (for its calls on the disorders).
    """

    message_type: ClassVar[str] = contract.NORMATIVE_EVAL

    normative_model: str = ""
    normative_reference: str = ""
    threshold: float = 0.5

    def __post_init__(self) -> None:
        super().__post_init__()
        where = f"{self.message_type} instruction"
        if not 0.0 <= self.threshold <= 1.0:
            raise InstructionError(f"{where}: threshold={self.threshold!r} must lie in [0, 1]")
        for key in ("normative_model", "normative_reference"):
            try:
                NormativeModel.from_json(getattr(self, key))
            except NormativeError as exc:
                raise InstructionError(f"{where}: {_key(key)}: {exc}") from None

    @property
    def models(self) -> tuple[NormativeModel, NormativeModel]:
        """The age-adjusted model and the unadjusted reference."""
        return (
            NormativeModel.from_json(self.normative_model),
            NormativeModel.from_json(self.normative_reference),
        )


#: message type → its instruction class
INSTRUCTIONS: dict[str, type[Instruction]] = {
    cls.message_type: cls
    for cls in (
        QueryInstruction,
        TrainInstruction,
        PretrainInstruction,
        EvaluateInstruction,
        ExternalInstruction,
        FeaturesQuery,
        OodQuery,
        NormativeQuery,
        NormativeEvaluation,
    )
}


def replace(instruction: I, **changes: Any) -> I:
    """A copy of ``instruction`` with ``changes`` (validated like a new one)."""
    return dataclasses.replace(instruction, **changes)
