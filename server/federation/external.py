"""The evaluation-only round of the final model at every site (federated external validation).

Holdout sites evaluate on all their scans, training sites on their test split
(:class:`~fedmi.shared.instructions.ExternalInstruction`, with the pooled embedding moments
for label-free adaptation and the OOD description when the run collected them).
"""

from __future__ import annotations

import logging

from flwr.app import ArrayRecord, Message, RecordDict
from flwr.serverapp import Grid

from fedmi.server.history import RunHistory
from fedmi.server.ingress import check_inbound
from fedmi.shared import contract
from fedmi.shared.instructions import ExternalInstruction
from fedmi.shared.run_config import RunConfig

log = logging.getLogger(__name__)


def external_validation(
    grid: Grid,
    arrays: ArrayRecord,
    cfg: RunConfig,
    history: RunHistory,
    instruction: ExternalInstruction,
) -> None:
    """Evaluation-only round of the final model at every site that is up.

    Holdout sites evaluate on all their scans, training sites on their test split. A site
    that does not answer within ``validation-timeout`` seconds, answers with an error or
    sends something undeclared is listed in ``history.missing_final``; the report is
    written regardless. A site whose cases fall under its small-cell rule is recorded
    with status ``suppressed`` (counts only).
    """
    targets = [n for n, s in history.sites.items() if s.status == "ok" and s.num_examples > 0]
    msgs = [
        Message(
            content=RecordDict(
                {
                    contract.ARRAYS: arrays,
                    contract.CONFIG: instruction.to_record(),
                }
            ),
            dst_node_id=n,
            message_type=contract.EXTERNAL,
        )
        for n in targets
    ]
    answered: set[int] = set()
    try:
        replies = list(grid.send_and_receive(msgs, timeout=cfg.validation_timeout))
    except Exception as exc:  # the transport failed: every site is reported missing below
        log.error("external validation round failed: %s: %s", type(exc).__name__, exc)
        replies = []
    for msg in replies:
        node = _record_reply(msg, history, answered, cfg.max_examples)
        if node is not None:
            answered.add(node)
    for n in targets:
        if n not in answered:
            history.missing_final.append(
                {
                    "site_id": history.sites[n].site_id,
                    "role": history.sites[n].role,
                    "reason": "no reply before the timeout",
                }
            )


def _record_reply(
    msg: Message, history: RunHistory, answered: set[int], max_examples: int
) -> int | None:
    """Check one ``evaluate.external`` reply and record it; the replying node, if counted."""
    verdict = check_inbound(contract.EXTERNAL, msg, None, max_examples)
    if verdict.node_id not in history.sites or verdict.node_id in answered:
        log.warning("ignored an unexpected external-validation reply")
        return None
    if not verdict.problems:
        metrics = msg.content.get(contract.METRICS)
        history.record_release(
            contract.EXTERNAL, verdict.node_id, verdict.status, dict(metrics or {})
        )
    if verdict.status == "suppressed" and not verdict.problems:
        history.record_final(verdict.node_id, dict(msg.content[contract.METRICS]))
        return verdict.node_id
    if not verdict.accepted:
        reason = "; ".join(verdict.problems) or f"status {verdict.status}"
        log.warning("external validation at %s failed: %s", verdict.site_id, reason)
        site = history.sites[verdict.node_id]
        history.missing_final.append({"site_id": site.site_id, "role": site.role, "reason": reason})
        return verdict.node_id
    history.record_final(verdict.node_id, dict(msg.content[contract.METRICS]))
    used = dict(msg.content.get(contract.SITE) or {}).get("harmonization")
    if used:  # fedbn/fedmi: which local layers the site evaluated with
        history.final[history.site_name(verdict.node_id)]["harmonization"] = str(used)
    return verdict.node_id
