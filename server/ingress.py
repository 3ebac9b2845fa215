"""The server's inbound checks: every reply is checked before it is used.

A reply that fails is dropped with a logged reason; the round goes on with the rest.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from flwr.app import Message, RecordDict

from fedmi.shared import contract


@dataclass(frozen=True)
class Verdict:
    """Outcome of checking one reply."""

    node_id: int
    site_id: str
    status: str
    problems: tuple[str, ...]

    @property
    def accepted(self) -> bool:
        return not self.problems and self.status == "ok"


def site_of(msg: Message) -> tuple[str, str]:
    """``(site-id, status)`` declared by a reply, or placeholders when absent."""
    if msg.has_error():
        return f"node-{msg.metadata.src_node_id}", "error"
    site = msg.content.get(contract.SITE)
    if site is None:
        return f"node-{msg.metadata.src_node_id}", "ok"
    return str(site.get("site-id", f"node-{msg.metadata.src_node_id}")), str(
        site.get("status", "ok")
    )


def check_inbound(
    message_type: str,
    msg: Message,
    expected_arrays: Mapping[str, tuple[tuple[int, ...], str]] | None = None,
    max_examples: int = contract.MAX_EXAMPLES,
) -> Verdict:
    """Check one reply: declared records and keys, shapes, dtypes, finiteness, plausible counts."""
    node = int(msg.metadata.src_node_id)
    site_id, status = site_of(msg)
    if msg.has_error():
        return Verdict(node, site_id, "error", (f"transport error: {msg.error.reason}",))
    return check_content(message_type, node, msg.content, expected_arrays, max_examples)


def check_content(
    message_type: str,
    node: int,
    content: RecordDict,
    expected_arrays: Mapping[str, tuple[tuple[int, ...], str]] | None = None,
    max_examples: int = contract.MAX_EXAMPLES,
) -> Verdict:
    """:func:`check_inbound` for a reply's content from ``node`` (no transport error)."""
    site = content.get(contract.SITE)
    site_id = str(site.get("site-id", f"node-{node}")) if site is not None else f"node-{node}"
    status = str(site.get("status", "ok")) if site is not None else "ok"
    problems = list(contract.check_reply(message_type, content, expected_arrays))
    metrics = content.get(contract.METRICS)
    if metrics is not None and "num-examples" in metrics:
        n = metrics["num-examples"]
        if isinstance(n, (int, float)) and not isinstance(n, bool):
            if n > max_examples:
                problems.append(f"num-examples {n} exceeds the plausible maximum {max_examples}")
            if status == "ok" and message_type in (contract.TRAIN, contract.PRETRAIN) and n < 1:
                problems.append(f"num-examples must be at least 1 for a {message_type} reply")
    return Verdict(node, site_id, status, tuple(problems))
