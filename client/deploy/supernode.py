"""The site's SuperNode: Flower's ``flower-supernode``, asking for messages more often.

Flower 1.42's SuperNode sleeps a fixed 3 s whenever the SuperLink has no message for it
(``flwr.supernode.start_client_internal``: ``time.sleep(3)`` in its main loop). A round
sends each site at least one message and the coordinator waits for the slowest site, so
that sleep alone adds up to 3 s to every exchange of a round — most of what a deployed
round costs beyond the simulated one (benchmarks/bench_deployment.py). This launcher runs
Flower's own SuperNode entry point unchanged, with that module's ``time`` seen through
:class:`_ShortSleeps`: every sleep of the SuperNode's loop is capped at
:data:`IDLE_POLL_SECONDS`, so an idle site asks the SuperLink for work twice a second
instead of every 3 s (one small TLS request; nothing else changes: the same arguments,
authentication, retries and logs).

Run as ``python -m fedmi.client.deploy.supernode ARGS`` with ``flower-supernode``'s own
arguments (``fedmi-site join`` builds them: :func:`fedmi.client.deploy.join.supernode_command`).
"""

from __future__ import annotations

import sys
import time
from types import ModuleType

#: longest sleep of the SuperNode's loop, seconds (Flower's idle wait is 3 s)
IDLE_POLL_SECONDS = 0.5


class _ShortSleeps(ModuleType):
    """The ``time`` module with ``sleep`` capped at :data:`IDLE_POLL_SECONDS`."""

    def __init__(self) -> None:
        super().__init__("time")

    def __getattr__(self, name: str) -> object:
        return getattr(time, name)

    @staticmethod
    def sleep(seconds: float) -> None:
        time.sleep(min(float(seconds), IDLE_POLL_SECONDS))


def patch_idle_poll() -> None:
    """Cap the sleeps of Flower's SuperNode loop (module docstring).

    Raises
    ------
    RuntimeError
        When the installed Flower has no such loop module (another Flower version): the
        site then cannot join with this fedmi release rather than run unpatched unawares.
    """
    try:
        from flwr.supernode import start_client_internal as loop
    except ImportError as exc:  # pragma: no cover - pinned Flower has it
        raise RuntimeError(
            f"this Flower has no flwr.supernode.start_client_internal ({exc}): install the "
            "Flower version fedmi's pyproject names"
        ) from None
    if getattr(loop, "time", None) is not time and not isinstance(loop.time, _ShortSleeps):
        raise RuntimeError(
            "flwr.supernode.start_client_internal no longer uses the time module: install "
            "the Flower version fedmi's pyproject names"
        )
    loop.time = _ShortSleeps()


def main(argv: list[str] | None = None) -> None:
    """``flower-supernode`` with the shorter idle poll; ``argv``: its arguments."""
    patch_idle_poll()
    from flwr.supernode.cli import flower_supernode

    sys.argv = ["flower-supernode", *(sys.argv[1:] if argv is None else argv)]
    flower_supernode()


if __name__ == "__main__":
    main()
