"""The main job and its baselines, measured: wall time, peak memory, Flower overhead, AUCs.

    python -m benchmarks.bench_main_job --out /tmp/fedmi-bench [--task fdg-ad] [--seeds 0]

1. ``fedmi-sim run`` from nothing (generate the default preset, ingest, train, validate):
   wall time and peak memory of the whole process tree (Ray workers included), sampled
   from /proc every 0.2 s.
2. Flower overhead on that data: (federated wall time − summed client compute time) /
   federated wall time, after Ray start-up. Summed client compute is the sum of every
   train and evaluate reply's ``compute-seconds`` (and, as a second figure, of their
   ``site-seconds``: the whole instruction at the site); it is only meaningful when
   clients run one at a time, so the overhead runs use ``--serial`` (one ClientApp at a
   time) and k = 1 (no evaluation suppressed, so every evaluation's time is counted).
3. Federated vs pooled vs local external (holdout) AUC on the same data, splits and seeds.

Prints one JSON document. Timings on a shared 2-core machine are noisy: compare ratios
from one run, never absolute seconds across machines.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path


def _tree_rss_bytes(root_pid: int) -> int:
    """Resident memory of a process and all its descendants (Linux /proc)."""
    children: dict[int, list[int]] = {}
    rss: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as fh:
                parts = fh.read().rsplit(")", 1)[1].split()
            ppid, pages = int(parts[1]), int(parts[21])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(entry))
        rss[int(entry)] = pages * os.sysconf("SC_PAGE_SIZE")
    total, stack = 0, [root_pid]
    while stack:
        pid = stack.pop()
        total += rss.get(pid, 0)
        stack.extend(children.get(pid, []))
    return total


def run_measured(cmd: list[str], log: Path) -> dict[str, float]:
    """Run ``cmd``; return wall seconds and peak tree RSS in GB."""
    peak = [0]
    with log.open("w") as fh:
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, start_new_session=True)
        done = threading.Event()

        def sample() -> None:
            while not done.is_set():
                peak[0] = max(peak[0], _tree_rss_bytes(proc.pid))
                time.sleep(0.2)

        th = threading.Thread(target=sample, daemon=True)
        th.start()
        rc = proc.wait()
        done.set()
        th.join()
        wall = time.perf_counter() - t0
    if rc != 0:
        raise SystemExit(f"{' '.join(cmd)} failed (rc {rc}); see {log}")
    return {"wall_seconds": round(wall, 1), "peak_memory_gb": round(peak[0] / 1e9, 2)}


def holdout_auc(report: dict) -> float | None:
    """The holdout sites' AUC: the site-computed exact AUC when there is one holdout."""
    rows = [r for r in report["final"]["per_site"] if r["role"] == "holdout"]
    if len(rows) == 1 and rows[0].get("auc") is not None:
        return rows[0]["auc"]
    pooled = report["final"]["pooled"].get("holdout")
    return pooled["auc_histogram"] if pooled else None


def flower_overhead(report: dict) -> dict[str, float]:
    """Overhead of a serial run's training rounds, two ways.

    ``overhead_fraction``: (wall − summed client compute) / wall, compute being the
    training loops and evaluation scoring (``compute-seconds``): everything else, fedmi's
    own per-message work at the sites included, counts as overhead.
    ``flower_fraction``: (wall − summed site time) / wall, site time being the whole
    instruction at the site (``site-seconds``): what Flower's engine, messaging and the
    coordinator add.
    """
    compute = site = 0.0
    for rnd in report["rounds"]:
        for v in rnd["train"].values():
            compute += float(v.get("compute-seconds", 0.0))
            site += float(v.get("site-seconds", 0.0))
        for v in rnd["evaluate"].values():
            compute += float(v.get("compute_seconds", 0.0))
            site += float(v.get("site_seconds", 0.0))
    wall = float(report["timing"]["training_seconds"])
    return {
        "federated_wall_seconds": round(wall, 2),
        "summed_client_compute_seconds": round(compute, 2),
        "summed_site_seconds": round(site, 2),
        "overhead_fraction": round((wall - compute) / wall, 3),
        "flower_fraction": round((wall - site) / wall, 3),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True)
    p.add_argument("--task", default="fdg-ad")
    p.add_argument("--seeds", default="0", help="comma-separated seeds for the method comparison")
    p.add_argument("--skip-main", action="store_true", help="reuse OUT/main from an earlier run")
    args = p.parse_args(argv)
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    sim = [sys.executable, "-m", "fedmi.simulations.cli"]
    result: dict[str, object] = {"task": args.task}

    main_dir = out / "main"
    if not args.skip_main:
        result["main_job"] = run_measured(
            [*sim, "run", "--task", args.task, "--out", str(main_dir)], out / "main.log"
        )
    report = json.loads((main_dir / "report.json").read_text())
    result["main_job_holdout_auc"] = holdout_auc(report)
    data = main_dir / "data"

    # Later runs on the same data leave DP off (the comparison is about federation, and a
    # DP run would find the main job's privacy budget spent: it belongs to the dataset).
    # Overhead: both models, one ClientApp at a time.
    overhead = {}
    for arch, rounds in (("regional", 6), ("cnn", 10)):
        serial = out / f"serial-{arch}"
        cmd = [*sim, "run", "--data", str(data), "--task", args.task, "--out", str(serial)]
        cmd += ["--serial", "--rounds", str(rounds), "--config", f"model={arch}"]
        cmd += ["--local-epochs", "2" if arch == "cnn" else "0"]  # 0: the model's default
        cmd += ["--config", "sim-default-dp=off", "--min-cell-count", "1"]
        run_measured(cmd, out / f"serial-{arch}.log")
        overhead[arch] = flower_overhead(json.loads((serial / "report.json").read_text()))
    result["flower_overhead_serial"] = overhead

    comparison: dict[str, list[float | None]] = {}
    for seed in [int(s) for s in args.seeds.split(",")]:
        for method in ("fedavg", "pooled", "local"):
            d = out / f"{method}-seed{seed}"
            cmd = [*sim, "run", "--data", str(data), "--task", args.task, "--out", str(d)]
            cmd += ["--method", method, "--seed", str(seed), "--config", "sim-default-dp=off"]
            cmd += ["--min-cell-count", "5"]
            run_measured(cmd, out / f"{method}-{seed}.log")
            report = json.loads((d / "report.json").read_text())
            comparison.setdefault(method, []).append(holdout_auc(report))
    result["holdout_auc_by_method"] = comparison
    print(json.dumps(result, indent=2))
    (out / "bench_main_job.json").write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
