"""Resume points: a coordinator that is restarted continues where it stopped.

Flower 1.42 has no checkpointing: ``Strategy.start`` always counts rounds 1..N from the
arrays it is given. fedmi therefore runs its own round loop
(:func:`fedmi.server.federation.rounds.run_rounds`) that can start at any round, and after
every completed round it persists in the run folder

* ``checkpoints/round-NNN.npz``: the global weights (written by the ServerApp's checkpoint),
* ``checkpoints/strategy-NNN.npz``: the strategy's server-side state (FedAdam's
  ``current_arrays``, first and second moments ``m_t`` / ``v_t``), when it has any,
* ``resume.json``: the last completed round and its *phase*, a fingerprint of the run
  settings that shape the model, and the per-round history so far.

A run with ``pretrain-rounds`` > 0 has two phases. During self-supervised pretraining
(:mod:`fedmi.server.federation.pretrain`) the resume point is phase ``pretrain``, its
weights ``checkpoints/pretrain-NNN.npz`` (the pretraining network's encoder and decoder);
a restarted coordinator continues pretraining after that round. Once training has
begun the phase is ``train``: pretraining is complete, its history is kept in
``resume.json``, and the run continues with the next training round. A resume point
without a phase (written before pretraining existed) is a ``train`` one.

When the same ``out-dir`` is given again with the same settings, :func:`load_resume_point`
returns the state after the last completed round and the run continues with the next round
(its true number: FedAdam's bias correction depends on it). A folder holding a different
run is refused rather than overwritten.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from flwr.app import ArrayRecord
from flwr.serverapp.strategy import Strategy

from fedmi.server.history import RunHistory
from fedmi.shared.contract import array_record
from fedmi.shared.run_config import RunConfig

log = logging.getLogger(__name__)

STATE_FILE = "resume.json"
STATE_VERSION = 2
#: the phases a resume point can belong to
PHASES = ("pretrain", "train")
#: run-config keys that do not change the model's maths: a restart may change them
OPERATIONAL_KEYS = frozenset(
    {
        "out-dir",
        "node-wait",
        "round-timeout",
        "validation-timeout",
        "min-nodes",
        "min-train-replies",
        "report-prevalences",
        "client-threads",
        # simulation stand-ins for where sites keep their files and what they release
        "sim-state-root",
        "sim-cache-root",
        "sim-ledger-root",
        "sim-min-cell-count",
    }
)
#: FedOpt-family attributes holding server-side optimiser state (name → prefix in the npz)
_STRATEGY_STATE = ("current_arrays", "m_t", "v_t")


class ResumeError(ValueError):
    """The run folder holds a different run; the message names the folder and the fix."""


@dataclass
class ResumePoint:
    """The state after the last completed round of an interrupted run."""

    last_round: int
    arrays: ArrayRecord
    strategy_state: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)
    rounds: dict[int, dict] = field(default_factory=dict)
    #: ``pretrain``: ``last_round`` is a pretraining round and ``arrays`` the pretraining
    #: network's; ``train``: a training round (pretraining, if any, is complete)
    phase: str = "train"
    #: the pretraining rounds' history so far
    pretraining: dict[int, dict] = field(default_factory=dict)


def config_fingerprint(cfg: RunConfig) -> str:
    """A hash of the settings that shape the model (operational keys left out)."""
    values = {k: v for k, v in cfg.as_dict().items() if k not in OPERATIONAL_KEYS}
    text = json.dumps(values, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def inner_strategy(strategy: Strategy) -> object:
    """The aggregating strategy inside Flower's DP wrappers (``.strategy``)."""
    seen = 0
    while hasattr(strategy, "strategy") and seen < 4:
        strategy = strategy.strategy  # type: ignore[attr-defined]
        seen += 1
    return strategy


def strategy_state(strategy: Strategy) -> dict[str, dict[str, np.ndarray]]:
    """The strategy's server-side optimiser state (empty for FedAvg / FedProx)."""
    inner = inner_strategy(strategy)
    out: dict[str, dict[str, np.ndarray]] = {}
    for attr in _STRATEGY_STATE:
        value = getattr(inner, attr, None)
        if value:
            out[attr] = {k: np.asarray(v) for k, v in value.items()}
    return out


def restore_strategy(strategy: Strategy, state: dict[str, dict[str, np.ndarray]]) -> None:
    """Put saved optimiser state back into ``strategy`` (the inverse of :func:`strategy_state`)."""
    inner = inner_strategy(strategy)
    for attr, value in state.items():
        if attr in _STRATEGY_STATE and hasattr(inner, attr):
            setattr(inner, attr, {k: np.array(v) for k, v in value.items()})


def _atomic_bytes(path: Path, write: Callable[[Path], None]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    write(tmp)
    os.replace(tmp, path)


def checkpoint_path(out_dir: Path, server_round: int, phase: str = "train") -> Path:
    """Where the global weights after ``server_round`` of ``phase`` are kept."""
    if phase not in PHASES:
        raise ValueError(f"phase must be one of {PHASES}, got {phase!r}")
    stem = "pretrain" if phase == "pretrain" else "round"
    return out_dir / "checkpoints" / f"{stem}-{server_round:03d}.npz"


def save_resume_point(
    out_dir: Path,
    cfg: RunConfig,
    server_round: int,
    strategy: Strategy | None,
    history: RunHistory,
    phase: str = "train",
) -> None:
    """Persist what a restarted coordinator needs after ``server_round`` of ``phase``
    completed (``strategy``: ``None`` in pretraining, which keeps no optimiser state).

    The round's weights must already be in :func:`checkpoint_path` of the round and phase.
    """
    state = strategy_state(strategy) if strategy is not None else {}
    strategy_file = None
    if state:
        strategy_file = out_dir / "checkpoints" / f"strategy-{server_round:03d}.npz"
        flat = {f"{attr}/{k}": v for attr, d in state.items() for k, v in d.items()}

        def write(tmp: Path) -> None:
            with open(tmp, "wb") as f:
                np.savez(f, **flat)

        _atomic_bytes(strategy_file, write)
    doc = {
        "version": STATE_VERSION,
        "fingerprint": config_fingerprint(cfg),
        "phase": phase,
        "last_round": server_round,
        "num_server_rounds": cfg.num_server_rounds,
        "checkpoint": checkpoint_path(out_dir, server_round, phase).name,
        "strategy_state": strategy_file.name if strategy_file else None,
        "rounds": (
            []
            if phase == "pretrain"
            else [history.rounds[r] for r in sorted(history.rounds) if r <= server_round]
        ),
        "pretraining": [
            history.pretraining[r]
            for r in sorted(history.pretraining)
            if phase == "train" or r <= server_round
        ],
        "saved": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    text = json.dumps(doc, indent=1, default=_json_default)
    _atomic_bytes(out_dir / STATE_FILE, lambda tmp: tmp.write_text(text))
    # older optimiser states are no longer needed
    for old in (out_dir / "checkpoints").glob("strategy-*.npz"):
        if strategy_file is None or old.name != strategy_file.name:
            old.unlink(missing_ok=True)


def _json_default(o: object) -> object:
    if isinstance(o, np.integer):
        return int(o)
    if isinstance(o, np.floating):
        return float(o)
    raise TypeError(type(o).__name__)


def load_resume_point(
    out_dir: Path,
    cfg: RunConfig,
    expected_arrays: Mapping[str, tuple[tuple[int, ...], str]] | None = None,
    *,
    pretrain_arrays: Mapping[str, tuple[tuple[int, ...], str]] | None = None,
) -> ResumePoint | None:
    """The state after the last completed round in ``out_dir``, or ``None`` for a fresh run.

    ``expected_arrays`` (name → (shape, dtype) of the model this coordinator builds): the
    checkpoint must hold exactly these, else it was written by another model (e.g. an older
    fedmi whose regional model read other regions) and cannot be continued.
    ``pretrain_arrays``: the same for a checkpoint of phase ``pretrain`` (the pretraining
    network's federated weights).

    Raises
    ------
    ResumeError
        When ``out_dir`` holds a run with other settings or another model's weights, or its
        state is unreadable.
    """
    path = out_dir / STATE_FILE
    if not path.is_file():
        return None
    try:
        doc = json.loads(path.read_text())
        last = int(doc["last_round"])
        fingerprint = str(doc["fingerprint"])
        phase = str(doc.get("phase", "train"))
        if phase not in PHASES:
            raise ValueError(phase)
    except (OSError, ValueError, KeyError, TypeError):
        raise ResumeError(
            f"{path} is unreadable: move the run folder aside or choose another out-dir"
        ) from None
    if fingerprint != config_fingerprint(cfg):
        raise ResumeError(
            f"out-dir {out_dir} holds a run with other settings: use a new out-dir, or the same "
            "run config to resume it"
        )
    ckpt = out_dir / "checkpoints" / str(doc.get("checkpoint") or "")
    if not ckpt.is_file():
        raise ResumeError(f"{ckpt} is missing: move the run folder aside to start afresh")
    with np.load(ckpt) as data:
        arrays = array_record({k: data[k] for k in data.files})
    if phase == "pretrain":
        expected_arrays = pretrain_arrays
    if expected_arrays is not None:
        found = {k: (tuple(v.shape), str(v.dtype)) for k, v in arrays.items()}
        if found != dict(expected_arrays):
            differ = sorted(
                k
                for k in set(found) | set(expected_arrays)
                if found.get(k) != expected_arrays.get(k)
            )
            raise ResumeError(
                f"{ckpt} holds weights of another model ({', '.join(differ[:3])} differ, e.g. "
                "written by another fedmi version): use a new out-dir to start afresh"
            )
    state: dict[str, dict[str, np.ndarray]] = {}
    if doc.get("strategy_state"):
        spath = out_dir / "checkpoints" / str(doc["strategy_state"])
        if not spath.is_file():
            raise ResumeError(f"{spath} is missing: move the run folder aside to start afresh")
        with np.load(spath) as data:
            for key in data.files:
                attr, _, name = key.partition("/")
                state.setdefault(attr, {})[name] = data[key]
    rounds = {int(e["round"]): e for e in doc.get("rounds", [])}
    pretraining = {int(e["round"]): e for e in doc.get("pretraining", [])}
    return ResumePoint(
        last_round=last,
        arrays=arrays,
        strategy_state=state,
        rounds=rounds,
        phase=phase,
        pretraining=pretraining,
    )
