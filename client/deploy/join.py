"""``fedmi-site keygen`` and ``fedmi-site join``: connect a hospital to the federation.

``join`` validates everything it is given *before* Flower starts (the CA certificate, the
site key, the site folder and its ``site.toml``, the local port) and then probes the
coordinator over TLS with the CA, so that the common mistakes give one line naming the file
and the fix instead of a Flower traceback. It then runs ``flower-supernode`` with TLS
(``--root-certificates``), node authentication (``--auth-supernode-private-key``) and the
site's ``--node-config`` (``data-dir``, ``state-dir``, optionally ``role``, plus the
extra entries of ``--node-config``, validated like the SuperNode will: same keys as
site.toml, docs/configuration.md), in the foreground or, with ``--background``, detached
with a PID file in the state folder.

The SuperNode only makes outbound connections to the coordinator's one port; it opens a
local port (``--port``, default 9094, bound to 127.0.0.1) for the site's app process. It
runs with ``--isolation process``: ``join`` starts that one long-lived app process itself
(:mod:`fedmi.client.deploy.worker`), which runs the site's installed fedmi for approved
runs only (:mod:`fedmi.shared.trust`, ``fedmi-site approve``). SIGTERM or SIGINT to
a foreground ``join`` stops both processes (by PID); in the background their PIDs are in
``supernode.pid`` and ``site.pid`` of the state folder.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import ssl
import subprocess
import sys
import time
from pathlib import Path

from fedmi.client.deploy.keys import (
    KeyFileError,
    check_ca_certificate,
    check_private_key,
    generate_site_key,
)
from fedmi.client.ingest.report import REPORT_FILE
from fedmi.client.privacy.settings import resolve_privacy
from fedmi.client.site.config import ROLES, SiteConfigError, load_site_config
from fedmi.client.site.settings import node_settings, resolve_site
from fedmi.shared.config_schema import flower_pairs
from fedmi.shared.fingerprint import key_fingerprint

PID_FILE = "supernode.pid"
LOG_FILE = "supernode.log"
WORKER_PID_FILE = "site.pid"
WORKER_LOG_FILE = "site.log"
QUIET_ENV = {"FLWR_TELEMETRY_ENABLED": "0", "FLWR_DISABLE_UPDATE_CHECK": "1"}
#: Flower log lines → the one line a site manager can act on
_DIAGNOSES = (
    (
        "Failed to activate SuperNode",
        "the coordinator refused this site's key: send {pub} to the coordinator to run "
        "`fedmi-server register --key site.pub --site NAME`, then join again",
    ),
    (
        "CERTIFICATE_VERIFY_FAILED",
        "the coordinator's certificate is not signed by {ca}: ask the coordinator for the "
        "current ca.crt",
    ),
    (
        "Unable to parse the private key",
        "{key} is not a usable private key: run `fedmi-site keygen` and register the new site.pub",
    ),
)


class JoinError(RuntimeError):
    """The SuperNode cannot be started; the message names the file or setting and the fix."""


def split_address(address: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[v6]:PORT`` too) → (host, port), or :class:`JoinError`."""
    host, sep, port = address.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise JoinError(
            f"--superlink {address!r}: give the coordinator as HOST:PORT, e.g. "
            "coordinator.example.org:8000"
        )
    return host, int(port)


def probe_tls(host: str, port: int, ca: Path, timeout: float = 5.0) -> str | None:
    """Try a TLS handshake with the coordinator using ``ca``.

    Returns
    -------
    str or None
        ``None`` when the handshake succeeds or the coordinator is not reachable yet (the
        SuperNode keeps retrying); otherwise why TLS refuses it (wrong CA, wrong name).
    """
    ctx = ssl.create_default_context(cafile=str(ca))
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            with ctx.wrap_socket(sock, server_hostname=host):
                return None
    except ssl.SSLCertVerificationError as exc:
        detail = exc.verify_message or str(exc)
        if "mismatch" in detail.lower() or "hostname" in detail.lower():
            return (
                f"the coordinator's certificate does not name {host}: use the address in the "
                "certificate, or ask the coordinator to run `fedmi-server certs --address "
                f"{host}`"
            )
        return (
            f"the coordinator's certificate is not signed by {ca} ({detail}): ask the "
            "coordinator for the current ca.crt"
        )
    except ssl.SSLError as exc:
        return f"TLS with {host}:{port} failed ({exc.reason}): is that the fedmi SuperLink's port?"
    except OSError:
        return None


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _config_value(path: Path, what: str) -> str:
    text = str(path)
    if '"' in text or " " in text:
        raise JoinError(f"{what} {text}: choose a folder without quotes or spaces in its path")
    return f'"{text}"'


#: node-config keys ``join`` sets itself from its options
_JOIN_KEYS = {"data-dir": "--site-dir", "state-dir": "--state-dir", "role": "--role"}


def extra_node_config(text: str) -> dict[str, object]:
    """``--node-config`` entries (Flower's ``key=value`` syntax) parsed and validated.

    Raises
    ------
    SiteConfigError
        Not Flower's syntax, an unknown key (with the close match), a bad value, or a key
        that ``join`` sets from its own options.
    """
    values = flower_pairs(text, "--node-config", SiteConfigError)
    for key, option in _JOIN_KEYS.items():
        if key in values:
            raise SiteConfigError(
                f"--node-config: `{key}` is set by join from {option}; remove it from --node-config"
            )
    return node_settings(values)


def supernode_command(
    superlink: str,
    ca: Path,
    key: Path,
    site_dir: Path,
    state_dir: Path,
    *,
    role: str | None = None,
    port: int = 9094,
    node_config: str = "",
) -> list[str]:
    """The ``flower-supernode`` command line of this site (run through
    :mod:`fedmi.client.deploy.supernode`, which shortens its idle poll)."""
    items = [
        f"data-dir={_config_value(site_dir, '--site-dir')}",
        f"state-dir={_config_value(state_dir, '--state-dir')}",
    ]
    if role:
        items.append(f'role="{role}"')
    if node_config.strip():
        items.append(node_config.strip())
    # Flower's SuperNode through fedmi's launcher: the same arguments, a shorter idle poll
    return [
        sys.executable,
        "-m",
        "fedmi.client.deploy.supernode",
        "--superlink",
        superlink,
        "--root-certificates",
        str(ca),
        "--auth-supernode-private-key",
        str(key),
        "--port",
        str(port),
        # no app process of Flower's: fedmi's pinned worker is the only one
        "--isolation",
        "process",
        "--node-config",
        " ".join(items),
    ]


def validate_join(args: argparse.Namespace) -> list[str]:
    """Check every input of ``join``; returns the SuperNode command or raises."""
    host, port = split_address(args.superlink)
    ca = Path(args.ca).expanduser().resolve()
    key = Path(args.key).expanduser().resolve()
    site_dir = Path(args.site_dir).expanduser().resolve()
    state_dir = Path(args.state_dir).expanduser().resolve()
    check_ca_certificate(ca)
    check_private_key(key)
    if not site_dir.is_dir():
        raise JoinError(
            f"--site-dir {site_dir} does not exist: give the site folder (dicom/, labels.csv, site.toml)"
        )
    if not (site_dir / "site.toml").is_file():
        raise JoinError(
            f"{site_dir / 'site.toml'} not found: write its [site] table (site-id, role, task)"
        )
    if args.role and args.role not in ROLES:
        raise JoinError(f"--role {args.role!r}: use one of {', '.join(ROLES)}")
    toml = load_site_config(site_dir)
    extra = extra_node_config(args.node_config or "")
    _check_site_settings(site_dir, state_dir, args.role, extra)
    if args.role and args.role != toml.role:
        print(
            f"fedmi-site join: --role {args.role} overrides role {toml.role!r} of site.toml",
            file=sys.stderr,
        )
    try:
        state_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise JoinError(f"--state-dir {state_dir} cannot be created ({exc.strerror})") from None
    if not os.access(state_dir, os.W_OK):
        raise JoinError(f"--state-dir {state_dir} is not writable by this user")
    if not _port_free(args.port):
        raise JoinError(f"local port {args.port} is in use (another SuperNode?): pass --port N")
    problem = probe_tls(host, port, ca)
    if problem:
        raise JoinError(problem)
    return supernode_command(
        args.superlink,
        ca,
        key,
        site_dir,
        state_dir,
        role=args.role,
        port=args.port,
        node_config=args.node_config or "",
    )


def _check_site_settings(
    site_dir: Path, state_dir: Path, role: str | None, extra: dict[str, object]
) -> None:
    """Resolve the site and its privacy settings exactly as the SuperNode's ClientApp will."""
    node_config = {"data-dir": str(site_dir), "state-dir": str(state_dir), **extra}
    if role:
        node_config["role"] = role
    site = resolve_site(node_config, {})
    resolve_privacy(site, node_config, {})
    if not (site.cache_dir / REPORT_FILE).is_file():
        # ingest is an explicit step: the SuperNode never starts one on a message
        raise JoinError(
            f"this site has not ingested its DICOM into {site.cache_dir}: run `fedmi-site "
            f"check --site-dir {site_dir} --task TASK --state-dir {state_dir}` (or "
            "`fedmi-site ingest ... --state-dir`) first, then join"
        )


def diagnose(log_text: str, args: argparse.Namespace) -> str | None:
    """One actionable line for a SuperNode that stopped, from its log."""
    for needle, message in _DIAGNOSES:
        if needle in log_text:
            return message.format(pub=f"{args.key}.pub", ca=args.ca, key=args.key)
    return None


def _stop_group(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    for _ in range(50):
        try:
            os.killpg(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.2)
    try:
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _cmd_join(args: argparse.Namespace) -> int:
    try:
        cmd = validate_join(args)
    except (JoinError, KeyFileError, SiteConfigError) as exc:
        print(f"fedmi-site join: {exc}", file=sys.stderr)
        return 2
    state_dir = Path(args.state_dir).expanduser().resolve()
    log_path, pid_path = state_dir / LOG_FILE, state_dir / PID_FILE
    env = {**os.environ, **QUIET_ENV}
    with open(log_path, "ab") as logf:
        start = logf.tell()
        proc = subprocess.Popen(
            cmd,
            stdout=logf,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            start_new_session=True,
        )
    pid_path.write_text(f"{proc.pid}\n")
    # wait until the coordinator accepted the site, or the SuperNode gave up
    deadline = time.monotonic() + args.wait
    connected = False
    while time.monotonic() < deadline and proc.poll() is None:
        text = _read_from(log_path, start)
        if "SuperNode ID" in text:
            connected = True
            break
        time.sleep(0.5)
    if proc.poll() is not None:
        pid_path.unlink(missing_ok=True)
        text = _read_from(log_path, start)
        reason = (
            diagnose(text, args)
            or f"the SuperNode stopped (exit {proc.returncode}): see {log_path}"
        )
        print(f"fedmi-site join: {reason}", file=sys.stderr)
        return 3
    worker = _start_worker(args, state_dir, proc.pid)
    state = "connected to" if connected else "still connecting to"
    print(
        f"SuperNode (PID {proc.pid}) {state} {args.superlink}, site worker (PID {worker.pid}); "
        f"logs: {log_path}, {state_dir / WORKER_LOG_FILE}"
    )
    if args.background:
        return 0
    return _foreground(proc, worker, state_dir, log_path, start, args)


def worker_command(port: int, state_dir: Path, supernode_pid: int, site_dir: Path) -> list[str]:
    """The command of the site's one app process (:mod:`fedmi.client.deploy.worker`)."""
    return [
        sys.executable,
        "-m",
        "fedmi.client.deploy.worker",
        "--runtime-api",
        f"127.0.0.1:{port}",
        "--state-dir",
        str(state_dir),
        "--supernode-pid",
        str(supernode_pid),
        "--site-dir",
        str(site_dir),
    ]


def _start_worker(args: argparse.Namespace, state_dir: Path, supernode: int) -> subprocess.Popen:
    """Start the site's one app process (:func:`worker_command`)."""
    site_dir = Path(args.site_dir).expanduser().resolve()
    cmd = worker_command(args.port, state_dir, supernode, site_dir)
    with open(state_dir / WORKER_LOG_FILE, "ab") as logf:
        worker = subprocess.Popen(
            cmd,
            stdout=logf,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env={**os.environ, **QUIET_ENV},
            start_new_session=True,
        )
    (state_dir / WORKER_PID_FILE).write_text(f"{worker.pid}\n")
    return worker


def _foreground(
    proc: subprocess.Popen,
    worker: subprocess.Popen,
    state_dir: Path,
    log_path: Path,
    start: int,
    args: argparse.Namespace,
) -> int:
    """Wait for the SuperNode; SIGTERM/SIGINT (or either process ending) stops both."""
    stopping = {"signal": 0}

    def _on_signal(signum: int, _frame: object) -> None:
        stopping["signal"] = signum

    previous = {s: signal.signal(s, _on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        while not stopping["signal"] and proc.poll() is None and worker.poll() is None:
            time.sleep(0.3)
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        for p in (worker, proc):
            _stop_group(p.pid)
            p.wait()
        (state_dir / PID_FILE).unlink(missing_ok=True)
        (state_dir / WORKER_PID_FILE).unlink(missing_ok=True)
    if stopping["signal"]:
        return 128 + stopping["signal"]
    code = proc.returncode
    if code not in (0, -signal.SIGTERM):
        reason = diagnose(_read_from(log_path, start), args)
        print(
            f"fedmi-site join: {reason or f'the SuperNode stopped (exit {code})'}", file=sys.stderr
        )
    return code


def _cmd_approve(args: argparse.Namespace) -> int:
    from fedmi.shared.trust import TrustError, approve, installed_fab_hash

    try:
        digest = approve(Path(args.state_dir), args.app)
    except TrustError as exc:
        print(f"fedmi-site approve: {exc}", file=sys.stderr)
        return 2
    print(f"approved app {digest} for {Path(args.state_dir).resolve()}")
    print(f"(the installed fedmi, {installed_fab_hash()}, is always approved)")
    return 0


def add_approve(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("approve", help="allow one more app (FAB file or SHA-256) to run here")
    p.add_argument("app", help="a .fab file or its SHA-256 (64 hex digits)")
    p.add_argument("--state-dir", type=Path, required=True, help="the state folder of join")
    p.set_defaults(handler=_cmd_approve)


def _read_from(path: Path, offset: int) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(offset)
            return f.read().decode(errors="replace")
    except OSError:
        return ""


def _cmd_keygen(args: argparse.Namespace) -> int:
    try:
        private, public = generate_site_key(Path(args.out), overwrite=args.overwrite)
    except KeyFileError as exc:
        print(f"fedmi-site keygen: {exc}", file=sys.stderr)
        return 2
    print(f"private key {private} (mode 0600; never leaves this machine)")
    print(f"public key  {public} (send this file to the coordinator)")
    print(
        f"fingerprint {key_fingerprint(public.read_text())} (read it to the coordinator by "
        "telephone when they register the key)"
    )
    return 0


def add_keygen(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("keygen", help="create the site's authentication key pair (ECDSA P-384)")
    p.add_argument("--out", type=Path, required=True, help="folder for site and site.pub")
    p.add_argument("--overwrite", action="store_true", help="replace an existing key")
    p.set_defaults(handler=_cmd_keygen)


def add_join(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "join",
        help="connect this site to the coordinator (starts a Flower SuperNode)",
        description=__doc__.split("\n\n")[1] if __doc__ else None,
    )
    p.add_argument("--superlink", required=True, help="coordinator address HOST:PORT")
    p.add_argument("--ca", type=Path, required=True, help="the coordinator's ca.crt")
    p.add_argument("--key", type=Path, required=True, help="private key from keygen (DIR/site)")
    p.add_argument(
        "--site-dir", type=Path, required=True, help="site folder (dicom/, labels.csv, site.toml)"
    )
    p.add_argument("--state-dir", type=Path, required=True, help="cache, ledger, logs, PID file")
    p.add_argument("--role", choices=ROLES, help="override site.toml's role")
    p.add_argument("--port", type=int, default=9094, help="local SuperNode port (default 9094)")
    p.add_argument(
        "--node-config",
        default="",
        help="extra node-config entries, e.g. 'epsilon=3.0 dp=\"on\"' "
        "(keys: docs/configuration.md)",
    )
    p.add_argument("--background", action="store_true", help="detach (PID file in --state-dir)")
    p.add_argument(
        "--wait", type=float, default=30.0, help="seconds to wait for the coordinator's answer"
    )
    p.set_defaults(handler=_cmd_join)
