"""Running the coordinator's Flower SuperLink and the ``flwr`` commands around it.

``fedmi-server start`` launches ``flower-superlink`` with TLS, SuperNode authentication, a
state database, no runtime dependency installation and no telemetry, and records the
connection in ``$FLWR_HOME/config.toml`` (entry ``[superlink.fedmi]``) so that ``flwr``
(and ``fedmi-server register / run / status``) reach it. Everything the SuperLink keeps
lives in the state folder: ``state.db`` (registered site keys, runs), ``superlink.pid``,
``superlink.log`` and ``superlink.json`` (how it was started).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib  # type: ignore[no-redef]

from fedmi.server.deploy.certs import (
    CertPaths,
    certificate_names,
    check_server_certs,
    load_certificate,
)

log = logging.getLogger(__name__)

CONNECTION = "fedmi"
DEFAULT_PORT = 8000
PID_FILE = "superlink.pid"
LOG_FILE = "superlink.log"
INFO_FILE = "superlink.json"
#: environment of every Flower process we start: no telemetry, no update check
QUIET_ENV = {"FLWR_TELEMETRY_ENABLED": "0", "FLWR_DISABLE_UPDATE_CHECK": "1"}


class DeploymentError(RuntimeError):
    """A deployment step cannot go on; the message names the cause and the fix."""


def flower_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """``os.environ`` with telemetry and update checks off."""
    return {**os.environ, **QUIET_ENV, **dict(extra or {})}


def flwr_home() -> Path:
    """Flower's configuration folder: ``$FLWR_HOME`` or ``~/.flwr``."""
    return Path(os.environ.get("FLWR_HOME") or Path.home() / ".flwr").expanduser()


def _toml_value(v: object) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, list):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    return json.dumps(str(v))


def _dump_toml(doc: Mapping[str, object], prefix: str = "") -> str:
    scalars = [(k, v) for k, v in doc.items() if not isinstance(v, Mapping)]
    tables = [(k, v) for k, v in doc.items() if isinstance(v, Mapping)]
    out = []
    if scalars:
        if prefix:
            out.append(f"[{prefix}]")
        out += [f"{k} = {_toml_value(v)}" for k, v in scalars]
        out.append("")
    for k, v in tables:
        out.append(_dump_toml(v, f"{prefix}.{k}" if prefix else k))  # type: ignore[arg-type]
    return "\n".join(out)


def write_connection(
    address: str, ca_cert: Path, *, name: str = CONNECTION, home: Path | None = None
) -> Path:
    """Add or replace ``[superlink.NAME]`` in ``$FLWR_HOME/config.toml`` (TLS with ``ca_cert``).

    Other connections are kept; ``NAME`` becomes the default when none is set.
    """
    home = home or flwr_home()
    home.mkdir(parents=True, exist_ok=True)
    path = home / "config.toml"
    doc: dict[str, object] = {}
    if path.is_file():
        try:
            doc = tomllib.loads(path.read_text())
        except tomllib.TOMLDecodeError as exc:
            raise DeploymentError(
                f"{path} is not valid TOML ({exc}): fix or remove it, then start again"
            ) from None
    links = dict(doc.get("superlink", {}))  # type: ignore[call-overload]
    links.setdefault("default", name)
    links[name] = {"address": address, "root-certificates": str(Path(ca_cert).resolve())}
    doc["superlink"] = links
    path.write_text(_dump_toml(doc))
    return path


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


def pid_alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie, killed but not yet reaped by its parent, does not)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return True
    return fields[0] != "Z"


def read_pid(path: Path) -> int | None:
    try:
        pid = int(path.read_text().strip())
    except (OSError, ValueError):
        return None
    return pid if pid_alive(pid) else None


def port_open(host: str, port: int, timeout: float = 1.0) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


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
    running = read_pid(pid_path)
    if running is not None:
        raise DeploymentError(
            f"a SuperLink of {state_dir} is already running (PID {running}): "
            f"`fedmi-server stop --state {state_dir}` first"
        )
    probe = "127.0.0.1" if host in ("0.0.0.0", "::") else host
    if port_open(probe, port):
        raise DeploymentError(f"port {port} on {host} is in use: pass another --port")
    cmd = superlink_command(certs, state_dir, host, port)
    log_path = state_dir / LOG_FILE
    address = f"{connect_host(certs, host)}:{port}"
    config = write_connection(address, certs.ca_cert)
    (state_dir / INFO_FILE).write_text(
        json.dumps(
            {
                "address": address,
                "host": host,
                "port": port,
                "certs": str(Path(certs_dir).resolve()),
                "connection": CONNECTION,
                "flwr_config": str(config),
            },
            indent=1,
        )
    )
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
        try:
            return proc.wait()
        except KeyboardInterrupt:
            stop_process_group(proc.pid)
            return 130
        finally:
            pid_path.unlink(missing_ok=True)
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


def descendants(pid: int) -> list[int]:
    """Every live descendant of ``pid`` (from /proc; empty where there is none).

    Flower's SuperLink starts its SuperExec in a session of its own, so killing the
    SuperLink's process group alone would leave the SuperExec and the ServerApp running.
    """
    children: dict[int, list[int]] = {}
    for stat_file in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat_file.read_text().rsplit(")", 1)[1].split()
            children.setdefault(int(fields[1]), []).append(int(stat_file.parent.name))
        except (OSError, IndexError, ValueError):
            continue
    out: list[int] = []
    todo = list(children.get(pid, []))
    while todo:
        child = todo.pop()
        out.append(child)
        todo.extend(children.get(child, []))
    return out


def _signal_tree(pids: list[int], sig: int) -> None:
    for p in pids:
        for kill in (os.killpg, os.kill):
            try:
                kill(p, sig)
            except (ProcessLookupError, PermissionError):
                pass


def stop_process_group(pid: int, timeout: float = 10.0) -> bool:
    """SIGTERM the process group led by ``pid`` and every descendant's group (then SIGKILL).

    Returns True when something was running.
    """
    if not pid_alive(pid):
        return False
    tree = [pid, *descendants(pid)]
    _signal_tree(tree, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not any(pid_alive(p) for p in tree):
            return True
        time.sleep(0.2)
    _signal_tree(tree, signal.SIGKILL)
    return True


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


def flwr(
    args: Sequence[str], *, capture: bool = True, timeout: float | None = 120
) -> subprocess.CompletedProcess:
    """Run the ``flwr`` command line quietly (telemetry off)."""
    exe = shutil.which("flwr")
    cmd = [exe] if exe else [sys.executable, "-m", "flwr.cli.app"]
    return subprocess.run(
        [*cmd, *args],
        capture_output=capture,
        text=True,
        env=flower_env(),
        timeout=timeout,
        check=False,
    )


def _json_output(proc: subprocess.CompletedProcess, what: str) -> dict:
    text = proc.stdout or ""
    start = text.find("{")
    try:
        doc = json.loads(text[start:]) if start >= 0 else {}
    except json.JSONDecodeError:
        doc = {}
    if proc.returncode != 0 or not doc.get("success", False):
        detail = (doc.get("error-message") if doc else None) or _tail(proc)
        raise DeploymentError(f"{what} failed: {detail}")
    return doc


def _tail(proc: subprocess.CompletedProcess) -> str:
    text = ((proc.stderr or "") + "\n" + (proc.stdout or "")).strip().splitlines()
    return " ".join(text[-3:]) or f"exit {proc.returncode}"


def register_site(public_key: Path, connection: str = CONNECTION) -> str:
    """Register a site's ``site.pub`` with the SuperLink; returns its node id."""
    doc = _json_output(
        flwr(["supernode", "register", str(public_key), connection, "--format", "json"]),
        f"registering {public_key}",
    )
    return str(doc.get("node-id", doc.get("node_id", "?")))


def list_nodes(connection: str = CONNECTION) -> list[dict]:
    """``flwr supernode list``: every registered node with its status."""
    doc = _json_output(
        flwr(["supernode", "list", connection, "--format", "json"]), "listing the sites"
    )
    return list(doc.get("nodes", []))


def list_runs(connection: str = CONNECTION) -> list[dict]:
    """``flwr ls``: the runs the SuperLink knows."""
    doc = _json_output(flwr(["ls", connection, "--format", "json"]), "listing the runs")
    return list(doc.get("runs", []))


def app_dir() -> Path:
    """The fedmi Flower app (the folder holding fedmi's pyproject.toml)."""
    root = Path(__file__).resolve().parents[1]
    if (root / "pyproject.toml").is_file():
        return root
    raise DeploymentError(
        "fedmi's pyproject.toml was not found beside the installed package: run from a fedmi "
        "checkout or pass --app /path/to/fedmi"
    )


def run_command(
    out_dir: Path, run_config: str = "", *, app: Path | None = None, connection: str = CONNECTION
) -> list[str]:
    """The ``flwr run`` command that starts fedmi on the federation, outputs in ``out_dir``."""
    out = Path(out_dir).expanduser().resolve()
    if '"' in str(out):
        raise DeploymentError(f"--out {out}: choose a folder without quotes in its path")
    settings = " ".join(x for x in (run_config.strip(), f'out-dir="{out}"') if x)
    exe = shutil.which("flwr") or "flwr"
    return [
        exe,
        "run",
        str(app or app_dir()),
        connection,
        "--stream",
        "--run-config",
        settings,
    ]
