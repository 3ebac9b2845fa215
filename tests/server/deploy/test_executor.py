"""The coordinator's ServerApp launcher keeps serving when one task cannot be closed."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest
from flwr.proto.runtime_pb2 import AcquireTaskResponse
from flwr.proto.task_pb2 import Task

from fedmi.server.deploy import executor
from fedmi.shared.transport import TaskRevoked


class _Runtime:
    """The SuperLink's Runtime API: two unapproved runs, then SIGTERM to the launcher."""

    def __init__(self) -> None:
        self.acquired = 0

    def AcquireTask(self, _req):  # noqa: N802 - Flower's RPC name
        self.acquired += 1
        if self.acquired <= 2:
            task = Task(task_id=self.acquired, run_id=100 + self.acquired, fab_hash="cd" * 32)
            return AcquireTaskResponse(task=task, token=f"token-{self.acquired}")
        os.kill(os.getpid(), signal.SIGTERM)  # the operator stops the coordinator
        return AcquireTaskResponse()

    def close(self) -> None:
        pass


@pytest.fixture
def restore_signals():
    saved = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
    yield
    for s, handler in saved.items():
        signal.signal(s, handler)


def test_a_task_revoked_before_it_is_refused_does_not_stop_the_launcher(
    monkeypatch: pytest.MonkeyPatch, restore_signals, sigints, caplog, tmp_path: Path
):
    runtime = _Runtime()
    refused: list[str] = []

    def refuse(_address, _ca, token: str, _digest) -> None:  # noqa: ANN001
        refused.append(token)
        if token == "token-1":
            raise TaskRevoked("the task's token was revoked (push-task-output: 401)")

    monkeypatch.setattr(executor, "_client", lambda *a, **k: runtime)
    monkeypatch.setattr(executor, "refuse", refuse)
    monkeypatch.setattr(executor, "POLL_SECONDS", 0.0)
    executor.serve("127.0.0.1:9", tmp_path / "ca.crt", tmp_path, superlink_pid=None)
    assert refused == ["token-1", "token-2"]  # the second run was still handled
    assert "run 101: not marked refused" in caplog.text
    assert runtime.acquired == 3 and sigints == []
