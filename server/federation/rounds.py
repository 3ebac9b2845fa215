"""The round loop of a run: resumable, robust to dropouts, one message per site and round.

:func:`run_rounds` is the sequence of ``Strategy.start`` — ``configure_train`` →
``send_and_receive`` → ``aggregate_train`` → ``configure_evaluate`` → ``send_and_receive`` →
``aggregate_evaluate`` — with Flower's strategies doing every aggregation, but it can start
at any round (a restarted coordinator continues after its last resume point,
:mod:`fedmi.server.federation.resume`).

It also guards against dropouts: every instruction carries its round as ``group_id``, only
replies to the instructions of the current round are used (Flower's ``send_and_receive``
pulls replies by message id, so a late reply to an earlier round is never returned; the
check here makes that explicit), each site counts once, and the sites that were sent an
instruction but did not answer before ``round-timeout`` or answered with an error are
listed per round under ``missing``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable

from flwr.app import ArrayRecord, Message
from flwr.serverapp import Grid
from flwr.serverapp.strategy import Strategy

from fedmi.server.federation.resume import inner_strategy
from fedmi.server.history import RunHistory
from fedmi.shared.instructions import EvaluateInstruction, TrainInstruction, replace
from fedmi.shared.logs import formatter as log_formatter

log = logging.getLogger(__name__)


def send_round(
    grid: Grid,
    messages: Iterable[Message],
    server_round: int,
    stage: str,
    timeout: float,
    history: RunHistory,
    missing: list[dict] | None = None,
) -> list[Message]:
    """Send one round's instructions; keep only this round's replies, one per site.

    Sites that were sent an instruction but gave no reply before ``timeout``, or replied
    with a Flower error, are recorded in ``missing`` (default:
    ``history.rounds[r]["missing"]``).
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
            reason = f"error: {reply.error.reason[:120]}"
            _missing(history, server_round, node, stage, reason, missing)
            # kept: the strategy records the failed reply like any other
        kept.append(reply)
    for node in sorted(targets):
        if node not in answered:
            reason = "no reply before the round timeout"
            _missing(history, server_round, node, stage, reason, missing)
    return kept


def _missing(
    history: RunHistory,
    server_round: int,
    node: int,
    stage: str,
    reason: str,
    missing: list[dict] | None = None,
) -> None:
    site = history.site_name(node)
    log.warning("round %d: %s missing from %s (%s)", server_round, site, stage, reason)
    if missing is None:
        missing = history._round(server_round).setdefault("missing", [])
    missing.append({"site_id": site, "stage": stage, "reason": reason})


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
    train: TrainInstruction,
    evaluate: EvaluateInstruction,
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
    fused = fuse_evaluation and hasattr(inner_strategy(strategy), "aggregate_received_evaluations")
    if first_round == 1 and on_round is not None:
        on_round(0, arrays)
    for r in range(first_round, num_rounds + 1):
        log.info("[ROUND %d/%d]", r, num_rounds)
        history._round(r).setdefault("missing", [])
        # a resumed run re-evaluates the last checkpoint: harmless
        ins = replace(train, evaluate_received=True) if fused and r > 1 else train
        msgs = strategy.configure_train(r, arrays, ins.to_record(), grid)
        replies = send_round(grid, msgs, r, "train", timeout, history)
        if fused and r > 1:
            inner_strategy(strategy).aggregate_received_evaluations(r - 1, replies)  # type: ignore[attr-defined]
        new_arrays, _ = strategy.aggregate_train(r, replies)
        _error_statuses(history, r)
        if new_arrays is not None:
            arrays = new_arrays
        if not fused or r == num_rounds:
            msgs = strategy.configure_evaluate(r, arrays, evaluate.to_record(), grid)
            replies = send_round(grid, msgs, r, "evaluate", timeout, history)
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
    handler.setFormatter(log_formatter())
    fedmi.addHandler(handler)
    fedmi.setLevel(logging.INFO)
