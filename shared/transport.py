"""How soon a deployed process asks again for a message's content (Flower 1.42's object pulls).

A Flower message travels as a tree of objects: the sender registers the message, then
uploads its objects one request at a time; the receiver pulls each object and, when one
is not there yet (``ObjectUnavailableError``), retries with an exponential backoff that
starts at **1 s** (``flwr.supercore.inflatable.inflatable_utils``: ``pull_objects`` and
``pull_and_inflate_object_from_tree``, ``initial_backoff=PULL_INITIAL_BACKOFF``). In a
deployed round every hop meets an upload still in progress — the site worker pulls a
message from its SuperNode while the SuperNode is still storing it, the ServerApp pulls a
reply the SuperNode is still pushing — so a message whose content is ready a few
milliseconds later arrives a whole second late, at each hop (measured with
``benchmarks/bench_deployment.py``: the site worker's pull took 0.9–1.2 s for a 10 kB
message, ~3 s of fixed cost per exchange).

:func:`shorten_pull_backoff` makes the first retry come after :data:`FIRST_RETRY_SECONDS`
instead; the backoff still doubles to Flower's cap (10 s) and the number of tries and the
time limit are Flower's, so a peer that really is slow is polled as gently as before after
a few retries. fedmi's own deployed processes call it at start: the site's SuperNode
(:mod:`fedmi.client.deploy.supernode`), the site worker (:mod:`fedmi.client.deploy.worker`)
and the coordinator's ServerApp (:mod:`fedmi.server.app`). It changes only the default of
a keyword argument, never the protocol.

Flower's HTTP retry (``flwr.supercore.retry.make_simple_http_retry_invoker``) has two rules
that stop a long-lived fedmi process for good when the coordinator restarts, and fedmi
changes exactly those two:

* it gives up on every transport error whose text mentions SSL, so a TLS handshake the
  peer cut short — the coordinator killed or restarted while a connection was being set
  up; Python raises ``ssl.SSLEOFError`` "UNEXPECTED_EOF_WHILE_READING" — ends the
  SuperNode's main loop: the site leaves the federation. :func:`retry_dropped_tls` retries
  such a handshake with Flower's backoff; a certificate that fails verification still
  gives up at once (:func:`dropped_tls_handshake` tells them apart).
* it answers an HTTP 401 by sending its own process SIGINT. To fedmi's Runtime API clients
  (the site worker, the coordinator's ServerApp launcher) a 401 means that one task's token
  was revoked, so :func:`runtime_retry_invoker` ends only that call (:class:`TaskRevoked`).
"""

from __future__ import annotations

#: seconds before the first retry of an object that is not there yet (Flower: 1 s)
FIRST_RETRY_SECONDS = 0.05
#: the Flower functions whose ``initial_backoff`` default is shortened
PULL_FUNCTIONS = ("pull_objects", "pull_and_inflate_object_from_tree")


def shorten_pull_backoff(first_retry: float = FIRST_RETRY_SECONDS) -> None:
    """Retry an unavailable object after ``first_retry`` seconds (module docstring).

    Idempotent; affects every caller in this process that uses Flower's default.

    Raises
    ------
    ValueError
        When ``first_retry`` is not a positive number of seconds.
    RuntimeError
        When the installed Flower no longer has these functions or their
        ``initial_backoff`` keyword (another Flower version): fedmi then refuses to start
        rather than run with an unknown transport.
    """
    if not isinstance(first_retry, (int, float)) or isinstance(first_retry, bool):
        raise ValueError(f"first_retry must be a number of seconds, got {first_retry!r}")
    if not first_retry > 0:
        raise ValueError(f"first_retry must be > 0 s, got {first_retry!r}")
    from flwr.supercore.inflatable import inflatable_utils

    for name in PULL_FUNCTIONS:
        fn = getattr(inflatable_utils, name, None)
        defaults = getattr(fn, "__kwdefaults__", None) or {}
        if "initial_backoff" not in defaults:
            raise RuntimeError(
                f"flwr.supercore.inflatable.inflatable_utils.{name} has no `initial_backoff` "
                "keyword: install the Flower version fedmi's pyproject names"
            )
        defaults["initial_backoff"] = float(first_retry)


def pull_backoff() -> dict[str, float]:
    """The ``initial_backoff`` default each of :data:`PULL_FUNCTIONS` has now (seconds)."""
    from flwr.supercore.inflatable import inflatable_utils

    return {
        name: float(getattr(inflatable_utils, name).__kwdefaults__["initial_backoff"])
        for name in PULL_FUNCTIONS
    }


def dropped_tls_handshake(exc: BaseException) -> bool:
    """Whether ``exc`` is a TLS handshake the peer cut short, not a TLS refusal.

    True for an ``httpx.TransportError`` caused by ``ssl.SSLEOFError`` (the peer closed the
    connection mid-handshake: "UNEXPECTED_EOF_WHILE_READING", "EOF occurred in violation
    of protocol"); False for everything else, a failed certificate verification included.
    """
    import ssl

    import httpx

    if not isinstance(exc, httpx.TransportError):
        return False
    if "certificate" in str(exc).lower():
        return False
    seen: set[int] = set()
    link: BaseException | None = exc
    while link is not None and id(link) not in seen:
        if isinstance(link, ssl.SSLEOFError):
            return True
        seen.add(id(link))
        link = link.__cause__ or link.__context__
    text = str(exc).lower()
    return "unexpected_eof_while_reading" in text or "eof occurred in violation of protocol" in text


def retry_dropped_tls(invoker):  # noqa: ANN001, ANN201 - flwr.supercore.retry.RetryInvoker
    """Make Flower's HTTP ``invoker`` retry a dropped TLS handshake (module docstring).

    Every other decision stays Flower's. Returns ``invoker``, changed in place.
    """
    flower_should_giveup = invoker.should_giveup

    def should_giveup(exc: Exception) -> bool:
        if dropped_tls_handshake(exc):
            return False
        return flower_should_giveup(exc)

    invoker.should_giveup = should_giveup
    return invoker


class TaskRevoked(Exception):
    """The Runtime API no longer knows this task's token (HTTP 401): that task is over."""


def runtime_retry_invoker():  # noqa: ANN201 - flwr.supercore.retry.RetryInvoker
    """Flower's HTTP retry for a fedmi Runtime API client, with fedmi's two changes.

    A dropped TLS handshake is retried (:func:`retry_dropped_tls`). Flower 1.42's
    :func:`flwr.supercore.retry.make_simple_http_retry_invoker` answers a 401 by sending its
    own process SIGINT (a one-message ``flwr-clientapp`` whose run was stopped). fedmi's site worker and ServerApp launcher are long-lived and serve every
    run: to them a 401 means that one task's token was revoked (the SuperNode or SuperLink
    finished the task, or its heartbeat lapsed), so the call raises :class:`TaskRevoked` at
    once. Every other answer is Flower's: transport errors and 502/503/504 are retried with
    Flower's backoff, a 403 raises ``RunNotRunningException``.
    """
    import httpx
    from flwr.supercore.retry import make_simple_http_retry_invoker

    invoker = retry_dropped_tls(make_simple_http_retry_invoker())
    flower_should_giveup = invoker.should_giveup

    def should_giveup(exc: Exception) -> bool:
        if isinstance(exc, httpx.HTTPStatusError) and exc.response.status_code == 401:
            raise TaskRevoked(
                f"the task's token was revoked ({exc.request.url.path}: 401)"
            ) from None
        return flower_should_giveup(exc)

    invoker.should_giveup = should_giveup
    return invoker
