"""Processes and ports on this machine: is a PID alive, is a port open, stop a process tree.

Used by :mod:`fedmi.server.deploy.superlink` to start and stop the SuperLink (whose SuperExec
and ServerApp run in sessions of their own).
"""

from __future__ import annotations

import os
import signal
import socket
import time
from pathlib import Path


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
