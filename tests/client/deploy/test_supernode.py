"""fedmi's SuperNode launcher: Flower's SuperNode with its sleeps capped."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest
from flwr.supernode import start_client_internal as loop

from fedmi.client.deploy import supernode
from fedmi.client.deploy.join import supernode_command


@pytest.fixture
def restored(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(loop, "time", time)  # undone after the test
    return loop


def test_the_supernode_loop_sleeps_at_most_the_idle_poll(restored):
    supernode.patch_idle_poll()
    t0 = time.monotonic()
    restored.time.sleep(3)  # Flower's idle wait
    assert time.monotonic() - t0 < supernode.IDLE_POLL_SECONDS + 0.3
    t0 = time.monotonic()
    restored.time.sleep(0.5)  # a local wait (the worker's reply): capped much shorter
    assert time.monotonic() - t0 < supernode.LOCAL_WAIT_SECONDS + 0.2
    assert restored.time.monotonic() > 0 and restored.time.time() > 0  # the rest is time's
    supernode.patch_idle_poll()  # twice is harmless


def test_the_caps_separate_the_idle_poll_from_local_waits():
    assert supernode.capped_sleep(3) == supernode.IDLE_POLL_SECONDS == 0.5
    assert supernode.capped_sleep(0.5) == supernode.LOCAL_WAIT_SECONDS == 0.02
    assert supernode.capped_sleep(0.01) == 0.01  # shorter sleeps are kept
    assert supernode.capped_sleep(0) == 0


def test_a_flower_whose_loop_does_not_use_time_is_refused(restored, monkeypatch):
    monkeypatch.setattr(loop, "time", object())
    with pytest.raises(RuntimeError, match="no longer uses the time module"):
        supernode.patch_idle_poll()


def test_join_runs_the_supernode_through_the_launcher(tmp_path: Path):
    cmd = supernode_command(
        "127.0.0.1:9092", tmp_path / "ca.crt", tmp_path / "key", tmp_path, tmp_path
    )
    assert cmd[:3] == [sys.executable, "-m", "fedmi.client.deploy.supernode"]
    assert cmd[cmd.index("--isolation") + 1] == "process"


def test_the_fleet_client_retries_a_dropped_tls_handshake(monkeypatch: pytest.MonkeyPatch):
    import httpx
    from flwr.supernode import fleet_http_connection as fleet

    flower = fleet.make_simple_http_retry_invoker
    monkeypatch.setattr(fleet, "make_simple_http_retry_invoker", flower)  # undone after
    dropped = httpx.ConnectError("[SSL: UNEXPECTED_EOF_WHILE_READING] EOF occurred in violation")
    assert flower().should_giveup(dropped) is True  # Flower: the SuperNode's loop ends
    supernode.patch_fleet_retry()
    patched = fleet.make_simple_http_retry_invoker
    supernode.patch_fleet_retry()  # idempotent
    assert fleet.make_simple_http_retry_invoker is patched
    invoker = patched()
    assert invoker.should_giveup(dropped) is False
    refused = httpx.ConnectError("[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed")
    assert invoker.should_giveup(refused) is True  # a wrong certificate still ends it


def test_a_flower_without_the_fleet_retry_is_refused(monkeypatch: pytest.MonkeyPatch):
    from flwr.supernode import fleet_http_connection as fleet

    monkeypatch.delattr(fleet, "make_simple_http_retry_invoker")
    with pytest.raises(RuntimeError, match="no longer uses make_simple_http_retry_invoker"):
        supernode.patch_fleet_retry()
