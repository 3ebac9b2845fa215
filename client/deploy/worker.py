"""The site's one long-lived app process: pinned fedmi code, approved runs only.

``fedmi-site join`` starts the SuperNode with ``--isolation process`` (it then launches no
app process of its own) and this worker beside it. The worker asks the SuperNode's local
Runtime API for ClientApp tasks (what Flower's SuperExec does) and runs each one **in this
process** with the site's installed fedmi ClientApp — never with code from the run's FAB,
which it neither installs nor imports — after checking the run's FAB hash against the
site's approvals (:mod:`fedmi.shared.trust`). An unapproved run's messages are
answered with an error and logged; the worker goes on with the next task.

One process for every message also saves the start-up of a ``flwr-clientapp`` process per
message (torch, fedmi, the cached data) — most of what a deployed round used to cost.

Run as ``python -m fedmi.client.deploy.worker --runtime-api 127.0.0.1:PORT --state-dir
DIR --supernode-pid PID``; it stops when the SuperNode does.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import time
from pathlib import Path

from fedmi.shared.trust import installed_fab_hash, is_approved

log = logging.getLogger("fedmi.site.worker")
#: seconds between task requests when the SuperNode has nothing for this site
POLL_SECONDS = 0.2
REFUSED_REASON = "this site has not approved this app (FAB {digest}): refused, nothing ran"


def _runtime_client(address: str, token: str | None):  # noqa: ANN202 - Flower internals
    from flwr.supercore.interceptors import (
        RuntimeTokenHttpInterceptor,
        RuntimeVersionHttpInterceptor,
    )
    from flwr.supercore.retry import make_simple_http_retry_invoker
    from flwr.supercore.runtime import RuntimeHttpClient

    interceptors = [RuntimeVersionHttpInterceptor(component_name="flwr-clientapp")]
    if token is not None:
        interceptors.append(RuntimeTokenHttpInterceptor(token))
    return RuntimeHttpClient.from_server_address(
        server_address=address,
        insecure=True,
        root_certificates=None,
        interceptors=interceptors,
        retry_invoker=make_simple_http_retry_invoker(),
    )


def run_task(address: str, token: str, installed: str, state_dir: Path, client_app) -> bool:  # noqa: ANN001
    """Pull one task, refuse it unless its FAB is approved, else run fedmi on it.

    Returns whether the app ran (False: refused or failed).
    """
    from flwr.app import Message
    from flwr.app.error import Error
    from flwr.common.constant import ErrorCode, SubStatus
    from flwr.supercore.heartbeat import HeartbeatSender, make_task_heartbeat_fn_http
    from flwr.supernode.runtime.run_clientapp import (
        pull_task_input,
        push_message,
        push_task_output,
    )

    client = _runtime_client(address, token)
    heartbeat = HeartbeatSender(make_task_heartbeat_fn_http(client))
    heartbeat.start()
    context = message = reply = None
    ran, status, details = False, SubStatus.FAILED, "refused"
    try:
        message, context, run, fab = pull_task_input(client)
        if not is_approved(fab.hash_str, installed, state_dir):
            reason = REFUSED_REASON.format(digest=fab.hash_str)
            log.warning("run %s (%s): %s", run.run_id, run.fab_id, reason)
            reply = Message(Error(code=ErrorCode.UNKNOWN, reason=reason), reply_to=message)
            details = reason
        else:
            reply = client_app(message=message, context=context)
            ran, status, details = True, SubStatus.COMPLETED, ""
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
        except Exception:  # noqa: BLE001
            log.exception("could not push the reply")
        push_task_output(client, context, status, details)
        heartbeat.stop()
        client.close()
    return ran


def serve(address: str, state_dir: Path, supernode_pid: int | None) -> None:
    """Acquire and run ClientApp tasks until the SuperNode stops (or SIGTERM)."""
    from flwr.proto.runtime_pb2 import AcquireTaskRequest
    from flwr.supercore.constant import TaskType

    from fedmi.client.app import app as client_app

    installed = installed_fab_hash()
    log.info("site worker: runs fedmi's installed app (FAB %s) and approved apps", installed)
    stop = {"now": False}

    def _stop(*_a) -> None:  # noqa: ANN002
        stop["now"] = True

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    client = _runtime_client(address, None)
    request = AcquireTaskRequest(supported_task_types=[TaskType.CLIENT_APP.value])
    while not stop["now"]:
        if supernode_pid is not None and not _alive(supernode_pid):
            log.info("the SuperNode (PID %d) stopped: the site worker stops", supernode_pid)
            break
        try:
            res = client.AcquireTask(request)
        except Exception as exc:  # noqa: BLE001 - the SuperNode may be restarting
            log.debug("no task (%s)", exc)
            time.sleep(1.0)
            continue
        if res.HasField("task") and res.token:
            run_task(address, res.token, installed, state_dir, client_app)
        else:
            time.sleep(POLL_SECONDS)
    client.close()


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
    args = ap.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per poll otherwise
    os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")
    serve(args.runtime_api, args.state_dir.resolve(), args.supernode_pid)


if __name__ == "__main__":
    main()
