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
