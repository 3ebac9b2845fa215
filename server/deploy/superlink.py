"""Running the coordinator's Flower SuperLink behind fedmi's Fleet-only front.

``fedmi-server start`` launches ``flower-superlink`` with TLS, SuperNode authentication, a
state database, no runtime dependency installation and no telemetry on a **loopback** port
(Control, Fleet and Runtime APIs), and :mod:`fedmi.server.deploy.front` on the public
``--host:--port`` (Fleet API only, same certificate). It records the loopback connection in
``$FLWR_HOME/config.toml`` (entry ``[superlink.fedmi]``) so that ``flwr`` (and
``fedmi-server register / run / status``) reach Control on this host only. Everything the
SuperLink keeps lives in the state folder: ``state.db`` (registered site keys, runs),
``superlink.pid`` / ``front.pid``, ``superlink.log`` / ``front.log``, ``superlink.json``
(how it was started) and ``sites.json`` (node id → site pseudonym,
:mod:`fedmi.server.deploy.registry`).

The ``flwr`` commands around it are in :mod:`fedmi.server.deploy.flower`, the process and
port helpers in :mod:`fedmi.server.deploy.processes`.
"""

from __future__ import annotations

import json
import logging
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

from fedmi.server.deploy.certs import (
    CertPaths,
    certificate_names,
    check_server_certs,
    load_certificate,
)
from fedmi.server.deploy.flower import (
    CONNECTION,
    DeploymentError,
    flower_env,
    flwr_home,
    write_connection,
)
from fedmi.server.deploy.processes import port_open, read_pid, stop_process_group
from fedmi.server.federation.identity import REGISTRY_ENV, REGISTRY_FILE

log = logging.getLogger(__name__)

DEFAULT_PORT = 8000
PID_FILE = "superlink.pid"
LOG_FILE = "superlink.log"
INFO_FILE = "superlink.json"
FRONT_PID_FILE = "front.pid"
FRONT_LOG_FILE = "front.log"
EXECUTOR_PID_FILE = "executor.pid"
EXECUTOR_LOG_FILE = "executor.log"
#: the SuperLink itself listens here only; the public port is the front's
LOOPBACK = "127.0.0.1"
#: in $FLWR_HOME: the state folder of the coordinator last started on this account
COORDINATOR_FILE = "fedmi-coordinator.json"


def coordinator_state(explicit: Path | None = None) -> Path:
    """The coordinator's state folder: ``explicit``, else the one ``start`` last recorded."""
    if explicit is not None:
        return Path(explicit).resolve()
    try:
        return Path(json.loads((flwr_home() / COORDINATOR_FILE).read_text())["state"])
    except (OSError, ValueError, KeyError, TypeError):
        raise DeploymentError(
            "no coordinator state folder known on this account: pass --state DIR (the folder "
            "given to `fedmi-server start`)"
        ) from None


def superlink_command(certs: CertPaths, state_dir: Path, host: str, port: int) -> list[str]:
    """The ``flower-superlink`` command line fedmi runs."""
    exe = shutil.which("flower-superlink") or "flower-superlink"
    return [
        exe,
        "--ssl-ca-certfile",
        str(certs.ca_cert),
        "--ssl-certfile",
        str(certs.server_cert),
        "--ssl-keyfile",
        str(certs.server_key),
        "--enable-supernode-auth",
        "--disable-runtime-dependency-installation",
        # no SuperExec of Flower's: fedmi's launcher starts approved ServerApps only
        "--isolation",
        "process",
        "--database",
        str(state_dir / "state.db"),
        "--host",
        host,
        "--port",
        str(port),
    ]


def _last_lines(path: Path, n: int = 5) -> str:
    try:
        lines = [ln for ln in path.read_text(errors="replace").splitlines() if ln.strip()]
    except OSError:
        return ""
    return " | ".join(lines[-n:])


def check_loopback_name(certs: CertPaths) -> None:
    """The server certificate must name 127.0.0.1: ``flwr`` reaches the SuperLink there."""
    names = certificate_names(load_certificate(certs.server_cert, "server certificate"))
    if LOOPBACK not in names:
        raise DeploymentError(
            f"{certs.server_cert} does not name {LOOPBACK} (the coordinator's own loopback, "
            "where `fedmi-server` reaches the SuperLink): run `fedmi-server certs "
            "--overwrite` again (it adds 127.0.0.1) and hand the sites the new ca.crt"
        )


def front_command(certs_dir: Path, host: str, port: int, upstream: int) -> list[str]:
    """The Fleet-only front on the public port (:mod:`fedmi.server.deploy.front`)."""
    listen = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    return [
        sys.executable,
        "-m",
        "fedmi.server.deploy.front",
        "--listen",
        listen,
        "--upstream",
        str(upstream),
        "--certs",
        str(certs_dir),
    ]


def executor_command(
    certs_dir: Path, state_dir: Path, upstream: int, superlink_pid: int
) -> list[str]:
    """fedmi's ServerApp launcher (:mod:`fedmi.server.deploy.executor`)."""
    return [
        sys.executable,
        "-m",
        "fedmi.server.deploy.executor",
        "--runtime-api",
        f"{LOOPBACK}:{upstream}",
        "--certs",
        str(certs_dir),
        "--state",
        str(state_dir),
        "--superlink-pid",
        str(superlink_pid),
    ]


def _loopback_port() -> int:
    with socket.socket() as s:
        s.bind((LOOPBACK, 0))
        return int(s.getsockname()[1])


def start_superlink(
    certs_dir: Path,
    state_dir: Path,
    *,
    host: str = "127.0.0.1",
    port: int = DEFAULT_PORT,
    background: bool = False,
    wait: float = 60.0,
) -> int:
    """Start the SuperLink (loopback) and its Fleet-only front (``host:port``).

    Returns the SuperLink's PID (background) or its exit status (foreground).

    Raises
    ------
    DeploymentError
        When the certificates are unusable, a SuperLink of this state folder is already
        running, the port is taken, or either process stops during start-up.
    """
    certs = check_server_certs(Path(certs_dir))
    check_loopback_name(certs)
    state_dir = Path(state_dir).resolve()
    state_dir.mkdir(parents=True, exist_ok=True)
    pid_path, front_pid = state_dir / PID_FILE, state_dir / FRONT_PID_FILE
    if read_pid(pid_path) is None:  # the SuperLink died (crash): its front and launcher go too
        stop_superlink(state_dir)
    probe = _refuse_busy(pid_path, state_dir, host, port)
    internal = _loopback_port()
    log_path, front_log = state_dir / LOG_FILE, state_dir / FRONT_LOG_FILE
    _record_connection(certs, Path(certs_dir), state_dir, host, port, internal)
    # the ServerApp (started by the launcher) finds the site registry through env
    env = flower_env({REGISTRY_ENV: str(state_dir / REGISTRY_FILE)})

    def spawn(cmd: list[str], logp: Path, pidp: Path) -> subprocess.Popen:
        with open(logp, "ab") as logf:
            proc = subprocess.Popen(
                cmd,
                stdout=logf if background else None,
                stderr=subprocess.STDOUT if background else None,
                stdin=subprocess.DEVNULL,
                env=env,
                start_new_session=True,
            )
        pidp.write_text(f"{proc.pid}\n")
        return proc

    link = spawn(superlink_command(certs, state_dir, LOOPBACK, internal), log_path, pid_path)
    front = spawn(front_command(certs.folder, host, port, internal), front_log, front_pid)
    spawn(
        executor_command(certs.folder, state_dir, internal, link.pid),
        state_dir / EXECUTOR_LOG_FILE,
        state_dir / EXECUTOR_PID_FILE,
    )
    try:
        _await_port(link, LOOPBACK, internal, wait, log_path)
        _await_port(front, probe, port, wait, front_log)
    except DeploymentError:
        stop_superlink(state_dir)
        raise
    if not background:
        return _run_in_foreground(link, front, state_dir)
    return link.pid


def _refuse_busy(pid_path: Path, state_dir: Path, host: str, port: int) -> str:
    """Refuse a second SuperLink of ``state_dir`` or a taken port; returns the host to probe."""
    running = read_pid(pid_path)
    if running is not None:
        raise DeploymentError(
            f"a SuperLink of {state_dir} is already running (PID {running}): "
            f"`fedmi-server stop --state {state_dir}` first"
        )
    probe = "127.0.0.1" if host in ("0.0.0.0", "::") else host
    if port_open(probe, port):
        raise DeploymentError(f"port {port} on {host} is in use: pass another --port")
    return probe


def _record_connection(
    certs: CertPaths, certs_dir: Path, state_dir: Path, host: str, port: int, internal: int
) -> None:
    """Write the ``flwr`` connection (loopback) and ``superlink.json`` (how it was started)."""
    address = f"{LOOPBACK}:{internal}"
    config = write_connection(address, certs.ca_cert)
    (flwr_home() / COORDINATOR_FILE).write_text(json.dumps({"state": str(state_dir)}))
    (state_dir / INFO_FILE).write_text(
        json.dumps(
            {
                "address": address,
                "public": f"{host}:{port}",
                "host": host,
                "port": port,
                "certs": str(certs_dir.resolve()),
                "connection": CONNECTION,
                "flwr_config": str(config),
            },
            indent=1,
        )
    )


def _run_in_foreground(link: subprocess.Popen, front: subprocess.Popen, state_dir: Path) -> int:
    """Wait for the SuperLink; Ctrl-C (or the front stopping) stops both (exit status 130)."""
    try:
        while link.poll() is None and front.poll() is None:
            time.sleep(0.5)
        return link.returncode if link.returncode is not None else 1
    except KeyboardInterrupt:
        return 130
    finally:
        stop_superlink(state_dir)


def _await_port(proc: subprocess.Popen, probe: str, port: int, wait: float, log_path: Path) -> None:
    """Return once ``proc`` opens ``port``; raises when it stops or ``wait`` s pass."""
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise DeploymentError(
                f"{Path(log_path).stem} stopped during start-up (exit {proc.returncode}): "
                f"{_last_lines(log_path)} (full log: {log_path})"
            )
        if port_open(probe, port):
            return
        time.sleep(0.3)
    raise DeploymentError(
        f"{Path(log_path).stem} did not open port {port} in {wait:.0f} s: see {log_path}"
    )


def stop_superlink(state_dir: Path) -> int | None:
    """Stop the front and the SuperLink of ``state_dir``; returns the SuperLink's PID or None."""
    stopped = None
    for name in (FRONT_PID_FILE, EXECUTOR_PID_FILE, PID_FILE):
        pid_path = Path(state_dir) / name
        pid = read_pid(pid_path)
        if pid is not None:
            stop_process_group(pid)
            if name == PID_FILE:
                stopped = pid
        pid_path.unlink(missing_ok=True)
    return stopped
