"""Deployed vs simulated seconds per round on the same federation (loopback).

    python -m benchmarks.bench_deployment --data /tmp/fed --out /tmp/bench-deploy [--rounds 2]

``--data`` is a federation from ``fedmi-sim generate`` (default preset for the figures in
the docs). It runs

1. ``fedmi-sim run --rounds R`` (Flower's simulation engine), and
2. the same rounds deployed with fedmi's own tools on 127.0.0.1 (``fedmi-server certs /
   start / register / run``, ``fedmi-site keygen / check / join`` for every site),

and prints one JSON document with ``training_seconds / R`` of each report (the rounds
only: Ray start-up, ingest and the final validation are not counted) and their
difference. Every process started is stopped by PID at the end. Timings on a shared
machine are noisy: compare the two figures from one run.

Measured on the shared 2-core machine, default preset (5 sites, 341 subjects), 2 rounds:
before issue 16 (a ``flwr-clientapp`` process per message) deployed 38.7 s/round vs
simulated 0.7; after (one long-lived site worker per site) deployed 10.6 vs simulated
2.6 s/round (whole deployed run 165 s → 42 s). Stop 26: the SuperNode through fedmi's
launcher (idle poll 0.5 s instead of Flower's 3 s, :mod:`fedmi.client.deploy.supernode`):
deployed 8.8 vs simulated 0.9 s/round (+7.9); with one torch thread per site worker, as the
simulation engine gives each ClientApp (this script since then): 7.8 vs 1.3 (+6.5). Stop 28
profiled it with the site worker's per-message timings (site.log): every hop of a message
met a part still being uploaded and waited Flower's 1 s first retry (the worker's pull of a
10 kB message took 0.9–1.2 s; ~3 s of fixed cost per exchange, two exchanges a round), and
the first DP round spent 4–5 s per site worker computing the regional head's template
centre, four workers at once on two cores. With the 50 ms first retry
(:mod:`fedmi.shared.transport`), the SuperNode's local waits capped at 20 ms and the
worker's warm-up: before 9.0 vs 2.5 s/round (+6.6), after 4.0 vs 1.7 and 3.9 vs 2.1 (+2.3,
+1.8) in two runs; the whole deployed run 55 s → 35 s.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path


def _free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def _per_round(report: dict, rounds: int) -> float:
    return float(report["timing"]["training_seconds"]) / rounds


def _kill_tree(pid: int) -> None:
    from fedmi.server.deploy.processes import stop_process_group

    stop_process_group(pid, timeout=10)


def simulated(data: Path, out: Path, rounds: int) -> float:
    cmd = ["fedmi-sim", "run", "--data", str(data), "--out", str(out), "--rounds", str(rounds)]
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    return _per_round(json.loads((out / "report.json").read_text()), rounds)


def deployed(data: Path, out: Path, rounds: int) -> float:
    env = {
        **os.environ,
        "FLWR_HOME": str(out / "flwr-home"),
        "FLWR_TELEMETRY_ENABLED": "0",
        "FLWR_DISABLE_UPDATE_CHECK": "1",
        # every site here shares one machine: one torch thread per site worker, as the
        # simulation engine gives each ClientApp (run config `client-threads`, default 1);
        # a hospital's site has its machine to itself
        "OMP_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
    }
    sites = sorted(p for p in data.iterdir() if (p / "site.toml").is_file())
    task = json.loads((data / "federation.json").read_text())["task"]
    link, *local = _free_ports(1 + len(sites))

    def cli(side: str, *args: str) -> str:
        module = "fedmi.server.cli" if side == "server" else "fedmi.client.cli"
        proc = subprocess.run(
            [sys.executable, "-m", module, *args], env=env, capture_output=True, text=True
        )
        if proc.returncode:
            raise RuntimeError(f"{side} {args[0]} failed: {proc.stdout}{proc.stderr}")
        return proc.stdout

    certs, state = out / "certs", out / "coordinator"
    pid_files = [state / "superlink.pid", state / "front.pid", state / "executor.pid"]
    try:
        cli("server", "certs", "--out", str(certs), "--address", "127.0.0.1")
        start = ("start", "--certs", str(certs), "--state", str(state), "--port", str(link))
        cli("server", *start, "--background")
        for i, site in enumerate(sites):
            keys, sstate = out / "keys" / site.name, out / f"state-{site.name}"
            cli("client", "keygen", "--out", str(keys))
            register = ["register", "--key", str(keys / "site.pub")]
            if "--site" in cli("server", "register", "--help"):
                register += ["--site", site.name]
            cli("server", *register)
            cli(
                "client",
                "check",
                "--site-dir",
                str(site),
                "--task",
                task,
                "--state-dir",
                str(sstate),
            )
            pid_files.append(sstate / "supernode.pid")
            pid_files.append(sstate / "site.pid")
            cli(
                "client", "join", "--superlink", f"127.0.0.1:{link}", "--ca",
                str(certs / "ca.crt"), "--key", str(keys / "site"), "--site-dir", str(site),
                "--state-dir", str(sstate), "--port", str(local[i]), "--background",
            )  # fmt: skip
        run_dir = out / "run"
        t0 = time.perf_counter()
        cli(
            "server", "run", "--out", str(run_dir), "--run-config",
            f"num-server-rounds={rounds} min-nodes={len(sites)}",
        )  # fmt: skip
        print(f"deployed run: {time.perf_counter() - t0:.0f} s wall", file=sys.stderr)
        return _per_round(json.loads((run_dir / "report.json").read_text()), rounds)
    finally:
        for path in pid_files:
            try:
                _kill_tree(int(path.read_text().strip()))
            except (OSError, ValueError):
                pass
        for path in pid_files:
            try:
                os.kill(int(path.read_text().strip()), signal.SIGKILL)
            except (OSError, ValueError):
                pass


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--skip-simulation", action="store_true")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    result: dict[str, object] = {"rounds": args.rounds, "data": str(args.data)}
    dep = deployed(args.data.resolve(), args.out / "deployed", args.rounds)
    result["deployed_seconds_per_round"] = round(dep, 1)
    if not args.skip_simulation:
        sim = simulated(args.data.resolve(), args.out / "simulated", args.rounds)
        result["simulated_seconds_per_round"] = round(sim, 1)
        result["difference"] = round(dep - sim, 1)
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
