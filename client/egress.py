"""The site's outbound check: nothing leaves unless the wire contract declares it."""

from __future__ import annotations

import logging
from collections.abc import Mapping

from flwr.app import RecordDict

from fedmi.shared import contract

log = logging.getLogger(__name__)


class EgressViolation(RuntimeError):
    """An outbound reply carried something the contract does not declare."""


def check_outbound(
    message_type: str,
    content: RecordDict,
    expected_arrays: Mapping[str, tuple[tuple[int, ...], str]] | None = None,
) -> RecordDict:
    """Return ``content`` unchanged if it conforms to :mod:`fedmi.shared.contract`, else raise.

    Raises
    ------
    EgressViolation
        Listing every undeclared record, key or malformed value. The reply must then
        not be sent.
    """
    problems = contract.check_reply(message_type, content, expected_arrays)
    if problems:
        log.error(
            "outbound %s reply refused by the egress check: %s", message_type, "; ".join(problems)
        )
        raise EgressViolation("; ".join(problems))
    return content
