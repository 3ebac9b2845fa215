"""One evaluation-free round that asks the training sites for aggregate statistics.

Used after training by harmonization (embedding moments, ``query.features``) and by OOD
detection (per-class feature sums, ``query.ood``): the final weights go out, each reply is
checked against the contract, and only accepted replies from the sites asked come back.
"""

from __future__ import annotations

import logging

from flwr.app import ArrayRecord, Message, RecordDict
from flwr.serverapp import Grid

from fedmi.server.history import RunHistory
from fedmi.server.ingress import check_inbound
from fedmi.shared import contract
from fedmi.shared.instructions import Instruction
from fedmi.shared.run_config import RunConfig

log = logging.getLogger(__name__)


def collect_from_training_sites(
    grid: Grid,
    arrays: ArrayRecord,
    instruction: Instruction,
    cfg: RunConfig,
    history: RunHistory,
) -> list[tuple[int, dict]]:
    """``(node_id, metrics)`` of every accepted reply of the training sites that are up.

    A failing round (transport error) is logged and gives an empty list: the run goes on
    without what the round would have added.
    """
    message_type = instruction.message_type
    targets = [n for n, s in history.sites.items() if s.role == "train" and s.status == "ok"]
    msgs = [
        Message(
            content=RecordDict({contract.ARRAYS: arrays, contract.CONFIG: instruction.to_record()}),
            dst_node_id=n,
            message_type=message_type,
        )
        for n in targets
    ]
    try:
        replies = list(grid.send_and_receive(msgs, timeout=cfg.validation_timeout))
    except Exception as exc:  # noqa: BLE001 - the run goes on without this round
        log.error("%s round failed: %s: %s", message_type, type(exc).__name__, exc)
        return []
    out = []
    for msg in replies:
        verdict = check_inbound(message_type, msg, None, cfg.max_examples)
        if verdict.node_id in targets and not verdict.problems:
            metrics = msg.content.get(contract.METRICS)
            history.record_release(
                message_type, verdict.node_id, verdict.status, dict(metrics or {})
            )
        if verdict.accepted and verdict.node_id in targets:
            out.append((verdict.node_id, dict(msg.content[contract.METRICS])))
    return out
