"""Resumable training rounds: a coordinator that is restarted continues where it stopped.

Flower 1.42 has no checkpointing: ``Strategy.start`` always counts rounds 1..N from the
arrays it is given. fedmi therefore runs its own round loop (:func:`run_rounds`, the same
sequence of ``configure_train`` → ``send_and_receive`` → ``aggregate_train`` →
``configure_evaluate`` → ``send_and_receive`` → ``aggregate_evaluate`` as ``Strategy.start``,
with Flower's strategies doing every aggregation) that can start at any round, and after
every completed round it persists in the run folder

* ``checkpoints/round-NNN.npz``: the global weights (written by the ServerApp's checkpoint),
* ``checkpoints/strategy-NNN.npz``: the strategy's server-side state (FedAdam's
  ``current_arrays``, first and second moments ``m_t`` / ``v_t``), when it has any,
* ``resume.json``: the last completed round, a fingerprint of the run settings that shape
  the model, and the per-round history so far.

When the same ``out-dir`` is given again with the same settings, :func:`load_resume_point`
returns the state after the last completed round and the run continues with the next round
(its true number: FedAdam's bias correction depends on it). A folder holding a different
run is refused rather than overwritten.

The loop also guards against dropouts: every instruction carries its round as ``group_id``,
only replies to the instructions of the current round are used (Flower's ``send_and_receive``
pulls replies by message id, so a late reply to an earlier round is never returned; the
check here makes that explicit), each site counts once, and the sites that were sent an
instruction but did not answer before ``round-timeout`` or answered with an error are
listed per round under ``missing``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Message
from flwr.serverapp import Grid
from flwr.serverapp.strategy import Strategy

from fedmi.server.history import RunHistory
from fedmi.shared.contract import array_record
from fedmi.shared.run_config import RunConfig

log = logging.getLogger(__name__)

STATE_FILE = "resume.json"
STATE_VERSION = 1
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


def config_fingerprint(cfg: RunConfig) -> str:
    """A hash of the settings that shape the model (operational keys left out)."""
    values = {k: v for k, v in cfg.as_dict().items() if k not in OPERATIONAL_KEYS}
    text = json.dumps(values, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _inner(strategy: Strategy) -> object:
    """The aggregating strategy inside Flower's DP wrappers (``.strategy``)."""
    seen = 0
    while hasattr(strategy, "strategy") and seen < 4:
        strategy = strategy.strategy  # type: ignore[attr-defined]
        seen += 1
    return strategy


def strategy_state(strategy: Strategy) -> dict[str, dict[str, np.ndarray]]:
    """The strategy's server-side optimiser state (empty for FedAvg / FedProx)."""
    inner = _inner(strategy)
    out: dict[str, dict[str, np.ndarray]] = {}
    for attr in _STRATEGY_STATE:
        value = getattr(inner, attr, None)
        if value:
            out[attr] = {k: np.asarray(v) for k, v in value.items()}
    return out


def restore_strategy(strategy: Strategy, state: dict[str, dict[str, np.ndarray]]) -> None:
    """Put saved optimiser state back into ``strategy`` (the inverse of :func:`strategy_state`)."""
    inner = _inner(strategy)
    for attr, value in state.items():
        if attr in _STRATEGY_STATE and hasattr(inner, attr):
            setattr(inner, attr, {k: np.array(v) for k, v in value.items()})


def _atomic_bytes(path: Path, write: Callable[[Path], None]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    write(tmp)
    os.replace(tmp, path)


def checkpoint_path(out_dir: Path, server_round: int) -> Path:
    return out_dir / "checkpoints" / f"round-{server_round:03d}.npz"


def save_resume_point(
    out_dir: Path,
    cfg: RunConfig,
    server_round: int,
    strategy: Strategy,
    history: RunHistory,
) -> None:
    """Persist what a restarted coordinator needs after ``server_round`` completed.

    The round's weights must already be in ``checkpoints/round-NNN.npz``.
    """
    state = strategy_state(strategy)
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
        "last_round": server_round,
        "num_server_rounds": cfg.num_server_rounds,
        "checkpoint": checkpoint_path(out_dir, server_round).name,
        "strategy_state": strategy_file.name if strategy_file else None,
        "rounds": [history.rounds[r] for r in sorted(history.rounds) if r <= server_round],
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
) -> ResumePoint | None:
    """The state after the last completed round in ``out_dir``, or ``None`` for a fresh run.

    ``expected_arrays`` (name → (shape, dtype) of the model this coordinator builds): the
    checkpoint must hold exactly these, else it was written by another model (e.g. an older
    fedmi whose regional model read other regions) and cannot be continued.

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
    return ResumePoint(last_round=last, arrays=arrays, strategy_state=state, rounds=rounds)


def _send(
    grid: Grid,
    messages: Iterable[Message],
    server_round: int,
    stage: str,
    timeout: float,
    history: RunHistory,
) -> list[Message]:
    """Send one round's instructions; keep only this round's replies, one per site.

    Sites that were sent an instruction but gave no reply before ``timeout``, or replied
    with a Flower error, are recorded in ``history.rounds[r]["missing"]``.
    """
    sent = list(messages)
    if not sent:
        return []
    for msg in sent:
        msg.metadata.group_id = str(server_round)
    replies = list(grid.send_and_receive(sent, timeout=timeout))
    # Flower's grid gives each pushed message its id; a grid that does not (tests) is
    # matched by the replying node instead
    ids = {m.metadata.message_id: m.metadata.dst_node_id for m in sent if m.metadata.message_id}
    targets = {m.metadata.dst_node_id for m in sent}
    kept: list[Message] = []
    answered: set[int] = set()
    for reply in replies:
        if ids:
            node = ids.get(reply.metadata.reply_to_message_id)
        else:
            node = reply.metadata.src_node_id if reply.metadata.src_node_id in targets else None
        if node is None or node in answered:
            log.warning(
                "round %d: ignored a %s reply that belongs to no open request", server_round, stage
            )
            continue
        answered.add(node)
        if reply.has_error():
            _missing(history, server_round, node, stage, f"error: {reply.error.reason[:120]}")
            # kept: the strategy records the failed reply like any other
        kept.append(reply)
    for node in sorted(targets):
        if node not in answered:
            _missing(history, server_round, node, stage, "no reply before the round timeout")
    return kept


def _missing(history: RunHistory, server_round: int, node: int, stage: str, reason: str) -> None:
    site = history.site_name(node)
    log.warning("round %d: %s missing from %s (%s)", server_round, site, stage, reason)
    entry = history._round(server_round)
    entry.setdefault("missing", []).append({"site_id": site, "stage": stage, "reason": reason})


def _error_statuses(history: RunHistory, server_round: int) -> None:
    """Sites whose train reply was a declared ``error`` status are missing too."""
    entry = history._round(server_round)
    listed = {(m["site_id"], m["stage"]) for m in entry.get("missing", [])}
    for site, rec in entry["train"].items():
        if rec.get("status") == "error" and (site, "train") not in listed:
            entry.setdefault("missing", []).append(
                {"site_id": site, "stage": "train", "reason": "the site reported an error"}
            )


def run_rounds(
    strategy: Strategy,
    grid: Grid,
    *,
    arrays: ArrayRecord,
    first_round: int,
    num_rounds: int,
    timeout: float,
    train_config: ConfigRecord,
    evaluate_config: ConfigRecord,
    history: RunHistory,
    on_round: Callable[[int, ArrayRecord], object] | None = None,
    fuse_evaluation: bool = True,
) -> ArrayRecord:
    """Rounds ``first_round..num_rounds`` of ``strategy``; returns the final global arrays.

    ``on_round(r, arrays)`` runs before the first round when ``first_round == 1`` (with
    ``r = 0``, as ``Strategy.start``'s ``evaluate_fn``) and after every round's training.

    With ``fuse_evaluation`` (the default) each site evaluates the global model of round
    ``r`` on its test split at the start of round ``r + 1``, before training it, and sends
    that evaluation with its train reply (``evaluate-received``): one message per site and
    round instead of two. Only the last round's model is evaluated by a separate
    ``evaluate`` message. The numbers are those of the two-message sequence (same weights,
    same split, local layers as they were after round ``r``); they are recorded under round
    ``r`` when round ``r + 1``'s replies arrive.
    """
    fused = fuse_evaluation and hasattr(_inner(strategy), "aggregate_received_evaluations")
    if first_round == 1 and on_round is not None:
        on_round(0, arrays)
    for r in range(first_round, num_rounds + 1):
        log.info("[ROUND %d/%d]", r, num_rounds)
        history._round(r).setdefault("missing", [])
        config = train_config
        if fused and r > 1:  # a resumed run re-evaluates the last checkpoint: harmless
            config = ConfigRecord({**dict(train_config), "evaluate-received": True})
        msgs = strategy.configure_train(r, arrays, config, grid)
        replies = _send(grid, msgs, r, "train", timeout, history)
        if fused and r > 1:
            _inner(strategy).aggregate_received_evaluations(r - 1, replies)  # type: ignore[attr-defined]
        new_arrays, _ = strategy.aggregate_train(r, replies)
        _error_statuses(history, r)
        if new_arrays is not None:
            arrays = new_arrays
        if not fused or r == num_rounds:
            msgs = strategy.configure_evaluate(r, arrays, evaluate_config, grid)
            replies = _send(grid, msgs, r, "evaluate", timeout, history)
            strategy.aggregate_evaluate(r, replies)
        if on_round is not None:
            on_round(r, arrays)
    return arrays


def progress_logging() -> None:
    """Send fedmi's INFO lines (round progress, dropouts) to stderr when nothing else does.

    A ServerApp started by a SuperLink has no logging configured, so ``flwr run --stream``
    would show only Flower's own lines; simulations and tests configure logging themselves
    and are left alone.
    """
    root = logging.getLogger()
    fedmi = logging.getLogger("fedmi.server")
    if root.handlers or fedmi.handlers:
        return
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(levelname)s fedmi: %(message)s"))
    fedmi.addHandler(handler)
    fedmi.setLevel(logging.INFO)
