"""The object-pull backoff fedmi's deployed processes use (fedmi.shared.transport)."""

from __future__ import annotations

import time

import pytest
from flwr.supercore.constant import PULL_INITIAL_BACKOFF
from flwr.supercore.inflatable import inflatable_utils
from flwr.supercore.inflatable.inflatable_utils import ObjectUnavailableError

from fedmi.shared import transport
from tests.http_errors import http_status_error


@pytest.fixture
def restored():
    """Flower's own defaults during the test (a ServerApp run in this process shortens them)."""
    saved = {n: dict(getattr(inflatable_utils, n).__kwdefaults__) for n in transport.PULL_FUNCTIONS}
    for name in transport.PULL_FUNCTIONS:
        getattr(inflatable_utils, name).__kwdefaults__["initial_backoff"] = PULL_INITIAL_BACKOFF
    yield
    for name, defaults in saved.items():
        getattr(inflatable_utils, name).__kwdefaults__.update(defaults)


def test_flower_waits_a_second_before_retrying_an_unavailable_object(restored):
    # the fact the module exists for: Flower 1.42's default first retry
    assert PULL_INITIAL_BACKOFF == 1
    assert transport.pull_backoff() == {name: 1.0 for name in transport.PULL_FUNCTIONS}


def test_an_object_that_arrives_late_is_pulled_after_the_short_retry(restored):
    transport.shorten_pull_backoff()
    transport.shorten_pull_backoff()  # idempotent
    assert transport.pull_backoff() == {n: 0.05 for n in transport.PULL_FUNCTIONS}
    ready_at = time.monotonic() + 0.03  # uploaded 30 ms after the first ask

    def pull(object_id: str) -> bytes:
        if time.monotonic() < ready_at:
            raise ObjectUnavailableError(object_id)
        return b"content"

    t0 = time.monotonic()
    got = inflatable_utils.pull_objects(["a"], pull)  # Flower's own function, its default
    assert got == {"a": b"content"}
    assert time.monotonic() - t0 < 0.5  # Flower's default: about 1 s


@pytest.mark.parametrize("bad", [0, -1, float("nan"), "0.05", True, None])
def test_a_bad_first_retry_is_refused(restored, bad):
    with pytest.raises(ValueError, match="first_retry"):
        transport.shorten_pull_backoff(bad)
    assert transport.pull_backoff() == {name: 1.0 for name in transport.PULL_FUNCTIONS}


def test_a_flower_without_the_keyword_is_refused(restored, monkeypatch):
    monkeypatch.setattr(inflatable_utils, "pull_objects", lambda object_ids, fn: {})
    with pytest.raises(RuntimeError, match="pull_objects has no `initial_backoff`"):
        transport.shorten_pull_backoff()


# --- the Runtime API retry of fedmi's long-lived processes ---------------------------------


def _answers(*codes: int):
    """A call answering ``codes`` in turn, then 200 ("ok")."""
    answers = iter(codes)

    def call() -> str:
        code = next(answers, 200)
        if code != 200:
            raise http_status_error(code)
        return "ok"

    return call


def test_flowers_own_retry_stops_the_process_on_a_401(sigints):
    """The fact runtime_retry_invoker exists for: Flower SIGINTs its process on a 401."""
    from flwr.supercore.retry import make_simple_http_retry_invoker

    assert make_simple_http_retry_invoker().invoke(_answers(401)) == "ok"
    assert sigints, "Flower no longer SIGINTs on a 401: runtime_retry_invoker may go"


def test_a_revoked_token_ends_the_call_at_once_and_sends_no_signal(sigints):
    from flwr.supercore.run import RunNotRunningException

    invoker = transport.runtime_retry_invoker()
    t0 = time.monotonic()
    with pytest.raises(transport.TaskRevoked, match="pull-task-input: 401"):
        invoker.invoke(_answers(401))
    assert time.monotonic() - t0 < 1.0
    assert sigints == []
    # everything else is Flower's: a 502 is retried, a 403 means the run ended
    assert invoker.invoke(_answers(502)) == "ok"
    with pytest.raises(RunNotRunningException):
        invoker.invoke(_answers(403))
    assert sigints == []


# --- a TLS handshake the coordinator cut short is retried; a wrong certificate is not ---------


def _serving(handle):  # noqa: ANN001, ANN202 - (socket) -> None
    """A loopback server thread calling ``handle(connection)``; yields (port); closes after."""
    import socket
    import threading

    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen()

    def serve() -> None:
        while True:
            try:
                conn, _ = srv.accept()
            except OSError:
                return
            handle(conn)

    threading.Thread(target=serve, daemon=True).start()
    yield srv.getsockname()[1]
    srv.close()


@pytest.fixture
def dropping_server():
    """A port whose server reads the TLS ClientHello and closes: the client's handshake
    ends in ``ssl.SSLEOFError``, as when the coordinator is killed mid-connection."""

    def drop(conn) -> None:  # noqa: ANN001
        time.sleep(0.05)
        conn.recv(65536)
        conn.close()

    yield from _serving(drop)


@pytest.fixture
def other_ca_server(tmp_path):
    """A TLS server whose certificate another federation's CA signed; returns (port, our CA)."""
    import ssl

    from fedmi.server.deploy.certs import make_certificates

    theirs = make_certificates(tmp_path / "theirs", ["127.0.0.1"])
    ours = make_certificates(tmp_path / "ours", ["127.0.0.1"])
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(str(theirs.server_cert), str(theirs.server_key))

    def handshake(conn) -> None:  # noqa: ANN001
        try:
            ctx.wrap_socket(conn, server_side=True).close()
        except (ssl.SSLError, OSError):
            conn.close()

    for port in _serving(handshake):
        yield port, ours.ca_cert


def _post(port: int, ca) -> None:  # noqa: ANN001
    import httpx

    httpx.post(f"https://127.0.0.1:{port}/v1/fleet/pull-messages", verify=str(ca), timeout=5)


def _first_fails(port: int, ca):  # noqa: ANN001
    """A call whose first try is a real request to ``port`` and whose second succeeds."""
    calls = []

    def call() -> str:
        calls.append(1)
        if len(calls) == 1:
            _post(port, ca)
        return "ok"

    return call, calls


def test_flowers_retry_gives_up_on_a_dropped_handshake(dropping_server, tmp_path):
    """The fact retry_dropped_tls exists for: Flower ends the SuperNode's loop here."""
    import httpx
    from flwr.supercore.retry import make_simple_http_retry_invoker

    from fedmi.server.deploy.certs import make_certificates

    ca = make_certificates(tmp_path / "ca", ["127.0.0.1"]).ca_cert
    call, calls = _first_fails(dropping_server, ca)
    with pytest.raises(httpx.ConnectError, match="UNEXPECTED_EOF") as err:
        make_simple_http_retry_invoker().invoke(call)
    assert calls == [1] and transport.dropped_tls_handshake(err.value)


def test_a_dropped_handshake_is_retried(dropping_server, tmp_path):
    from flwr.supercore.retry import make_simple_http_retry_invoker

    from fedmi.server.deploy.certs import make_certificates

    ca = make_certificates(tmp_path / "ca", ["127.0.0.1"]).ca_cert
    for invoker in (
        transport.retry_dropped_tls(make_simple_http_retry_invoker()),
        transport.runtime_retry_invoker(),
    ):
        call, calls = _first_fails(dropping_server, ca)
        assert invoker.invoke(call) == "ok" and calls == [1, 1]


def test_a_certificate_another_ca_signed_still_gives_up_at_once(other_ca_server):
    import httpx
    from flwr.supercore.retry import make_simple_http_retry_invoker

    port, ours = other_ca_server
    call, calls = _first_fails(port, ours)
    with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED") as err:
        transport.retry_dropped_tls(make_simple_http_retry_invoker()).invoke(call)
    assert calls == [1] and not transport.dropped_tls_handshake(err.value)


def test_only_a_transport_error_from_ssl_eof_counts_as_dropped():
    import ssl

    import httpx

    assert not transport.dropped_tls_handshake(httpx.ConnectError("[Errno 111] Connection refused"))
    assert not transport.dropped_tls_handshake(ssl.SSLEOFError("EOF"))  # not from httpx
    assert not transport.dropped_tls_handshake(http_status_error(502))
    assert transport.dropped_tls_handshake(
        httpx.ReadError("[SSL: UNEXPECTED_EOF_WHILE_READING] EOF occurred in violation of protocol")
    )
    try:
        try:
            raise ssl.SSLEOFError("EOF")
        except ssl.SSLEOFError as eof:
            raise httpx.ConnectError("handshake") from eof
    except httpx.ConnectError as chained:
        assert transport.dropped_tls_handshake(chained)
