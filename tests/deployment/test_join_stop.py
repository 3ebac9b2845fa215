"""Stopping a foreground ``fedmi-site join`` stops everything it started (by PID)."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

import pytest

from fedmi.server.deploy.processes import pid_alive

#: a child process importing the site tools (torch): multi-process, so slow
pytestmark = pytest.mark.slow

CHILD = """
import argparse, subprocess, sys
from pathlib import Path
from fedmi.client.deploy import join
state = Path(sys.argv[1])
procs = [subprocess.Popen(["sleep", "300"], start_new_session=True) for _ in range(2)]
print(" ".join(str(p.pid) for p in procs), flush=True)
code = join._foreground(procs[0], procs[1], state, state / "supernode.log", 0, argparse.Namespace())
print(code, flush=True)
"""


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_to_join_stops_the_supernode_and_the_worker(tmp_path, sig):
    for name in ("supernode.pid", "site.pid"):
        (tmp_path / name).write_text("1\n")
    proc = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(tmp_path)], stdout=subprocess.PIPE, text=True
    )
    try:
        pids = [int(p) for p in proc.stdout.readline().split()]
        assert len(pids) == 2 and all(pid_alive(p) for p in pids)
        time.sleep(0.5)
        proc.send_signal(sig)
        assert proc.wait(timeout=30) == 0
        assert int(proc.stdout.readline()) == 128 + sig
        assert not any(pid_alive(p) for p in pids)
        assert not (tmp_path / "supernode.pid").exists() and not (tmp_path / "site.pid").exists()
    finally:
        proc.kill()
        proc.wait()
