"""Cost of DP-SGD: step time against plain training, and holdout AUC at several ε.

    python -m benchmarks.bench_dp step [--threads 1] [--batch 16] [--steps 12]
    python -m benchmarks.bench_dp auc --data /tmp/main/data --out /tmp/dp-bench \\
        [--eps 1 3 8 off] [--seeds 0 1 2] [--rounds 6] [--local-epochs 0]

``step``: median seconds per optimizer step of the default model on synthetic inputs,
plain (``train_local``'s loop) vs DP-SGD with each Opacus ``grad_sample_mode``.

``auc``: federated fedavg runs with the one-machine runner, every simulated site given
the same ε through ``sim-default-epsilon`` (sites whose site.toml has a ``[privacy]``
ε keep their own) or no DP (``sim-default-dp=off``). Each run gets a fresh ledger folder
(``sim-ledger-root``) under ``--out``, so the data folder is never written. Prints the
pooled holdout AUC per run and the mean per ε. Numbers for comparing changes, not a test.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
import warnings
from pathlib import Path

import torch
from torch import nn


def _step_times(mode: str, batch: int, steps: int, arch: str = "cnn") -> float:
    from opacus.grad_sample import GradSampleModule, GradSampleModuleExpandedWeights
    from opacus.optimizers import DPOptimizer

    from shared.model import ModelSpec, build_model

    torch.manual_seed(0)
    x = torch.randn(batch, 1, 40, 48, 40)
    y = (torch.rand(batch) > 0.5).float()
    model = build_model(ModelSpec(arch=arch))
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    net: nn.Module = model
    if mode != "plain":
        if mode == "ew":
            net = GradSampleModuleExpandedWeights(model, batch_first=True, loss_reduction="mean")
        else:
            net = GradSampleModule(model, force_functorch=(mode == "functorch"))
        opt = DPOptimizer(opt, noise_multiplier=1.0, max_grad_norm=1.0, expected_batch_size=batch)
    loss_fn = nn.BCEWithLogitsLoss()
    times = []
    for _ in range(steps + 2):
        t = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        loss_fn(net(x), y).backward()
        opt.step()
        times.append(time.perf_counter() - t)
    return statistics.median(times[2:])


def cmd_step(args: argparse.Namespace) -> None:
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore")
    report: dict[str, object] = {"threads": args.threads, "batch": args.batch}
    for arch in ("regional", "cnn"):
        out = {}
        for mode in ("plain", "ew", "functorch", "hooks", "plain"):
            # plain twice (the second overwrites the first): a drift check
            out[mode] = _step_times(mode, args.batch, args.steps, arch)
        report[arch] = {
            m: {"seconds": round(s, 4), "ratio": round(s / out["plain"], 2)} for m, s in out.items()
        }
    print(json.dumps(report, indent=2))


def cmd_auc(args: argparse.Namespace) -> None:
    from simulations.runner import run

    results: dict[str, list[float]] = {}
    for seed in args.seeds:  # all ε for one seed first: a cut-short run still compares
        for eps in args.eps:
            name = f"eps-{eps}-seed-{seed}"
            out = Path(args.out) / name
            extra: dict[str, object] = {"sim-ledger-root": str((out / "ledgers").resolve())}
            if eps == "off":
                extra["sim-default-dp"] = "off"
            else:
                extra["sim-default-epsilon"] = float(eps)
            t = time.perf_counter()
            report = run(
                data_root=Path(args.data),
                task="fdg-ad",
                out_dir=out,
                rounds=args.rounds,
                method="fedavg",
                seed=seed,
                local_epochs=args.local_epochs,
                extra=extra,
            )
            # the holdout site's own exact AUC (its histogram AUC is merged to k cases a bin)
            holdouts = [r for r in report["final"]["per_site"] if r["role"] == "holdout"]
            auc = holdouts[0].get("auc_exact") if len(holdouts) == 1 else None
            if auc is None:
                auc = (report["final"]["pooled"]["holdout"] or {}).get("auc")
            sigmas = {
                p["site_id"]: p.get("noise_multiplier") for p in report["privacy"]["per_site"]
            }
            print(
                f"RESULT {name}: holdout AUC {auc}, σ {sigmas}, {time.perf_counter() - t:.0f} s",
                flush=True,
            )
            if auc is not None:
                results.setdefault(str(eps), []).append(float(auc))
    summary = {
        k: {"mean": round(statistics.mean(v), 4), "n": len(v), "aucs": [round(a, 4) for a in v]}
        for k, v in results.items()
    }
    print(json.dumps(summary, indent=2))
    (Path(args.out) / "summary.json").write_text(json.dumps(summary, indent=2))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("step")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--steps", type=int, default=12)
    p.set_defaults(func=cmd_step)
    p = sub.add_parser("auc")
    p.add_argument("--data", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--eps", nargs="+", default=["1", "3", "8", "off"])
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--rounds", type=int, default=6)
    p.add_argument("--local-epochs", type=int, default=0, help="0: the model's default")
    p.set_defaults(func=cmd_auc)
    args = parser.parse_args()
    args.func(args)


if __name__ == "__main__":
    main()
