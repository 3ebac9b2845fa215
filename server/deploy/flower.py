"""Flower's command line as fedmi uses it: a quiet environment, the connection, the commands.

Every Flower process fedmi starts runs with telemetry and update checks off
(:func:`flower_env`). :func:`write_connection` records the SuperLink in
``$FLWR_HOME/config.toml`` (entry ``[superlink.fedmi]``) so that ``flwr`` (and
``fedmi-server register / run / status``) reach it; :func:`flwr` runs the ``flwr`` command line
and the functions below it wrap the subcommands fedmi uses.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib  # type: ignore[no-redef]

#: the ``flwr`` connection fedmi writes (``[superlink.fedmi]``) and its commands use
CONNECTION = "fedmi"
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


def unregister_node(node_id: int, connection: str = CONNECTION) -> None:
    """``flwr supernode unregister``: the node's key may no longer connect."""
    _json_output(
        flwr(["supernode", "unregister", str(node_id), connection, "--format", "json"]),
        f"unregistering node {node_id}",
    )


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
    """The fedmi Flower app (the folder holding fedmi's pyproject.toml).

    That is the checkout the package was installed from: this file is
    ``<checkout>/server/deploy/flower.py``.
    """
    root = Path(__file__).resolve().parents[2]
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
