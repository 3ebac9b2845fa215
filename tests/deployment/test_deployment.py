"""A real deployment on loopback: TLS SuperLink, authenticated SuperNodes, dropout, restart.

Everything runs as separate processes through fedmi's own tools (``fedmi-server certs /
start / register / run / status``, ``fedmi-site keygen / join``) on free 127.0.0.1 ports,
with ``FLWR_HOME`` in the test's temporary folder:

1. a CA and SuperLink certificate; the SuperLink with TLS and SuperNode authentication;
2. three registered sites join (site-a, site-b train; site-c holdout); an unregistered key
   and a site holding another federation's CA are refused with one clear line each;
3. run 1 (2 rounds) is started and the coordinator (SuperLink and ServerApp) is SIGKILLed
   as soon as round 1 is saved;
4. the SuperLink is restarted on the same state and the same run folder is run again: it
   resumes at round 2; site-b's SuperNode is SIGKILLed when round 2's train message reaches
   it; the run completes and the report lists site-b as missing in round 2.

Every process is started in its own session and killed by process group in the finalizer,
also when the test fails.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import stat
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from fedmi.server.deploy.processes import descendants, pid_alive

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]


def _free_ports(n: int) -> list[int]:
    socks = []
    for _ in range(n):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        socks.append(s)
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def _kill_group(pid: int) -> None:
    """SIGKILL ``pid``'s process group and every descendant (a crash, not a shutdown).

    Flower's SuperLink runs its SuperExec (and so the ServerApp) in a session of its own.
    """
    if pid <= 0:
        return
    for p in [pid, *descendants(pid)]:
        for kill in (os.killpg, os.kill):
            try:
                kill(p, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass


def _pid(path: Path) -> int | None:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None


class Deployment:
    """Runs fedmi's CLIs with a private FLWR_HOME and remembers every process group."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.env = {
            **os.environ,
            "FLWR_HOME": str(tmp / "flwr-home"),
            "FLWR_TELEMETRY_ENABLED": "0",
            "FLWR_DISABLE_UPDATE_CHECK": "1",
            # this checkout's code first (a worktree's shim), then the checkout itself
            "PYTHONPATH": os.pathsep.join(
                x for x in (os.environ.get("PYTHONPATH", ""), str(ROOT)) if x
            ),
        }
        self.groups: list[int] = []
        self.pid_files: list[Path] = []

    def cli(self, side: str, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
        module = "fedmi.server.cli" if side == "server" else "fedmi.client.cli"
        return subprocess.run(
            [sys.executable, "-m", module, *args],
            cwd=ROOT,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def spawn(self, *args: str) -> tuple[subprocess.Popen, list[str]]:
        """``fedmi-server`` in the background, its output collected line by line."""
        proc = subprocess.Popen(
            [sys.executable, "-m", "fedmi.server.cli", *args],
            cwd=ROOT,
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        self.groups.append(proc.pid)
        lines: list[str] = []

        def pump() -> None:
            for line in proc.stdout:  # type: ignore[union-attr]
                lines.append(line)

        threading.Thread(target=pump, daemon=True).start()
        return proc, lines

    def stop_all(self) -> None:
        for path in self.pid_files:
            pid = _pid(path)
            if pid:
                _kill_group(pid)
        for pid in self.groups:
            _kill_group(pid)


@pytest.fixture
def deployment(tmp_path):
    dep = Deployment(tmp_path)
    yield dep
    dep.stop_all()


def _wait(predicate, timeout: float, what: str, poll: float = 0.5, context=None):
    """Poll ``predicate`` until it is true; on time-out fail with ``context()`` (the logs)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(poll)
    detail = f"\n{context()}" if context is not None else ""
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}{detail}")


def _tail(path: Path, n: int = 25) -> str:
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError as exc:
        return f"   ({exc.strerror})"
    return "\n".join(f"   {ln}" for ln in lines[-n:])


def _diagnosis(tmp_path: Path, state: Path, run_out: list[str]) -> str:
    """What a failed wait needs to be explained: every process, its log's end, the run's."""
    parts = ["--- the run's output (last 30 lines)", *(f"   {ln.rstrip()}" for ln in run_out[-30:])]
    for name in ("superlink", "front", "executor"):
        pid = _pid(state / f"{name}.pid")
        parts += [
            f"--- coordinator {name} (PID {pid}, alive {bool(pid) and pid_alive(pid)})",
            _tail(state / f"{name}.log"),
        ]
    for site in ("a", "b", "c"):
        folder = tmp_path / f"state-{site}"
        for proc, log in (("supernode", "supernode.log"), ("site", "site.log")):
            pid = _pid(folder / f"{proc}.pid")
            parts += [
                f"--- site-{site} {proc} (PID {pid}, alive {bool(pid) and pid_alive(pid)})",
                _tail(folder / log),
            ]
    return "\n".join(parts)


def _last_round(run_dir: Path) -> int:
    try:
        return int(json.loads((run_dir / "resume.json").read_text())["last_round"])
    except (OSError, ValueError, KeyError):
        return 0


def _one_line(stderr: str, needle: str) -> bool:
    """fedmi's diagnosis is one line (Flower's own output goes to the site's log file)."""
    lines = [ln for ln in stderr.splitlines() if ln.startswith("fedmi-site join:")]
    return len(lines) == 1 and needle in lines[0] and "Traceback" not in stderr


def _ok(proc: subprocess.CompletedProcess) -> str:
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


def test_tls_auth_dropout_and_resume(tiny_fdg: Path, deployment: Deployment, tmp_path: Path):
    t0 = time.monotonic()
    marks: list[tuple[str, float]] = []

    def mark(what: str) -> None:
        marks.append((what, time.monotonic() - t0))

    dep = deployment
    link_port, *site_ports = _free_ports(6)
    certs, state, run_dir = tmp_path / "certs", tmp_path / "coordinator", tmp_path / "run"
    address = f"127.0.0.1:{link_port}"

    sites = {"a": tiny_fdg / "site-a", "b": tiny_fdg / "site-b", "c": tiny_fdg / "site-c"}
    pool = ThreadPoolExecutor(max_workers=8)

    # --- sites, meanwhile: check (ingests into the SuperNode's cache) and keys --------------
    checks = {
        n: pool.submit(
            dep.cli,
            "client",
            "check",
            "--site-dir",
            str(d),
            "--task",
            "fdg-ad",
            "--state-dir",
            str(tmp_path / f"state-{n}"),
            timeout=300,
        )
        for n, d in sites.items()
    }
    # the unregistered site ingests too (join refuses a site that has not, before it
    # reaches the coordinator)
    ingest = ("ingest", "--site-dir", str(sites["a"]), "--task", "fdg-ad")
    ingest_x = pool.submit(
        dep.cli, "client", *ingest, "--state-dir", str(tmp_path / "state-x"), timeout=300
    )
    keys = {
        n: pool.submit(dep.cli, "client", "keygen", "--out", str(tmp_path / "keys" / n))
        for n in [*sites, "x"]
    }

    # --- coordinator: certificates and SuperLink --------------------------------------
    _ok(dep.cli("server", "certs", "--out", str(certs), "--address", "127.0.0.1"))
    for key in ("ca.key", "server.key"):
        assert stat.S_IMODE((certs / key).stat().st_mode) == 0o600
    coordinator = ("superlink.pid", "front.pid", "executor.pid")
    dep.pid_files += [state / name for name in coordinator]
    start = ("start", "--certs", str(certs), "--state", str(state), "--port", str(link_port))
    _ok(dep.cli("server", *start, "--background"))
    config = (tmp_path / "flwr-home" / "config.toml").read_text()
    # `flwr` (Control) reaches the SuperLink on its loopback port, never the sites' port
    info = json.loads((state / "superlink.json").read_text())
    assert info["public"] == address and info["address"] != address
    assert f'address = "{info["address"]}"' in config and "root-certificates" in config

    # --- registration and joining -------------------------------------------------------
    for name, fut in keys.items():
        _ok(fut.result())
        assert stat.S_IMODE((tmp_path / "keys" / name / "site").stat().st_mode) == 0o600
    for name in sites:
        pub = str(tmp_path / "keys" / name / "site.pub")
        out = _ok(dep.cli("server", "register", "--key", pub, "--site", f"site-{name}"))
        assert "registered" in out and "fingerprint SHA256:" in out
    for fut in checks.values():
        shown = _ok(fut.result())
        assert "labelled scans:" in shown and "scans per tracer:" in shown, shown

    def join(name: str, site_dir: Path, port: int, ca: Path = certs / "ca.crt"):
        state_dir = tmp_path / f"state-{name}"
        dep.pid_files += [state_dir / "supernode.pid", state_dir / "site.pid"]
        return dep.cli(
            "client",
            "join",
            "--superlink",
            address,
            "--ca",
            str(ca),
            "--key",
            str(tmp_path / "keys" / name / "site"),
            "--site-dir",
            str(site_dir),
            "--state-dir",
            str(state_dir),
            "--port",
            str(port),
            # DP-SGD off here: a DP site calibrates its noise to spend its whole budget over
            # the planned rounds, so a round charged just before the coordinator is killed
            # leaves nothing for the resumed run (correct, and tested in tests/client)
            "--node-config",
            'dp="off"',
            "--background",
        )

    mark("certificates, SuperLink, keys, registration, site checks (ingest)")
    joins = [
        pool.submit(join, n, d, port)
        for (n, d), port in zip(sites.items(), site_ports[:3], strict=True)
    ]
    for fut in joins:
        assert "connected" in _ok(fut.result())

    # --- outsiders: an unregistered key is refused ... --------------------------------
    _ok(ingest_x.result())
    refused = join("x", sites["a"], site_ports[3])
    assert refused.returncode != 0
    assert _one_line(refused.stderr, "register"), refused.stderr
    assert _pid(tmp_path / "state-x" / "supernode.pid") is None
    # ... and so is a site holding another federation's CA (checked before Flower starts)
    _ok(dep.cli("server", "certs", "--out", str(tmp_path / "other"), "--address", "127.0.0.1"))
    wrong = join("a", sites["a"], site_ports[4], ca=tmp_path / "other" / "ca.crt")
    assert wrong.returncode == 2
    assert _one_line(wrong.stderr, "not signed by"), wrong.stderr
    status = _ok(dep.cli("server", "status"))
    assert "3 registered, 3 online" in status, status
    pool.shutdown()
    mark("refusals checked")

    # --- run 1: the coordinator dies after round 1 -----------------------------------
    # (nothing else happens meanwhile: a deployed round takes a few seconds, and the kill
    # must come between the checkpoint of round 1 and the end of round 2)
    run_config = (
        "num-server-rounds=2 local-epochs=1 min-nodes=3 min-train-replies=1 "
        "round-timeout=30 validation-timeout=90 node-wait=120"
    )
    run = ("run", "--out", str(run_dir), "--run-config", run_config)
    run1, out1 = dep.spawn(*run)

    _wait(
        lambda: _last_round(run_dir) >= 1,
        240,
        "round 1 of run 1",
        poll=0.2,
        context=lambda: _diagnosis(tmp_path, state, out1),
    )
    mark("run 1 reached round 1")
    for name in coordinator:  # SuperLink, front, ServerApp launcher and ServerApp
        _kill_group(_pid(state / name) or 0)
    _kill_group(run1.pid)
    run1.wait(timeout=30)
    assert _last_round(run_dir) == 1, "the coordinator was killed too late"

    # --- run 2: restart, resume at round 2, site-b dies in round 2 -------------------
    _ok(dep.cli("server", *start, "--background"))
    run2, out2 = dep.spawn(*run)
    run_id = _wait(
        lambda: next(
            (m.group(1) for ln in out2 if (m := re.search(r"started run (\d+)", ln))), None
        ),
        60,
        "run 2 to start",
        context=lambda: _diagnosis(tmp_path, state, out2),
    )
    b_log = tmp_path / "state-b" / "supernode.log"

    def b_training() -> bool:
        text = b_log.read_text(errors="replace")
        at = text.find(f"[RUN {run_id}, ROUND 2]")
        return at >= 0 and "Receiving: train message" in text[at:]

    def b_training_or_run_over() -> bool:
        if b_training():
            return True
        if run2.poll() is not None:
            raise AssertionError(
                f"run 2 ended (exit {run2.returncode}) before site-b had round 2's train "
                f"message\n{_diagnosis(tmp_path, state, out2)}"
            )
        return False

    _wait(
        b_training_or_run_over,
        240,
        "round 2's train message at site-b",
        poll=0.2,
        context=lambda: _diagnosis(tmp_path, state, out2),
    )
    mark("restarted; run 2 sent round 2 to site-b")
    _kill_group(_pid(tmp_path / "state-b" / "supernode.pid") or 0)
    assert run2.wait(timeout=300) == 0, _diagnosis(tmp_path, state, out2)
    mark("run 2 finished")
    streamed = "".join(out2)
    assert "resuming after round 1 of 2" in streamed and "round 2/2:" in streamed, streamed[-3000:]

    # --- what the run folder says ---------------------------------------------------------
    report = json.loads((run_dir / "report.json").read_text())
    rounds = {r["round"]: r for r in report["rounds"]}
    assert sorted(rounds) == [1, 2]
    assert report["timing"]["resumed_after_round"] == 1
    assert {k for k, v in rounds[1]["train"].items() if v["status"] == "ok"} == {"site-a", "site-b"}
    assert not rounds[1]["missing"]
    missing2 = {(m["site_id"], m["stage"]) for m in rounds[2]["missing"]}
    assert ("site-b", "train") in missing2
    assert "site-b" not in rounds[2]["train"]
    assert rounds[2]["train"].get("site-a", {}).get("status") == "ok"
    assert (run_dir / "final_model.npz").exists()
    assert (run_dir / "checkpoints" / "round-002.npz").exists()
    # the restarted run never trained round 1 again
    a_log = (tmp_path / "state-a" / "supernode.log").read_text(errors="replace")
    assert f"[RUN {run_id}, ROUND 1]" not in a_log
    assert f"[RUN {run_id}, ROUND 2]" in a_log
    status = _ok(dep.cli("server", "status", "--out", str(run_dir)))
    assert "last completed round 2 (run finished)" in status
    assert "round 2: site-b missing (train" in status
    for what, at in marks:
        print(f"{at:6.0f} s  {what}")
