"""The site's one long-lived app process: pinned fedmi code, approved runs only.

``fedmi-site join`` starts the SuperNode with ``--isolation process`` (it then launches no
app process of its own) and this worker beside it. The worker asks the SuperNode's local
Runtime API for ClientApp tasks (what Flower's SuperExec does) and runs each one **in this
process** with the site's installed fedmi ClientApp — never with code from the run's FAB,
which it neither installs nor imports — after checking the run's FAB hash against the
site's approvals (:mod:`fedmi.shared.trust`). An unapproved run's messages are
answered with an error and logged; the worker goes on with the next task.

One process for every message also saves the start-up of a ``flwr-clientapp`` process per
message (torch, fedmi, the cached data) — most of what a deployed round used to cost. Before
it serves, the worker computes what the first round would otherwise wait for
(:func:`warm_up`: the regional model's template centre, 4–5 s of anatomy resampling), and
it retries a message's content 50 ms after it was not there yet instead of Flower's 1 s
(:mod:`fedmi.shared.transport`).

A task can be left behind by the SuperNode: when a message arrives for a run the SuperLink no
longer runs (a coordinator restarted mid-round), Flower 1.42 creates the task, then drops the
message without finishing the task, and its content never arrives. The worker waits for a
message's content only while the SuperNode has nothing newer for it: as soon as a newer task
is pending, the SuperNode has moved on (it handles one message at a time), the stale task is
closed as failed and the newer one runs.

A task can also be revoked under the worker: the SuperNode finishes a task whose message it
failed to receive, and a task whose heartbeat lapsed, and its token then answers 401. Flower's
HTTP retry treats a 401 as "this process must stop" and sends the process SIGINT, and so does
Flower's task heartbeat when the SuperNode says the task no longer runs. Either would stop the
worker for good while its SuperNode stays connected: the site would look online and never
answer again. The worker's Runtime API client therefore gives up only the call
(:func:`fedmi.shared.transport.runtime_retry_invoker`), its heartbeat only notes that the
task ended (:class:`TaskHeartbeat`), and no failure of one task stops the worker
(:func:`serve_tasks`); only SIGTERM/SIGINT from outside, or its SuperNode stopping, do.

Run as ``python -m fedmi.client.deploy.worker --runtime-api 127.0.0.1:PORT --state-dir
DIR --supernode-pid PID [--site-dir DIR]``; it stops when the SuperNode does.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import threading
import time
from pathlib import Path

from fedmi.shared.transport import TaskRevoked, runtime_retry_invoker, shorten_pull_backoff
from fedmi.shared.trust import installed_fab_hash, is_approved

log = logging.getLogger("fedmi.site.worker")
#: seconds between task requests when the SuperNode has nothing for this site (a loopback
#: request to the site's own SuperNode)
POLL_SECONDS = 0.1
#: seconds between checks that the SuperNode still runs
WATCH_SECONDS = 1.0
#: seconds between checks for a newer task while a message's content is awaited
SUPERSEDED_CHECK_SECONDS = 2.0
REFUSED_REASON = "this site has not approved this app (FAB {digest}): refused, nothing ran"


class TaskHeartbeat:
    """Flower's task heartbeat function, except that a task the SuperNode ended ends nothing else.

    Flower 1.42's ``make_task_heartbeat_fn_http`` raises SIGINT in the process when the
    SuperNode answers that the task no longer runs. Here that answer, a revoked token
    (:class:`TaskRevoked`), an ended run (403) or any other error answer is logged once and
    sets :attr:`ended`; a transport error or a 503/504 is a failed beat that Flower's
    :class:`~flwr.supercore.heartbeat.HeartbeatSender` retries, as with Flower's function.
    """

    def __init__(self, client) -> None:  # noqa: ANN001 - RuntimeHttpClient
        from flwr.proto.runtime_pb2 import SendTaskHeartbeatRequest

        self._client = client
        self._request = SendTaskHeartbeatRequest()
        self.ended = threading.Event()

    def __call__(self) -> bool:
        import httpx
        from flwr.supercore.run import RunNotRunningException

        try:
            res = self._client.SendTaskHeartbeat(self._request)
        except httpx.TransportError:
            return False
        except httpx.HTTPStatusError as err:
            if err.response.status_code in (503, 504):
                return False
            self._end(f"heartbeat answered {err.response.status_code}")
            return True
        except (TaskRevoked, RunNotRunningException) as exc:
            self._end(str(exc) or "the run is no longer running")
            return True
        if not res.success:
            self._end("the SuperNode no longer runs this task")
        return True

    def _end(self, why: str) -> None:
        if not self.ended.is_set():
            self.ended.set()
            log.warning("task heartbeat: %s; the worker goes on", why)


def _runtime_client(address: str, token: str | None):  # noqa: ANN202 - Flower internals
    from flwr.supercore.interceptors import (
        RuntimeTokenHttpInterceptor,
        RuntimeVersionHttpInterceptor,
    )
    from flwr.supercore.runtime import RuntimeHttpClient

    interceptors = [RuntimeVersionHttpInterceptor(component_name="flwr-clientapp")]
    if token is not None:
        interceptors.append(RuntimeTokenHttpInterceptor(token))
    return RuntimeHttpClient.from_server_address(
        server_address=address,
        insecure=True,
        root_certificates=None,
        interceptors=interceptors,
        retry_invoker=runtime_retry_invoker(),
    )


class MessageAbandoned(Exception):
    """The SuperNode dropped the awaited message and moved on to a newer task."""


class NewerTask:
    """Claims the next pending task while a message's content is awaited.

    ``superseded()`` asks the SuperNode (at most every ``SUPERSEDED_CHECK_SECONDS``) for a
    newer task; once it has one, the awaited message was abandoned by the SuperNode and
    ``claimed`` holds the newer task for the worker to run next.
    """

    def __init__(self, acquire) -> None:  # noqa: ANN001 - () -> AcquireTaskResponse
        self._acquire = acquire
        self._lock = threading.Lock()
        self._checked = 0.0
        self.claimed = None

    def superseded(self) -> bool:
        with self._lock:
            if self.claimed is not None:
                return True
            if time.monotonic() - self._checked < SUPERSEDED_CHECK_SECONDS:
                return False
            self._checked = time.monotonic()
            res = self._acquire()
            if res.HasField("task") and res.token:
                self.claimed = res
            return self.claimed is not None


def pull_task_input(client, newer: NewerTask):  # noqa: ANN001, ANN201 - Flower internals
    """Flower's ``pull_task_input``, giving up on a message the SuperNode abandoned.

    Raises :class:`MessageAbandoned` when a newer task is pending while this task's
    message content is still unavailable.
    """
    from flwr.app import Context, Message
    from flwr.common.serde import context_from_proto, fab_from_proto, run_from_proto
    from flwr.proto.node_pb2 import Node
    from flwr.proto.runtime_pb2 import PullAppMessagesRequest, PullTaskInputRequest
    from flwr.supercore.inflatable.inflatable_protobuf_utils import (
        make_confirm_message_received_fn_protobuf,
        make_pull_object_fn_protobuf,
    )
    from flwr.supercore.inflatable.inflatable_utils import (
        ObjectUnavailableError,
        pull_and_inflate_object_from_tree,
    )
    from flwr.supercore.task_identity import TaskIdentity

    res = client.PullTaskInput(PullTaskInputRequest())
    TaskIdentity.task_id = res.task_id
    TaskIdentity.run_id = res.run.run_id
    TaskIdentity.node_id = res.context.node_id
    context: Context = context_from_proto(res.context)
    run, fab = run_from_proto(res.run), fab_from_proto(res.fab)
    messages = client.PullMessages(PullAppMessagesRequest())
    if not messages.messages_list:
        raise RuntimeError("No messages received from Runtime API")
    node = Node(node_id=context.node_id)
    pull_object = make_pull_object_fn_protobuf(client.PullObject, node, context.run_id)

    def pull(object_id: str) -> bytes:
        try:
            return pull_object(object_id)
        except ObjectUnavailableError:
            if newer.superseded():
                raise MessageAbandoned(
                    f"the SuperNode dropped a message of run {context.run_id} (the run had "
                    "ended) and moved on to a newer one"
                ) from None
            raise

    tree = messages.message_object_trees[0]
    message = pull_and_inflate_object_from_tree(
        tree,
        pull,
        make_confirm_message_received_fn_protobuf(
            client.ConfirmMessageReceived, node, context.run_id
        ),
        return_type=Message,
    )
    message.metadata.__dict__["_message_id"] = tree.object_id
    return message, context, run, fab


def run_task(
    address: str,
    token: str,
    installed: str,
    state_dir: Path,
    client_app,  # noqa: ANN001
    newer: NewerTask,
) -> bool:
    """Pull one task, refuse it unless its FAB is approved, else run fedmi on it.

    Returns whether the app ran (False: refused, abandoned or failed).
    """
    from flwr.app import Message
    from flwr.app.error import Error
    from flwr.common.constant import ErrorCode, SubStatus
    from flwr.supercore.heartbeat import HeartbeatSender
    from flwr.supernode.runtime.run_clientapp import push_message, push_task_output

    client = _runtime_client(address, token)
    heartbeat = HeartbeatSender(TaskHeartbeat(client))
    heartbeat.start()
    context = message = reply = None
    ran, status, details = False, SubStatus.FAILED, "refused"
    started = time.perf_counter()
    pulled = handled = started
    try:
        message, context, run, fab = pull_task_input(client, newer)
        pulled = time.perf_counter()
        if not is_approved(fab.hash_str, installed, state_dir):
            reason = REFUSED_REASON.format(digest=fab.hash_str)
            log.warning("run %s (%s): %s", run.run_id, run.fab_id, reason)
            reply = Message(Error(code=ErrorCode.UNKNOWN, reason=reason), reply_to=message)
            details = reason
        else:
            reply = client_app(message=message, context=context)
            handled = time.perf_counter()
            ran, status, details = True, SubStatus.COMPLETED, ""
    except (MessageAbandoned, TaskRevoked) as exc:
        log.warning("%s: skipped", exc)
        details = str(exc)
    except Exception as exc:  # noqa: BLE001 - reported to the coordinator, worker goes on
        log.exception("the ClientApp failed")
        details = f"{type(exc).__name__}: {exc}"
        if message is not None:
            reply = Message(
                Error(code=ErrorCode.CLIENT_APP_RAISED_EXCEPTION, reason=details),
                reply_to=message,
            )
    finally:
        try:
            if reply is not None and context is not None:
                push_message(client, reply, context)
        except TaskRevoked as exc:
            log.warning("%s: the reply was not pushed", exc)
        except Exception:  # noqa: BLE001
            log.exception("could not push the reply")
        try:
            push_task_output(client, context, status, details)
        except Exception as exc:  # noqa: BLE001 - a revoked or ended task: nothing to close
            log.warning("task output not pushed (%s: %s)", type(exc).__name__, exc)
        if heartbeat.is_running:
            heartbeat.stop()
        client.close()
    if ran:
        log.info(
            "%s message: content pulled in %.2f s, handled in %.2f s, reply pushed in %.2f s",
            message.metadata.message_type,
            pulled - started,
            handled - pulled,
            time.perf_counter() - handled,
        )
    return ran


def warm_up(site_dir: Path | None) -> float:
    """Compute, before the first message, what the first round would otherwise wait for.

    The regional model's head is centred on its task's template as the encoder sees it
    (:func:`fedmi.shared.regional.template_features`): data-free, the same at every site,
    cached for the life of the process, and 4–5 s of anatomy resampling on one core the
    first time a model is built. Built here for the task of ``site_dir``'s site.toml
    (every task when it names none, or without a site folder). A failure is logged and
    left to the round that needs it.

    Returns the seconds it took.
    """
    start = time.perf_counter()
    from fedmi.shared.model import ModelSpec, build_model
    from fedmi.shared.tasks import TASKS

    tasks = list(TASKS)
    try:
        if site_dir is not None:
            from fedmi.client.site.config import load_site_config

            task = load_site_config(site_dir).task
            tasks = [task] if task in TASKS else tasks
        for task in tasks:
            build_model(ModelSpec(arch="regional", task=task))
    except Exception as exc:  # noqa: BLE001 - the round that needs it reports it properly
        log.warning("warm-up skipped (%s: %s)", type(exc).__name__, exc)
    return time.perf_counter() - start


def serve(
    address: str, state_dir: Path, supernode_pid: int | None, site_dir: Path | None = None
) -> None:
    """Acquire and run ClientApp tasks until the SuperNode stops (or SIGTERM)."""
    if supernode_pid is not None:
        watch = threading.Thread(target=_exit_with, args=(supernode_pid,), daemon=True)
        watch.start()
    from flwr.proto.runtime_pb2 import AcquireTaskRequest
    from flwr.supercore.constant import TaskType

    from fedmi.client.app import app as client_app

    shorten_pull_backoff()
    log.info("site worker: ready to serve after a %.1f s warm-up", warm_up(site_dir))
    installed = installed_fab_hash()
    log.info("site worker: runs fedmi's installed app (FAB %s) and approved apps", installed)
    stop = {"now": False}

    def _stop(*_a) -> None:  # noqa: ANN002
        stop["now"] = True

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    client = _runtime_client(address, None)
    request = AcquireTaskRequest(supported_task_types=[TaskType.CLIENT_APP.value])

    def run_one(res, newer: NewerTask) -> None:  # noqa: ANN001 - AcquireTaskResponse
        run_task(address, res.token, installed, state_dir, client_app, newer)

    try:
        serve_tasks(lambda: client.AcquireTask(request), run_one, lambda: stop["now"])
    finally:
        client.close()
    log.info("site worker: stopped by a signal")


def serve_tasks(acquire, run_one, stopping) -> int:  # noqa: ANN001
    """Acquire tasks and run them until ``stopping()``; returns how many tasks it took.

    ``acquire()`` asks the SuperNode for a task (an ``AcquireTaskResponse``);
    ``run_one(response, newer)`` runs one, with the :class:`NewerTask` that may claim the
    next task while its message is awaited. A failure to acquire (the SuperNode restarting)
    is retried after a second; **a task that raises is logged and the worker goes on**: one
    message of an ended run must never stop a site from answering the next run.
    """
    claimed = None  # a task claimed while the previous one's message was awaited
    ran = 0
    while not stopping():
        try:
            res = claimed or acquire()
        except Exception as exc:  # noqa: BLE001 - the SuperNode may be restarting
            log.debug("no task (%s)", exc)
            time.sleep(1.0)
            continue
        claimed = None
        if res.HasField("task") and res.token:
            newer = NewerTask(acquire)
            try:
                run_one(res, newer)
            except Exception:  # noqa: BLE001 - one task, not the site
                log.exception("a task failed outside the ClientApp; the worker goes on")
            ran += 1
            claimed = newer.claimed
        else:
            time.sleep(POLL_SECONDS)
    return ran


def _exit_with(supernode_pid: int) -> None:
    """Exit the worker once the SuperNode is gone, also in the middle of a task.

    Flower's Runtime API client retries a lost SuperNode for ever; nothing the worker does
    can reach the coordinator without it. The ledger and the state folder are written
    atomically, so leaving mid-task is as safe as the SIGKILL every part must survive.
    """
    while _alive(supernode_pid):
        time.sleep(WATCH_SECONDS)
    log.info("the SuperNode (PID %d) stopped: the site worker stops", supernode_pid)
    logging.shutdown()
    os._exit(0)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description="fedmi's site worker (pinned ClientApp)")
    ap.add_argument("--runtime-api", required=True, help="the SuperNode's 127.0.0.1:PORT")
    ap.add_argument("--state-dir", type=Path, required=True)
    ap.add_argument("--supernode-pid", type=int)
    ap.add_argument("--site-dir", type=Path, help="the site folder (its task is warmed up)")
    args = ap.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per poll otherwise
    os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")
    serve(args.runtime_api, args.state_dir.resolve(), args.supernode_pid, args.site_dir)


if __name__ == "__main__":
    main()
