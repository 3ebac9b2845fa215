"""Waiting for the sites' replies without letting the poll interval dominate a round.

Flower's grids wait for replies by polling at a fixed interval: the simulation's
``InMemoryGrid`` every 0.1 s, the deployment ``HttpGrid`` every 3 s. A round trip therefore
costs up to one interval on top of the sites' work, twice per round (train, evaluate) and
once per validation stage. With rounds of about a second on a small federation that is a
quarter of the wall time; in a deployment with short rounds it is most of it.

:class:`PromptGrid` wraps any :class:`flwr.serverapp.Grid` and replaces only
``send_and_receive``: it pushes through the wrapped grid, then pulls with an interval that
grows with the time already waited (``fraction`` of it, between ``shortest`` and
``longest``). A reply is thus noticed within about 2 % of the wait (5 ms for a fast round),
while a long deployment round still polls the SuperLink at most once a second. Everything
else (node ids, message creation, the run) is the wrapped grid's.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable

from flwr.app import Message
from flwr.serverapp import Grid

log = logging.getLogger(__name__)

#: first poll interval (s)
SHORTEST = 0.005
#: the poll interval as a fraction of the time already waited
FRACTION = 0.02
#: the interval never grows beyond this (s): at most one pull a second to a SuperLink
LONGEST = 1.0


def poll_interval(
    waited: float, shortest: float = SHORTEST, fraction: float = FRACTION, longest: float = LONGEST
) -> float:
    """Seconds to sleep before the next pull after ``waited`` seconds without every reply."""
    return min(longest, max(shortest, fraction * waited))


class PromptGrid(Grid):
    """A grid whose ``send_and_receive`` notices replies promptly (see module docstring).

    Parameters
    ----------
    grid
        The grid Flower gave the ServerApp (``InMemoryGrid`` in simulation, ``HttpGrid``
        behind a SuperLink); every call but ``send_and_receive`` goes to it.
    shortest, fraction, longest
        The adaptive poll interval, see :func:`poll_interval`.
    """

    def __init__(
        self,
        grid: Grid,
        *,
        shortest: float = SHORTEST,
        fraction: float = FRACTION,
        longest: float = LONGEST,
    ) -> None:
        if not 0 < shortest <= longest:
            raise ValueError("poll intervals must satisfy 0 < shortest <= longest")
        self.grid = grid
        self.shortest, self.fraction, self.longest = shortest, fraction, longest
        self.pulls = 0

    # -- delegated ---------------------------------------------------------------------
    def set_run(self, run_id):  # type: ignore[no-untyped-def, override]
        return self.grid.set_run(run_id)

    @property
    def run(self):  # type: ignore[no-untyped-def, override]
        return self.grid.run

    def create_message(self, *args, **kwargs):  # type: ignore[no-untyped-def, override]
        return self.grid.create_message(*args, **kwargs)

    def get_node_ids(self) -> Iterable[int]:
        return self.grid.get_node_ids()

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        return self.grid.push_messages(messages)

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        self.pulls += 1
        return self.grid.pull_messages(message_ids)

    def __getattr__(self, name: str) -> object:
        # anything else a grid offers (``get_nodes``, ``close``): the wrapped grid's
        return getattr(self.__dict__["grid"], name)

    # -- the one change --------------------------------------------------------------
    def send_and_receive(
        self, messages: Iterable[Message], *, timeout: float | None = None
    ) -> Iterable[Message]:
        """Push ``messages``; return the replies that arrive before ``timeout`` seconds.

        ``timeout=None`` waits until every message has a reply, as Flower's grids do.
        """
        began = time.monotonic()
        pending = set(self.push_messages(messages))
        start = time.monotonic()
        sent = len(pending)
        replies: list[Message] = []
        while pending:
            got = list(self.pull_messages(pending))
            replies.extend(got)
            pending.difference_update(m.metadata.reply_to_message_id for m in got)
            if not pending:
                break
            waited = time.monotonic() - start
            if timeout is not None and waited >= timeout:
                break
            pause = poll_interval(waited, self.shortest, self.fraction, self.longest)
            if timeout is not None:
                pause = min(pause, max(0.0, timeout - waited))
            time.sleep(pause)
        log.debug(
            "%d message(s) pushed in %.2f s; %d reply(ies) after %.2f s",
            sent,
            start - began,
            len(replies),
            time.monotonic() - start,
        )
        return replies
