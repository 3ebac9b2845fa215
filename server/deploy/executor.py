"""The coordinator's ServerApp launcher: approved apps only.

``fedmi-server start`` runs the SuperLink with ``--isolation process`` (it starts no
SuperExec of its own) and this launcher beside it. Like Flower's SuperExec it asks the
SuperLink's (loopback) Runtime API for ServerApp tasks, but it starts ``flwr-serverapp``
only when the run's FAB hash (``Task.fab_hash``) is the installed fedmi release's or one
approved with ``fedmi-server approve`` (:mod:`fedmi.shared.trust`): an approved FAB is
byte for byte the installed release, so the ServerApp runs fedmi's own code. Any other
run is marked failed ("not approved") before any of its code runs, even when the
coordinator's own operator submitted it with plain ``flwr run``. A task the SuperLink ended
before the launcher closed it (a revoked token: :class:`fedmi.shared.transport.TaskRevoked`)
is logged and the launcher goes on: only SIGTERM/SIGINT or its SuperLink stopping stop it.

Run as ``python -m fedmi.server.deploy.executor --runtime-api 127.0.0.1:PORT --certs DIR
--state DIR --superlink-pid PID``; it stops when the SuperLink does.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

from fedmi.server.deploy.processes import pid_alive
from fedmi.shared.transport import runtime_retry_invoker
from fedmi.shared.trust import installed_fab_hash, is_approved

log = logging.getLogger("fedmi.coordinator.executor")
POLL_SECONDS = 0.5
REFUSED = "the coordinator has not approved this app (FAB {digest}): refused, nothing ran"


def _client(address: str, ca: Path, token: str | None = None):  # noqa: ANN202 - Flower internals
    from flwr.supercore.interceptors import (
        RuntimeTokenHttpInterceptor,
        RuntimeVersionHttpInterceptor,
    )
    from flwr.supercore.runtime import RuntimeHttpClient

    interceptors = [RuntimeVersionHttpInterceptor(component_name="SuperExec")]
    if token is not None:
        interceptors.append(RuntimeTokenHttpInterceptor(token))
    return RuntimeHttpClient.from_server_address(
        server_address=address,
        insecure=False,
        root_certificates=ca.read_bytes(),
        interceptors=interceptors,
        retry_invoker=runtime_retry_invoker(),
    )


def refuse(address: str, ca: Path, token: str, digest: str) -> None:
    """Mark the task failed without running anything of it."""
    from flwr.common.constant import SubStatus
    from flwr.proto.runtime_pb2 import PushTaskOutputRequest

    client = _client(address, ca, token)
    try:
        client.PushTaskOutput(
            PushTaskOutputRequest(
                sub_status=SubStatus.FAILED, details=REFUSED.format(digest=digest)
            )
        )
    finally:
        client.close()


def serve(address: str, ca: Path, state: Path, superlink_pid: int | None) -> None:
    """Acquire ServerApp tasks until the SuperLink stops (or SIGTERM)."""
    from flwr.proto.runtime_pb2 import AcquireTaskRequest
    from flwr.supercore.constant import TaskType

    installed = installed_fab_hash()
    log.info("ServerApp launcher: the installed fedmi (FAB %s) and approved apps", installed)
    stop = {"now": False}
    signal.signal(signal.SIGTERM, lambda *_: stop.update(now=True))
    signal.signal(signal.SIGINT, lambda *_: stop.update(now=True))
    client = _client(address, ca)
    request = AcquireTaskRequest(supported_task_types=[TaskType.SERVER_APP.value])
    exe = shutil.which("flwr-serverapp") or "flwr-serverapp"
    children: list[subprocess.Popen] = []
    while not stop["now"]:
        children = [c for c in children if c.poll() is None]
        if superlink_pid is not None and not pid_alive(superlink_pid):
            break
        try:
            res = client.AcquireTask(request)
        except Exception as exc:  # noqa: BLE001 - the SuperLink may be starting
            log.debug("no task (%s)", exc)
            time.sleep(1.0)
            continue
        if not (res.HasField("task") and res.token):
            time.sleep(POLL_SECONDS)
            continue
        digest = res.task.fab_hash
        if not is_approved(digest, installed, state):
            log.warning("run %s: %s", res.task.run_id, REFUSED.format(digest=digest))
            try:
                refuse(address, ca, res.token, digest)
            except Exception as exc:  # noqa: BLE001 - the task ended meanwhile; launcher goes on
                log.warning("run %s: not marked refused (%s)", res.task.run_id, exc)
            continue
        log.info("run %s: starting the ServerApp (FAB %s)", res.task.run_id, digest)
        cmd = [exe, "--runtime-api-address", address, "--token", res.token]
        cmd += ["--root-certificates", str(ca), "--parent-pid", str(os.getpid())]
        children.append(subprocess.Popen(cmd, stdin=subprocess.DEVNULL))
    for child in children:
        child.terminate()
    client.close()


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description="fedmi's ServerApp launcher (approved apps only)")
    ap.add_argument("--runtime-api", required=True, help="the SuperLink's 127.0.0.1:PORT")
    ap.add_argument("--certs", type=Path, required=True)
    ap.add_argument("--state", type=Path, required=True)
    ap.add_argument("--superlink-pid", type=int)
    args = ap.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    logging.getLogger("httpx").setLevel(logging.WARNING)
    serve(
        args.runtime_api, args.certs.resolve() / "ca.crt", args.state.resolve(), args.superlink_pid
    )


if __name__ == "__main__":
    main()
