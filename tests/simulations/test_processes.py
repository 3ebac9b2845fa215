"""Every process a run starts is stopped: at the end, on failure and on Ctrl-C."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import uuid

import pytest

from fedmi.simulations.processes import MARK_VARIABLE, marked_processes, run_isolated, stop_marked


def _sleep_forever_with_children(payload: dict) -> None:
    # a grandchild in its own session, like Ray's servers
    subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"], start_new_session=True)
    if payload.get("fail"):
        raise SystemExit(3)
    time.sleep(payload.get("sleep", 0))


def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def test_stop_marked_kills_processes_in_other_sessions():
    mark = uuid.uuid4().hex
    env = dict(os.environ, **{MARK_VARIABLE: mark})
    p = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(600)"], env=env, start_new_session=True
    )
    try:
        assert marked_processes(mark) == [p.pid]
        assert stop_marked(mark, grace=5) == 0
        assert p.wait(5) == -signal.SIGTERM
    finally:
        if p.poll() is None:
            p.kill()


def test_run_isolated_leaves_nothing_behind_on_success_and_failure():
    before = {pid for pid in os.listdir("/proc") if pid.isdigit()}
    run_isolated(_sleep_forever_with_children, {"sleep": 0})
    with pytest.raises(RuntimeError, match="exit code 3"):
        run_isolated(_sleep_forever_with_children, {"fail": True})
    time.sleep(0.5)
    survivors = []
    for pid in {p for p in os.listdir("/proc") if p.isdigit()} - before:
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as fh:
                if b"time.sleep(600)" in fh.read():
                    survivors.append(pid)
        except OSError:
            pass
    assert survivors == []


@pytest.mark.slow
def test_ctrl_c_stops_a_running_federation(tiny_fdg, tmp_path):
    mark = uuid.uuid4().hex
    env = dict(os.environ, FEDMI_TEST_MARK=mark)
    cmd = [
        sys.executable,
        "-m",
        "fedmi.simulations.cli",
        "run",
        "--data",
        str(tiny_fdg),
        "--out",
        str(tmp_path / "run"),
        "--rounds",
        "200",
    ]
    p = subprocess.Popen(
        cmd,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
        start_new_session=True,
        # Ctrl-C as at a terminal: a shell's background job (as CI may start pytest) ignores
        # SIGINT, its children inherit that, and Python then never raises KeyboardInterrupt
        preexec_fn=_default_sigint,
    )
    rest: list[str] = []
    try:
        deadline = time.monotonic() + 240
        for line in p.stdout:  # type: ignore[union-attr]
            if "round 1/200" in line or time.monotonic() > deadline:
                break
        # keep draining its output: a run blocked writing to a full pipe could never exit
        drain = threading.Thread(target=lambda: rest.extend(p.stdout), daemon=True)  # type: ignore[arg-type]
        drain.start()
        p.send_signal(signal.SIGINT)
        try:
            code = p.wait(180)  # a liveness bound (Ray shuts down slowly on a busy machine)
        except subprocess.TimeoutExpired:
            code = None
        assert code == 130, "the interrupted run did not exit 130; its last output:\n" + "".join(
            rest[-40:]
        )
    finally:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
    time.sleep(2)
    needle = f"FEDMI_TEST_MARK={mark}".encode()
    left = []
    for pid in (e for e in os.listdir("/proc") if e.isdigit()):
        try:
            with open(f"/proc/{pid}/environ", "rb") as fh:
                if needle in fh.read().split(b"\0"):
                    left.append(pid)
        except OSError:
            pass
    for pid in left:
        os.kill(int(pid), signal.SIGKILL)
    assert left == [], "processes of the interrupted run were left running"


def test_simulation_environment_is_quiet_and_loopback_only(monkeypatch):
    from fedmi.simulations.runner import quiet_environment

    for var in ("FLWR_TELEMETRY_ENABLED", "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"):
        monkeypatch.delenv(var, raising=False)
    quiet_environment()
    assert os.environ["FLWR_TELEMETRY_ENABLED"] == "0"
    assert os.environ["FLWR_DISABLE_UPDATE_CHECK"] == "1"
    # Ray's local-only mode: its servers bind 127.0.0.1 instead of the host's interface
    assert os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] == "0"
