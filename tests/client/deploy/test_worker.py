"""The site worker gives up on a message the SuperNode abandoned, and only then.

Flower 1.42's SuperNode creates a task for a message of a run that has ended (a coordinator
restarted mid-round), then drops the message without finishing the task: its content never
arrives. A Runtime API served from real Flower protobufs shows that the worker waits for a
message's content while nothing newer is pending, and moves on to the newer task otherwise.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import time

import pytest
from flwr.app import ConfigRecord, Context, Message, RecordDict
from flwr.common.serde import context_to_proto, fab_to_proto, message_to_proto, run_to_proto
from flwr.proto.message_pb2 import PullObjectResponse
from flwr.proto.runtime_pb2 import (
    AcquireTaskResponse,
    PullAppMessagesResponse,
    PullTaskInputResponse,
)
from flwr.proto.task_pb2 import Task
from flwr.supercore.fab import Fab
from flwr.supercore.inflatable.inflatable_object import get_all_nested_objects, get_object_tree
from flwr.supercore.run import Run
from flwr.supercore.task_identity import TaskIdentity

from fedmi.client.deploy import worker
from fedmi.shared import transport
from tests.http_errors import http_status_error

RUN_ID, NODE_ID = 7, 11


class RuntimeAPI:
    """The SuperNode's Runtime API for one task whose content arrives after ``arrives`` pulls."""

    def __init__(self, arrives: int | None, newer_after: int | None) -> None:
        self.message = Message(
            RecordDict({"config": ConfigRecord({"server-round": 2})}),
            dst_node_id=NODE_ID,
            message_type="train",
        )
        self.message.metadata.__dict__["_message_id"] = self.message.object_id
        self.objects = {k: v.deflate() for k, v in get_all_nested_objects(self.message).items()}
        self.arrives, self.newer_after = arrives, newer_after
        self.pulls = self.acquires = 0
        self.confirmed: list[str] = []

    def PullTaskInput(self, _req):  # noqa: N802 - Flower's RPC names
        ctx = Context(RUN_ID, NODE_ID, {}, RecordDict(), {})
        run = Run.create_empty(RUN_ID)
        return PullTaskInputResponse(
            context=context_to_proto(ctx),
            run=run_to_proto(run),
            fab=fab_to_proto(Fab("ab" * 32, b"fab", {})),
            task_id=1,
        )

    def PullMessages(self, _req):  # noqa: N802
        from flwr.app.message import remove_content_from_message

        proto = message_to_proto(remove_content_from_message(self.message))
        return PullAppMessagesResponse(
            messages_list=[proto], message_object_trees=[get_object_tree(self.message)]
        )

    def PullObject(self, req):  # noqa: N802
        self.pulls += 1
        if self.arrives is None or self.pulls < self.arrives:
            return PullObjectResponse(object_found=True, object_available=False)
        content = self.objects[req.object_id]
        return PullObjectResponse(object_found=True, object_available=True, object_content=content)

    def ConfirmMessageReceived(self, req):  # noqa: N802
        self.confirmed.append(req.message_object_id)

    def AcquireTask(self) -> AcquireTaskResponse:
        self.acquires += 1
        if self.newer_after is not None and self.acquires >= self.newer_after:
            return AcquireTaskResponse(task=Task(task_id=2, run_id=RUN_ID + 1), token="next")
        return AcquireTaskResponse()


@pytest.fixture(autouse=True)
def _fast_checks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(worker, "SUPERSEDED_CHECK_SECONDS", 0.0)
    # Flower's identity of the task this process runs (the SuperNode's message needs a run)
    for name, value in (("_task_id", 1), ("_run_id", RUN_ID), ("_node_id", NODE_ID)):
        monkeypatch.setattr(TaskIdentity, name, value, raising=False)


def test_content_that_arrives_late_is_awaited_while_nothing_newer_is_pending():
    api = RuntimeAPI(arrives=3, newer_after=None)
    newer = worker.NewerTask(api.AcquireTask)
    message, context, run, fab = worker.pull_task_input(api, newer)
    assert message.content["config"]["server-round"] == 2
    assert message.metadata.message_id == api.message.object_id
    assert (context.run_id, context.node_id, run.run_id) == (RUN_ID, NODE_ID, RUN_ID)
    assert api.confirmed == [api.message.object_id]
    assert newer.claimed is None and api.acquires >= 1  # it looked, found nothing newer


def test_an_abandoned_message_is_given_up_for_the_newer_task():
    api = RuntimeAPI(arrives=None, newer_after=2)
    newer = worker.NewerTask(api.AcquireTask)
    t0 = time.monotonic()
    with pytest.raises(worker.MessageAbandoned, match=f"dropped a message of run {RUN_ID}"):
        worker.pull_task_input(api, newer)
    assert time.monotonic() - t0 < 30  # Flower alone waits up to 2 hours
    assert newer.claimed is not None and newer.claimed.token == "next"
    assert newer.superseded() and api.acquires == 2  # the claimed task is kept, not re-asked
    assert api.confirmed == []


def test_newer_task_checks_are_rate_limited(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(worker, "SUPERSEDED_CHECK_SECONDS", 3600.0)
    api = RuntimeAPI(arrives=None, newer_after=1)
    newer = worker.NewerTask(api.AcquireTask)
    assert newer.superseded() is True  # the first check asks at once
    api2 = RuntimeAPI(arrives=None, newer_after=2)
    newer2 = worker.NewerTask(api2.AcquireTask)
    assert [newer2.superseded() for _ in range(5)] == [False] * 5
    assert api2.acquires == 1


def test_the_worker_exits_when_its_supernode_is_gone(tmp_path):
    """Also while busy: Flower's Runtime API client would retry the lost SuperNode for ever."""
    supernode = subprocess.Popen(["sleep", "300"])
    with socket.socket() as s:  # a port nothing listens on: every request is retried
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd = [sys.executable, "-m", "fedmi.client.deploy.worker", "--runtime-api"]
    cmd += [f"127.0.0.1:{port}", "--state-dir", str(tmp_path), "--supernode-pid"]
    proc = subprocess.Popen([*cmd, str(supernode.pid)], stderr=subprocess.PIPE, text=True)
    try:
        time.sleep(1.0)
        assert proc.poll() is None, proc.stderr.read()
        supernode.kill()
        supernode.wait()
        assert proc.wait(timeout=30) == 0
        assert "the site worker stops" in proc.stderr.read()
    finally:
        for p in (proc, supernode):
            p.kill()
            p.wait()


def _site(tmp_path, task_line: str):
    site = tmp_path / "site"
    site.mkdir()
    (site / "site.toml").write_text(f'[site]\nsite-id = "site-a"\n{task_line}\n')
    return site


@pytest.fixture
def built(monkeypatch):
    """The ModelSpecs warm_up builds (the real build is 4–5 s of anatomy resampling)."""
    from fedmi.shared import model

    specs = []
    monkeypatch.setattr(model, "build_model", lambda spec: specs.append(spec))
    return specs


def test_the_worker_warms_up_the_regional_centre_of_its_sites_task(tmp_path, built):
    from fedmi.shared.model import ModelSpec

    worker.warm_up(_site(tmp_path, 'task = "dat-pd"'))
    assert built == [ModelSpec(arch="regional", task="dat-pd")]


def test_a_site_without_a_task_warms_up_every_task(tmp_path, built):
    from fedmi.shared.tasks import TASKS

    worker.warm_up(_site(tmp_path, ""))
    assert [s.task for s in built] == list(TASKS)
    built.clear()
    worker.warm_up(None)
    assert [s.task for s in built] == list(TASKS)


def test_a_failed_warm_up_is_logged_and_the_worker_serves_anyway(tmp_path, built, caplog):
    site = _site(tmp_path, "tsak = 'fdg-ad'")  # a typo: site.toml is refused
    assert worker.warm_up(site) >= 0
    assert built == []
    assert "warm-up skipped (SiteConfigError" in caplog.text and "tsak" in caplog.text


def test_the_warm_up_makes_the_first_model_build_cheap():
    """What it is for: the centre is computed once per process, the second build is free."""
    from fedmi.shared.model import ModelSpec, build_model

    build_model(ModelSpec(arch="regional", task="fdg-ad"))  # cached from here on
    t0 = time.perf_counter()
    build_model(ModelSpec(arch="regional", task="fdg-ad"))
    assert time.perf_counter() - t0 < 0.5


def test_join_starts_the_worker_with_the_site_folder(tmp_path):
    from fedmi.client.deploy.join import worker_command

    cmd = worker_command(9094, tmp_path / "state", 123, tmp_path / "site")
    assert cmd[:3] == [sys.executable, "-m", "fedmi.client.deploy.worker"]
    assert cmd[cmd.index("--runtime-api") + 1] == "127.0.0.1:9094"
    assert cmd[cmd.index("--supernode-pid") + 1] == "123"
    assert cmd[cmd.index("--site-dir") + 1] == str(tmp_path / "site")


# --- a task revoked under the worker ends that task, never the worker ----------------------
# (after a coordinator restart the SuperNode finishes tasks whose message it failed to
# receive; their tokens then answer 401, and their heartbeats "not running")


class _BeatClient:
    def __init__(self, answer) -> None:  # noqa: ANN001
        self.answer = answer

    def SendTaskHeartbeat(self, _req):  # noqa: N802 - Flower's RPC name
        from flwr.proto.runtime_pb2 import SendTaskHeartbeatResponse

        if isinstance(self.answer, BaseException):
            raise self.answer
        return SendTaskHeartbeatResponse(success=self.answer)


def test_flowers_heartbeat_stops_the_process_when_the_task_no_longer_runs(sigints):
    from flwr.supercore.heartbeat import make_task_heartbeat_fn_http

    assert make_task_heartbeat_fn_http(_BeatClient(False))() is True
    assert sigints, "Flower's heartbeat no longer SIGINTs: TaskHeartbeat may be removed"


def test_the_task_heartbeat_notes_an_ended_task_and_sends_no_signal(sigints, caplog):
    import httpx

    beat = worker.TaskHeartbeat(_BeatClient(True))
    assert beat() is True and not beat.ended.is_set()
    from flwr.supercore.run import RunNotRunningException

    ended = (
        False,
        transport.TaskRevoked("revoked"),
        http_status_error(401),
        RunNotRunningException(),
    )
    for answer in ended:
        beat = worker.TaskHeartbeat(_BeatClient(answer))
        assert beat() is True and beat() is True
        assert beat.ended.is_set()
    assert sigints == []
    assert sum("the worker goes on" in r.getMessage() for r in caplog.records) == 4  # once each
    # a lost SuperNode or a busy one is a failed beat, retried by Flower's HeartbeatSender
    for answer in (httpx.ConnectError("refused"), http_status_error(503), http_status_error(504)):
        beat = worker.TaskHeartbeat(_BeatClient(answer))
        assert beat() is False and not beat.ended.is_set()


def test_run_task_with_a_revoked_token_is_skipped_without_a_signal(sigints, tmp_path):
    """Flower's real Runtime API client against a SuperNode that answers 401 to the token."""
    import http.server
    import threading

    hits: list[str] = []

    class Revoked(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802
            hits.append(self.path)
            self.rfile.read(int(self.headers.get("content-length", 0)))
            self.send_response(401)
            self.send_header("content-length", "0")
            self.end_headers()

        def log_message(self, *_a) -> None:  # noqa: ANN002
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Revoked)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        address = f"127.0.0.1:{server.server_address[1]}"
        ran = []
        t0 = time.monotonic()
        result = worker.run_task(
            address,
            "revoked-token",
            "ab" * 32,
            tmp_path,
            lambda **kw: ran.append(kw),
            worker.NewerTask(lambda: AcquireTaskResponse()),
        )
    finally:
        server.shutdown()
        server.server_close()
    assert result is False and ran == []
    assert time.monotonic() - t0 < 5.0
    assert any(p.endswith("pull-task-input") for p in hits), hits
    assert any(p.endswith("push-task-output") for p in hits), hits  # closing is still tried
    assert sigints == []


def test_one_failing_task_does_not_stop_the_worker(monkeypatch, caplog):
    monkeypatch.setattr(worker, "POLL_SECONDS", 0.0)
    tasks = iter(
        [AcquireTaskResponse(task=Task(task_id=i, run_id=RUN_ID), token=f"t{i}") for i in (1, 2)]
    )
    acquired: list[int] = []

    def acquire() -> AcquireTaskResponse:
        res = next(tasks, AcquireTaskResponse())
        if res.HasField("task"):
            acquired.append(res.task.task_id)
        return res

    done: list[int] = []

    def run_one(res, _newer) -> None:  # noqa: ANN001
        if res.task.task_id == 1:
            raise RuntimeError("the run of this message ended")
        done.append(res.task.task_id)

    polls = iter(range(50))
    assert worker.serve_tasks(acquire, run_one, lambda: next(polls) >= 40) == 2
    assert acquired == [1, 2] and done == [2]
    assert "the worker goes on" in caplog.text
