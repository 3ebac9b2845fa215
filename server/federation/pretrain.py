"""Federated self-supervised pretraining before training (``pretrain-rounds`` > 0).

Each pretraining round sends the global weights of a
:class:`~fedmi.shared.pretraining.PretrainNet` (the classifier's encoder stages and a
reconstruction decoder; the harmonizer stays at the sites) with a
:class:`~fedmi.shared.instructions.PretrainInstruction` to every training site with data
and, with ``pretrain-holdouts``, to every holdout site that answered its query: a holdout
pretrains on its unlabelled archive only, never on labels. Every reply passes the ingress
check (:func:`fedmi.server.ingress.check_inbound`: declared records and metrics; names,
shapes, dtypes and finiteness of the arrays); the accepted ones are screened like training
updates (robust aggregation's weight cap and norm bound, :mod:`fedmi.server.strategy.robust`;
no count cap: nobody declared an archive size) and averaged by Flower's FedAvg, weighted by
their ``num-examples`` (capped at ``max-examples``). A round with
fewer valid updates than ``min-train-replies`` keeps the weights unchanged.

After the last pretraining round only the encoder stages move into the classifier
(:func:`fedmi.shared.pretraining.transfer_encoder`): its initial federated weights for
training. Every round is checkpointed as phase ``pretrain``
(:mod:`fedmi.server.federation.resume`), so a coordinator restarted during pretraining
continues it and reaches the same pretrained weights.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import torch
from flwr.app import ArrayRecord, Message, MetricRecord, RecordDict
from flwr.serverapp import Grid
from flwr.serverapp.strategy import FedAvg

from fedmi.server.federation.rounds import send_round
from fedmi.server.history import RunHistory
from fedmi.server.ingress import check_inbound
from fedmi.server.strategy.robust import RobustSettings, Update, screen_updates
from fedmi.shared import contract
from fedmi.shared.instructions import PretrainInstruction
from fedmi.shared.model import federated_state_dict
from fedmi.shared.pretraining import PretrainNet, transfer_encoder
from fedmi.shared.run_config import RunConfig

log = logging.getLogger(__name__)

Shapes = dict[str, tuple[tuple[int, ...], str]]


def pretrain_nodes(history: RunHistory, cfg: RunConfig, train_nodes: list[int]) -> list[int]:
    """The nodes that pretrain: ``train_nodes``, and with ``pretrain-holdouts`` every holdout
    site whose query reply was ``ok`` (they pretrain on unlabelled scans only)."""
    nodes = list(train_nodes)
    if cfg.pretrain_holdouts:
        nodes += [
            n
            for n, s in sorted(history.sites.items())
            if s.role == "holdout" and s.status == "ok" and n not in nodes
        ]
    return nodes


def initial_pretrain_arrays(classifier: torch.nn.Module) -> ArrayRecord:
    """The federated weights of a :class:`PretrainNet` around ``classifier`` (its encoder
    stages as they are and a fresh decoder, drawn from torch's global stream)."""
    return contract.array_record(federated_state_dict(PretrainNet(classifier)))


def transfer_pretrained(classifier: torch.nn.Module, pretrained: ArrayRecord) -> list[str]:
    """Copy the pretrained encoder stages into ``classifier`` (in place; decoder dropped).

    Returns
    -------
    list[str]
        The classifier keys overwritten.
    """
    state = {k: torch.from_numpy(v.numpy().copy()) for k, v in pretrained.items()}
    return transfer_encoder(classifier, state)


def aggregate_pretraining(
    server_round: int,
    replies: list[Message],
    *,
    history: RunHistory,
    expected: Shapes,
    cfg: RunConfig,
    reference: ArrayRecord,
) -> ArrayRecord | None:
    """Check every reply at ingress, record it, screen the accepted ones as training
    updates are (robust aggregation's weight cap and norm bound against ``reference``, the
    weights sent this round: :mod:`fedmi.server.strategy.robust`) and FedAvg them.

    Returns
    -------
    ArrayRecord or None
        The averaged weights; ``None`` when fewer than ``min-train-replies`` were valid.
    """
    accepted: list[Update] = []
    entry = history.pretrain_round(server_round)
    for msg in replies:
        verdict = check_inbound(contract.PRETRAIN, msg, expected, cfg.max_examples)
        metrics = None if msg.has_error() else msg.content.get(contract.METRICS)
        plain = dict(metrics) if metrics is not None else None
        history.record_pretrain(server_round, verdict.node_id, verdict.status, plain)
        if verdict.problems:
            log.warning(
                "pretraining round %d: dropped the update of %s: %s",
                server_round,
                verdict.site_id,
                "; ".join(verdict.problems),
            )
            entry["dropped"].append(
                {
                    "site_id": history.site_name(verdict.node_id),
                    "stage": "pretrain",
                    "reasons": list(verdict.problems),
                }
            )
            continue
        history.record_release(contract.PRETRAIN, verdict.node_id, verdict.status, plain)
        if verdict.status != "ok":
            log.warning(
                "pretraining round %d: %s did not pretrain (status %s)",
                server_round,
                verdict.site_id,
                verdict.status,
            )
            continue
        n = min(float(metrics["num-examples"]), float(cfg.max_examples))  # type: ignore[index]
        arrays = {k: v.numpy() for k, v in msg.content[contract.ARRAYS].items()}
        accepted.append(Update(verdict.node_id, history.site_name(verdict.node_id), arrays, n))
    if len(accepted) < cfg.min_train_replies:
        log.warning(
            "pretraining round %d: %d valid update(s), fewer than the minimum %d: the "
            "weights are kept unchanged",
            server_round,
            len(accepted),
            cfg.min_train_replies,
        )
        return None
    # robust aggregation's weight cap and norm bound, as for training updates (no count cap:
    # pretraining counts include the unlabelled archive, which no site declared)
    changes = screen_updates(
        accepted,
        {k: v.numpy() for k, v in reference.items()},
        {},
        RobustSettings.from_run_config(cfg),
    )
    for c in changes:
        log.info(
            "pretraining round %d: %s %s (%.4g → %.4g)",
            server_round,
            c.site_id,
            c.reason,
            c.before,
            c.after,
        )
    entry["screened"] = [c.as_dict(server_round) for c in changes]
    messages = [
        Message(
            content=RecordDict(
                {
                    contract.ARRAYS: contract.array_record(u.arrays),
                    contract.METRICS: MetricRecord({"num-examples": u.num_examples}),
                }
            ),
            dst_node_id=0,
            message_type=contract.PRETRAIN,
        )
        for u in accepted
    ]
    arrays, _ = FedAvg().aggregate_train(server_round, messages)
    return arrays


def run_pretraining(
    grid: Grid,
    cfg: RunConfig,
    history: RunHistory,
    nodes: list[int],
    *,
    arrays: ArrayRecord,
    first_round: int = 1,
    on_round: Callable[[int, ArrayRecord], object] | None = None,
) -> ArrayRecord:
    """Pretraining rounds ``first_round..pretrain-rounds``; the final pretrained weights.

    ``on_round(r, arrays)`` runs after every round (the checkpoint and resume point).
    """
    expected = {k: (tuple(v.shape), str(v.dtype)) for k, v in arrays.items()}
    for r in range(first_round, cfg.pretrain_rounds + 1):
        log.info("[PRETRAINING ROUND %d/%d] %d site(s)", r, cfg.pretrain_rounds, len(nodes))
        entry = history.pretrain_round(r)
        record = PretrainInstruction.from_run_config(cfg, server_round=r).to_record()
        msgs = [
            Message(
                content=RecordDict({contract.ARRAYS: arrays, contract.CONFIG: record}),
                dst_node_id=node,
                message_type=contract.PRETRAIN,
            )
            for node in nodes
        ]
        replies = send_round(
            grid, msgs, r, "pretrain", cfg.round_timeout, history, entry["missing"]
        )
        new = aggregate_pretraining(
            r, replies, history=history, expected=expected, cfg=cfg, reference=arrays
        )
        if new is not None:
            arrays = new
        if on_round is not None:
            on_round(r, arrays)
    return arrays
