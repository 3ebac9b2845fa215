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
authentication, retries and logs). The loop's other sleeps are local waits of 0.5 s — for
the site worker's reply, and for that reply's content, in the SuperNode's own store — and
are capped at :data:`LOCAL_WAIT_SECONDS`: a reply leaves for the coordinator within 20 ms
of the worker finishing instead of up to half a second later. The process also retries an
object that is not there yet after 50 ms instead of 1 s, and a TLS handshake the coordinator
cut short (killed or restarted mid-connection) with Flower's backoff instead of leaving the
federation (:func:`patch_fleet_retry`; both in :mod:`fedmi.shared.transport`).

Run as ``python -m fedmi.client.deploy.supernode ARGS`` with ``flower-supernode``'s own
arguments (``fedmi-site join`` builds them: :func:`fedmi.client.deploy.join.supernode_command`).
"""

from __future__ import annotations

import sys
import time
from types import ModuleType

from fedmi.shared.transport import retry_dropped_tls, shorten_pull_backoff

#: longest idle wait of the SuperNode's loop between asks to the SuperLink, seconds
#: (Flower's idle wait is 3 s)
IDLE_POLL_SECONDS = 0.5
#: longest local wait of the loop (for the worker's reply in the SuperNode's own store)
LOCAL_WAIT_SECONDS = 0.02


class _ShortSleeps(ModuleType):
    """The ``time`` module with ``sleep`` capped (module docstring).

    A sleep longer than :data:`IDLE_POLL_SECONDS` is the idle wait between asks to the
    SuperLink and becomes :data:`IDLE_POLL_SECONDS`; a shorter one is a local wait and
    becomes at most :data:`LOCAL_WAIT_SECONDS`.
    """

    def __init__(self) -> None:
        super().__init__("time")

    def __getattr__(self, name: str) -> object:
        return getattr(time, name)

    @staticmethod
    def sleep(seconds: float) -> None:
        time.sleep(capped_sleep(seconds))


def capped_sleep(seconds: float) -> float:
    """How long the patched loop sleeps when Flower asks for ``seconds``."""
    seconds = float(seconds)
    if seconds > IDLE_POLL_SECONDS:
        return IDLE_POLL_SECONDS
    return min(seconds, LOCAL_WAIT_SECONDS)


def _other_flower(what: str) -> str:
    """The message when the installed Flower is not the one these patches were written for."""
    return f"{what}: install the Flower version fedmi's pyproject names"


def _flower_module(name: str) -> ModuleType:
    """``flwr.supernode.<name>``, or a RuntimeError naming it (another Flower version)."""
    import importlib

    try:
        return importlib.import_module(f"flwr.supernode.{name}")
    except ImportError as exc:  # pragma: no cover - pinned Flower has it
        raise RuntimeError(
            _other_flower(f"this Flower has no flwr.supernode.{name} ({exc})")
        ) from None


def patch_idle_poll() -> None:
    """Cap the sleeps of Flower's SuperNode loop (module docstring).

    Raises
    ------
    RuntimeError
        When the installed Flower has no such loop module (another Flower version): the
        site then cannot join with this fedmi release rather than run unpatched unawares.
    """
    loop = _flower_module("start_client_internal")
    if getattr(loop, "time", None) is not time and not isinstance(loop.time, _ShortSleeps):
        raise RuntimeError(
            _other_flower("flwr.supernode.start_client_internal no longer uses the time module")
        )
    loop.time = _ShortSleeps()


def patch_fleet_retry() -> None:
    """Retry a dropped TLS handshake in the SuperNode's Fleet API client.

    Flower 1.42's Fleet client (``flwr.supernode.fleet_http_connection``) gives up on every
    transport error that mentions SSL. A coordinator killed or restarted while a request is
    being connected cuts the TLS handshake short (``ssl.SSLEOFError``), and giving up there
    ends the SuperNode's main loop: the site leaves the federation until someone joins it
    again. With this patch that one error is retried with Flower's backoff, like a refused
    connection; a certificate that fails verification still ends the SuperNode
    (:func:`fedmi.shared.transport.retry_dropped_tls`). Idempotent.

    Raises
    ------
    RuntimeError
        When the installed Flower has no such Fleet client (another Flower version).
    """
    fleet = _flower_module("fleet_http_connection")
    flower = getattr(fleet, "make_simple_http_retry_invoker", None)
    if flower is None:
        raise RuntimeError(
            _other_flower(
                "flwr.supernode.fleet_http_connection no longer uses make_simple_http_retry_invoker"
            )
        )
    if getattr(flower, "retries_dropped_tls", False):
        return

    def invoker():  # noqa: ANN202 - flwr.supercore.retry.RetryInvoker
        return retry_dropped_tls(flower())

    invoker.retries_dropped_tls = True  # type: ignore[attr-defined]
    fleet.make_simple_http_retry_invoker = invoker


def main(argv: list[str] | None = None) -> None:
    """``flower-supernode`` with the shorter waits; ``argv``: its arguments."""
    patch_idle_poll()
    patch_fleet_retry()
    shorten_pull_backoff()
    from flwr.supernode.cli import flower_supernode

    sys.argv = ["flower-supernode", *(sys.argv[1:] if argv is None else argv)]
    flower_supernode()


if __name__ == "__main__":
    main()
