"""Robust aggregation against one malicious training site: holdout AUC, clean and attacked.

Runs the federation in ``--data`` (ingested up front, DP off unless ``--dp``) clean, then
with each attack of :mod:`fedmi.simulations.malicious` played by the largest training site
and by the smallest, through the real ClientApps and the real ServerApp flow. Prints the
pooled holdout AUC of each run and how many of the attacker's updates the report names.

    python3 -m benchmarks.bench_robust --data D [--rounds 6] [--out O] [--config k=v ...]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path


def _value(text: str) -> object:
    try:
        return float(text) if "." in text else int(text)
    except ValueError:
        return text


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", type=Path, required=True)
    p.add_argument("--task", default="fdg-ad")
    p.add_argument("--rounds", type=int, default=6)
    p.add_argument("--out", type=Path, default=None)
    p.add_argument("--dp", action="store_true", help="keep the sites' default DP on")
    p.add_argument("--attacks", default=None, help="comma-separated (default: all)")
    p.add_argument("--config", nargs="*", default=[], help="run-config key=value")
    args = p.parse_args(argv)

    from fedmi.shared.run_config import RunConfig
    from fedmi.simulations.malicious import ATTACKS, holdout_auc, run_attacked
    from fedmi.simulations.runner import ingest_all, site_settings

    out = args.out or Path(tempfile.mkdtemp(prefix="bench-robust-"))
    keys: dict[str, object] = {} if args.dp else {"sim-default-dp": "off"}
    data = args.data.resolve()
    ingest_all(site_settings(data, out / "ingest", keys), args.task)
    extra = {k: _value(v) for k, v in (kv.split("=", 1) for kv in args.config)}

    def run(name: str, attack: str | None, attacker: str | None) -> dict:
        cfg = RunConfig.from_mapping(
            {
                "task": args.task,
                "num-server-rounds": args.rounds,
                "node-wait": 0,
                "out-dir": str(out / name),
                **extra,
            }
        )
        return run_attacked(cfg, data, out / name, attack=attack, attacker=attacker, site_keys=keys)

    t = time.perf_counter()
    clean = run("clean", None, None)
    sizes = {s["site_id"]: s["num_train"] for s in clean["sites"] if s["role"] == "train"}
    largest, smallest = max(sizes, key=sizes.get), min(sizes, key=sizes.get)
    base = holdout_auc(clean)
    print(f"training sites (train scans): {sizes}; settings: {clean['robustness']['settings']}")
    print(f"{'attack':<12}{'attacker':<16}{'holdout AUC':>12}{'Δ':>8}{'named':>8}{'s':>7}")
    print(f"{'none':<12}{'—':<16}{base:>12.3f}{0:>8.3f}{0:>8}{time.perf_counter() - t:>7.1f}")
    attacks = args.attacks.split(",") if args.attacks else ATTACKS
    for attack in attacks:
        for who, site in (("largest", largest), ("smallest", smallest)):
            t = time.perf_counter()
            rep = run(f"{attack}-{site}", attack, site)
            auc = holdout_auc(rep)
            named = sum(1 for c in rep["robustness"]["changed"] if c["site_id"] == site)
            print(
                f"{attack:<12}{f'{site} ({who})':<16}{auc:>12.3f}{auc - base:>8.3f}"
                f"{named:>8}{time.perf_counter() - t:>7.1f}",
                flush=True,
            )
    print(f"runs in {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
