"""Running the coordinator's Flower SuperLink.

``fedmi-server start`` launches ``flower-superlink`` with TLS, SuperNode authentication, a
state database, no runtime dependency installation and no telemetry, and records the
connection in ``$FLWR_HOME/config.toml`` (entry ``[superlink.fedmi]``) so that ``flwr``
(and ``fedmi-server register / run / status``) reach it. Everything the SuperLink keeps
lives in the state folder: ``state.db`` (registered site keys, runs), ``superlink.pid``,
``superlink.log`` and ``superlink.json`` (how it was started).

The ``flwr`` commands around it are in :mod:`fedmi.server.deploy.flower`, the process and
port helpers in :mod:`fedmi.server.deploy.processes`.
"""

from __future__ import annotations

import json
import logging
import shutil
import subprocess
import time
from pathlib import Path

from fedmi.server.deploy.certs import (
    CertPaths,
    certificate_names,
    check_server_certs,
    load_certificate,
)
from fedmi.server.deploy.flower import CONNECTION, DeploymentError, flower_env, write_connection
from fedmi.server.deploy.processes import port_open, read_pid, stop_process_group

log = logging.getLogger(__name__)

DEFAULT_PORT = 8000
PID_FILE = "superlink.pid"
LOG_FILE = "superlink.log"
INFO_FILE = "superlink.json"


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


def connect_host(certs: CertPaths, host: str) -> str:
    """The name ``flwr`` commands on this machine use: one the certificate names."""
    if host not in ("0.0.0.0", "::", ""):
        return host
    names = certificate_names(load_certificate(certs.server_cert, "server certificate"))
    return "127.0.0.1" if "127.0.0.1" in names or not names else names[0]


def start_superlink(
    certs_dir: Path,
    state_dir: Path,
    *,
    host: str = "127.0.0.1",
    port: int = DEFAULT_PORT,
    background: bool = False,
    wait: float = 60.0,
) -> int:
    """Start the SuperLink; returns its PID (background) or its exit status (foreground).

    Raises
    ------
    DeploymentError
        When the certificates are unusable, a SuperLink of this state folder is already
        running, the port is taken, or it stops during start-up.
    """
    certs = check_server_certs(Path(certs_dir))
    state_dir = Path(state_dir).resolve()
    state_dir.mkdir(parents=True, exist_ok=True)
    pid_path = state_dir / PID_FILE
    probe = _refuse_busy(pid_path, state_dir, host, port)
    cmd = superlink_command(certs, state_dir, host, port)
    log_path = state_dir / LOG_FILE
    _record_connection(certs, Path(certs_dir), state_dir, host, port)
    with open(log_path, "ab") as logf:
        proc = subprocess.Popen(
            cmd,
            stdout=logf if background else None,
            stderr=subprocess.STDOUT if background else None,
            stdin=subprocess.DEVNULL,
            env=flower_env(),
            start_new_session=True,
        )
    pid_path.write_text(f"{proc.pid}\n")
    if not background:
        return _run_in_foreground(proc, pid_path)
    return _await_port(proc, probe, port, wait, pid_path, log_path)


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
    certs: CertPaths, certs_dir: Path, state_dir: Path, host: str, port: int
) -> None:
    """Write the ``flwr`` connection and ``superlink.json`` (how the SuperLink was started)."""
    address = f"{connect_host(certs, host)}:{port}"
    config = write_connection(address, certs.ca_cert)
    (state_dir / INFO_FILE).write_text(
        json.dumps(
            {
                "address": address,
                "host": host,
                "port": port,
                "certs": str(certs_dir.resolve()),
                "connection": CONNECTION,
                "flwr_config": str(config),
            },
            indent=1,
        )
    )


def _run_in_foreground(proc: subprocess.Popen, pid_path: Path) -> int:
    """Wait for the SuperLink; Ctrl-C stops its whole process tree (exit status 130)."""
    try:
        return proc.wait()
    except KeyboardInterrupt:
        stop_process_group(proc.pid)
        return 130
    finally:
        pid_path.unlink(missing_ok=True)


def _await_port(
    proc: subprocess.Popen, probe: str, port: int, wait: float, pid_path: Path, log_path: Path
) -> int:
    """The PID once the port opens; raises when the SuperLink stops or ``wait`` s pass."""
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pid_path.unlink(missing_ok=True)
            raise DeploymentError(
                f"the SuperLink stopped during start-up (exit {proc.returncode}): "
                f"{_last_lines(log_path)} (full log: {log_path})"
            )
        if port_open(probe, port):
            return proc.pid
        time.sleep(0.3)
    stop_process_group(proc.pid)
    pid_path.unlink(missing_ok=True)
    raise DeploymentError(f"the SuperLink did not open port {port} in {wait:.0f} s: see {log_path}")


def stop_superlink(state_dir: Path) -> int | None:
    """Stop the SuperLink recorded in ``state_dir``; returns its PID, or None if none ran."""
    pid_path = Path(state_dir) / PID_FILE
    pid = read_pid(pid_path)
    if pid is None:
        pid_path.unlink(missing_ok=True)
        return None
    stop_process_group(pid)
    pid_path.unlink(missing_ok=True)
    return pid
