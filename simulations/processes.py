"""Run work in a child process and stop everything it started, also on Ctrl-C.

Ray, which Flower's simulation engine uses, starts its servers in new sessions, so
killing a process group misses them. Every process started for a run therefore carries a
marker in its environment (:data:`MARK_VARIABLE`, inherited by every descendant, Ray's
daemons included); when the run ends, fails or is interrupted, all processes carrying the
marker are terminated, then killed (Linux ``/proc``).
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import os
import signal
import time
import uuid
from collections.abc import Callable

log = logging.getLogger(__name__)

MARK_VARIABLE = "FEDMI_RUN_MARK"


def marked_processes(mark: str) -> list[int]:
    """PIDs of processes (other than this one) whose environment carries ``mark``."""
    needle = f"{MARK_VARIABLE}={mark}".encode()
    found = []
    for entry in os.listdir("/proc") if os.path.isdir("/proc") else []:
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            with open(f"/proc/{entry}/environ", "rb") as fh:
                if needle in fh.read().split(b"\0"):
                    found.append(int(entry))
        except OSError:
            continue
    return found


def stop_marked(mark: str, grace: float = 5.0) -> int:
    """SIGTERM every marked process, then SIGKILL what is left after ``grace`` seconds."""
    pids = marked_processes(mark)
    for pid in pids:
        _signal(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while pids and time.monotonic() < deadline:
        time.sleep(0.2)
        pids = marked_processes(mark)
    for pid in pids:
        _signal(pid, signal.SIGKILL)
    return len(pids)


def _signal(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _child(target: Callable[[dict], None], payload: dict) -> None:
    # The parent handles Ctrl-C; the child is stopped by the parent.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    target(payload)


def run_isolated(target: Callable[[dict], None], payload: dict) -> None:
    """Run ``target(payload)`` in a spawned child; stop every marked descendant afterwards.

    Raises
    ------
    RuntimeError
        If the child exits with a non-zero code.
    KeyboardInterrupt
        Re-raised after cleaning up when the user interrupts.
    """
    mark = uuid.uuid4().hex
    previous = os.environ.get(MARK_VARIABLE)
    os.environ[MARK_VARIABLE] = mark
    ctx = mp.get_context("spawn")
    proc = ctx.Process(target=_child, args=(target, payload), name="fedmi-simulation")
    try:
        proc.start()
    finally:
        if previous is None:
            os.environ.pop(MARK_VARIABLE, None)
        else:
            os.environ[MARK_VARIABLE] = previous
    try:
        proc.join()
    except KeyboardInterrupt:
        log.warning("interrupted: stopping the simulation and every process it started")
        proc.terminate()
        proc.join(10)
        if proc.is_alive():
            proc.kill()
            proc.join(5)
        raise
    finally:
        left = stop_marked(mark)
        if left:
            log.info("stopped %d leftover process(es) of the run", left)
    if proc.exitcode != 0:
        raise RuntimeError(
            f"the simulation process failed (exit code {proc.exitcode}); see the log above"
        )
