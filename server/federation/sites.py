"""Who is in the run: wait for the sites, ask each who it is, keep the checked answers.

The coordinator sends every connected node a ``query`` (:class:`~fedmi.shared.instructions.
QueryInstruction`); each reply is checked against the contract (:mod:`fedmi.server.ingress`)
and recorded as a :class:`~fedmi.server.history.SiteInfo`: pseudonym, role, status and
labelled-scan counts, and the released scan counts per tracer and scanner.
"""

from __future__ import annotations

import logging
import time

from flwr.app import Message, RecordDict
from flwr.serverapp import Grid

from fedmi.server.federation.identity import SiteIdentities
from fedmi.server.history import RunHistory, SiteInfo
from fedmi.server.ingress import check_inbound
from fedmi.shared import contract
from fedmi.shared.instructions import QueryInstruction
from fedmi.shared.run_config import RunConfig

log = logging.getLogger(__name__)


def wait_for_nodes(grid: Grid, minimum: int, timeout: float) -> list[int]:
    """Node ids once at least ``minimum`` are connected (or whatever is there at the timeout)."""
    deadline = time.monotonic() + timeout
    while True:
        nodes = sorted(grid.get_node_ids())
        if len(nodes) >= minimum or time.monotonic() > deadline:
            return nodes
        time.sleep(1.0)


def query_sites(
    grid: Grid,
    nodes: list[int],
    cfg: RunConfig,
    history: RunHistory,
    identities: SiteIdentities | None = None,
) -> None:
    """Ask every node who it is; record the checked answers in ``history.sites``.

    A node's claimed site id must agree with ``identities`` (the coordinator's registry,
    or first-claim binding without one: :mod:`fedmi.server.federation.identity`); a false
    claim is refused, logged and listed in ``history.identity_refusals`` (the report).
    """
    identities = identities if identities is not None else SiteIdentities.from_environment()
    # A site may still be (re)connecting — e.g. after a coordinator restart SuperNodes come
    # back with a back-off — so ask again those that gave no answer, until node-wait ends.
    query = QueryInstruction.from_run_config(cfg)
    pending = list(nodes)
    deadline = time.monotonic() + max(cfg.round_timeout, cfg.node_wait)
    replies: list[Message] = []
    while pending:
        timeout = max(1.0, min(cfg.round_timeout, deadline - time.monotonic()))
        msgs = [
            Message(
                content=RecordDict({contract.CONFIG: query.to_record()}),
                dst_node_id=n,
                message_type=contract.QUERY,
            )
            for n in pending
        ]
        answered = [m for m in grid.send_and_receive(msgs, timeout=timeout) if not m.has_error()]
        replies.extend(answered)
        got = {int(m.metadata.src_node_id) for m in answered}
        pending = [n for n in pending if n not in got]
        if not pending or time.monotonic() >= deadline:
            break
        log.info("%d site(s) have not answered yet; asking again", len(pending))
        time.sleep(2.0)
    for msg in replies:
        verdict = check_inbound(contract.QUERY, msg, None, cfg.max_examples)
        if verdict.problems:
            log.warning(
                "site %s: query reply refused: %s", verdict.site_id, "; ".join(verdict.problems)
            )
            continue
        site = msg.content[contract.SITE]
        m = msg.content[contract.METRICS]
        site_id = identities.bind(verdict.node_id, str(site.get("site-id")))
        if site_id is None:
            refusal = identities.refusals[-1]
            log.warning(
                "node %s claims to be site %s: refused (%s)",
                verdict.node_id,
                refusal["claimed"],
                refusal["reason"],
            )
            history.identity_refusals.append(refusal)
            continue
        history.sites[verdict.node_id] = SiteInfo(
            node_id=verdict.node_id,
            site_id=site_id,
            role=str(site.get("role")),
            status=verdict.status,
            num_examples=int(m.get("num-examples", 0)),
            num_train=int(m.get("num-train", 0)),
            num_test=int(m.get("num-test", 0)),
            num_positive=int(m.get("num-positive", 0)),
            min_cell_count=int(m["min-cell-count"]) if "min-cell-count" in m else None,
            data_counts=inventory_counts(msg.content.get(contract.INVENTORY)),
        )
        history.record_release(contract.QUERY, verdict.node_id, verdict.status, dict(m))
    for info in sorted(history.sites.values(), key=lambda s: s.site_id):
        log.info(
            "site %s: role %s, status %s, %d labelled scans (%d train / %d test)",
            info.site_id,
            info.role,
            info.status,
            info.num_examples,
            info.num_train,
            info.num_test,
        )


def inventory_counts(record: object) -> dict[str, dict[str, int]] | None:
    """The checked ``inventory`` record of a query reply as field → {category: scans}."""
    if record is None:
        return None
    rec = dict(record)  # type: ignore[call-overload]
    return {
        f: dict(zip(rec.get(f"{f}-names", []), rec.get(f"{f}-counts", []), strict=True))
        for f in contract.INVENTORY_FIELDS
    }
