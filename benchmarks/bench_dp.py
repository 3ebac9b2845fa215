"""Cost of DP-SGD: step time against plain training, and holdout AUC at several ε.

    python -m benchmarks.bench_dp step [--threads 1] [--batch 16] [--steps 12] [--device cpu]
    python -m benchmarks.bench_dp auc --data /tmp/main/data --out /tmp/dp-bench \\
        [--eps 1 3 8 off] [--seeds 0 1 2] [--rounds 6] [--local-epochs 0]
    python -m benchmarks.bench_dp draws --data /tmp/main/data [--eps 8 off] [--draws 12]

``step``: median seconds per optimizer step of the default model on synthetic inputs,
plain (``train_local``'s loop) vs DP-SGD with each Opacus ``grad_sample_mode``, and each
mode's relative error of the clipped gradient sum against a per-sample autograd loop on
the same device (:func:`clipped_sum_error`).

``draws``: the same FedAvg without Flower, in one process (each training site runs the
project's own DP round with a real ledger), repeated ``--draws`` times per ε so that the
mean holdout AUC has a small standard error (one Flower run is one noise draw).

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


def _wrap(
    mode: str, model: nn.Module, opt: torch.optim.Optimizer, batch: int, clip: float, noise: float
):
    """``model`` and ``opt`` wrapped by Opacus for ``mode`` (``noise``: the noise multiplier)."""
    from opacus.grad_sample import GradSampleModule, GradSampleModuleExpandedWeights
    from opacus.optimizers import DPOptimizer

    if mode == "ew":
        net = GradSampleModuleExpandedWeights(model, batch_first=True, loss_reduction="mean")
    else:
        net = GradSampleModule(model, force_functorch=(mode == "functorch"))
    return net, DPOptimizer(
        opt, noise_multiplier=noise, max_grad_norm=clip, expected_batch_size=batch
    )


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _step_times(
    mode: str, batch: int, steps: int, arch: str = "cnn", device: torch.device | None = None
) -> float:
    from fedmi.shared.model import ModelSpec, build_model

    device = device or torch.device("cpu")
    torch.manual_seed(0)
    x = torch.randn(batch, 1, 40, 48, 40, device=device)
    y = (torch.rand(batch, device=device) > 0.5).float()
    model = build_model(ModelSpec(arch=arch)).to(device)
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    net: nn.Module = model
    if mode != "plain":
        net, opt = _wrap(mode, model, opt, batch, 1.0, noise=1.0)
    loss_fn = nn.BCEWithLogitsLoss()
    times = []
    for _ in range(steps + 2):
        _sync(device)
        t = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        loss_fn(net(x), y).backward()
        opt.step()
        _sync(device)
        times.append(time.perf_counter() - t)
    return statistics.median(times[2:])


def clipped_sum_error(mode: str, arch: str, device: torch.device, batch: int = 4) -> float:
    """Largest relative error of Opacus' clipped gradient sum against a per-sample loop.

    The reference clips each example's gradient (one plain autograd pass per example) to
    a norm small enough that every example is clipped, then sums; the same model state
    under ``mode`` must give the same sum (before noise, here σ = 0).
    """
    from fedmi.shared.model import ModelSpec, build_model

    torch.manual_seed(1)
    x = torch.randn(batch, 1, 40, 48, 40, device=device)
    y = (torch.rand(batch, device=device) > 0.5).float()
    clip = 1e-3
    model = build_model(ModelSpec(arch=arch)).to(device).train()
    for m in model.modules():  # dropout off: the reference and Opacus see the same network
        if isinstance(m, nn.Dropout):
            m.p = 0.0
    loss_fn = nn.BCEWithLogitsLoss()
    ref = [torch.zeros_like(p) for p in model.parameters()]
    for i in range(batch):
        model.zero_grad(set_to_none=True)
        loss_fn(model(x[i : i + 1]), y[i : i + 1]).backward()
        grads = [p.grad.detach().clone() for p in model.parameters()]
        norm = torch.sqrt(sum((g.double() ** 2).sum() for g in grads))
        factor = min(1.0, clip / (float(norm) + 1e-6))
        for r, g in zip(ref, grads, strict=True):
            r.add_(g, alpha=factor)
    model.zero_grad(set_to_none=True)
    opt = torch.optim.SGD(model.parameters(), lr=0.0)
    net, dp_opt = _wrap(mode, model, opt, batch, clip, noise=0.0)
    dp_opt.zero_grad(set_to_none=True)
    loss_fn(net(x), y).backward()
    dp_opt.pre_step()
    got = [p.grad.detach() * batch for p in model.parameters()]  # Opacus divides by the batch
    scale = float(torch.sqrt(sum((r.double() ** 2).sum() for r in ref)))
    diff = float(
        torch.sqrt(sum(((g - r).double() ** 2).sum() for g, r in zip(got, ref, strict=True)))
    )
    return diff / max(scale, 1e-30)


def cmd_step(args: argparse.Namespace) -> None:
    device = torch.device(args.device)
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore")
    report: dict[str, object] = {"device": _device_name(device), "threads": args.threads}
    report["batch"] = args.batch
    for arch in ("regional", "cnn"):
        out = {}
        for mode in ("plain", "ew", "functorch", "hooks", "plain"):
            # plain twice (the second overwrites the first): a drift check
            out[mode] = _step_times(mode, args.batch, args.steps, arch, device)
        rows: dict[str, dict[str, float]] = {}
        for m, sec in out.items():
            rows[m] = {"seconds": round(sec, 4), "ratio": round(sec / out["plain"], 2)}
            if m != "plain":
                rows[m]["clipped-sum-rel-error"] = float(
                    f"{clipped_sum_error(m, arch, device):.2e}"
                )
        report[arch] = rows
    print(json.dumps(report, indent=2))


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return "cpu"


def cmd_auc(args: argparse.Namespace) -> None:
    from fedmi.simulations.runner import run

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
            auc = holdouts[0].get("auc") if len(holdouts) == 1 else None
            if auc is None:
                auc = (report["final"]["pooled"]["holdout"] or {}).get("auc_histogram")
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


def fedavg_model(
    sites: list,
    datas: dict,
    eps: float | None,
    seed: int,
    rounds: int,
    ledger: Path,
    task: str,
    *,
    learning_rate: float | None = None,
    centred: bool = True,
) -> nn.Module:
    """One FedAvg run without Flower: every training site runs the project's own round
    (:func:`fedmi.client.privacy.rounds.private_round`, real ledger under ``ledger``; plain
    :func:`fedmi.client.training.loop.train_local` when ``eps`` is None) with the regional
    model's defaults (``learning_rate``: another rate; ``centred=False``: the head on the
    uncentred features, as before shared/regional.py centred them); the final model."""
    from benchmarks.bench_drift import average_states
    from fedmi.client.privacy.rounds import private_round
    from fedmi.client.privacy.settings import PrivacySettings
    from fedmi.client.training.loop import TrainSettings, train_local
    from fedmi.shared.instructions import round_seed
    from fedmi.shared.model import (
        ModelSpec,
        build_model,
        federated_state_dict,
        load_federated_state,
    )
    from fedmi.shared.run_config import MODEL_DEFAULTS

    d = MODEL_DEFAULTS["regional"]
    spec = ModelSpec(arch="regional", task=task if centred else None)
    torch.manual_seed(seed)
    weights = federated_state_dict(build_model(spec))
    for r in range(1, rounds + 1):
        states, counts = [], []
        for site in sites:
            x, y = datas[site.site_id].subset("train")
            model = build_model(spec)
            load_federated_state(model, {k: v.clone() for k, v in weights.items()})
            ts = TrainSettings(
                epochs=d.local_epochs,
                batch_size=d.batch_size,
                learning_rate=learning_rate or d.learning_rate,
                optimizer=d.optimizer,
                augment=d.augment,
                seed=round_seed(seed, r),
            )
            if eps is None:
                train_local(model, x, y, ts)
            else:
                ps = PrivacySettings(epsilon=eps, ledger_dir=ledger / site.site_id)
                out = private_round(
                    site, ps, model, x, y, ts, run_id="draws", server_round=r, planned_rounds=rounds
                )
                if out.result is None:
                    raise RuntimeError(f"{site.site_id} refused: {out.status}")
            states.append(federated_state_dict(model))
            counts.append(int(y.shape[0]))
        weights = average_states(states, counts)
    model = build_model(spec)
    load_federated_state(model, weights)
    return model.eval()


def fedavg_draw(
    sites: list,
    datas: dict,
    holdout: str,
    eps: float | None,
    seed: int,
    rounds: int,
    ledger: Path,
    task: str,
) -> float:
    """:func:`fedavg_model` with the defaults; the holdout site's exact AUC of its model."""
    from sklearn.metrics import roc_auc_score

    from fedmi.client.training.loop import predict

    model = fedavg_model(sites, datas, eps, seed, rounds, ledger, task)
    x, y = datas[holdout].subset("all")
    return float(roc_auc_score(y.numpy(), predict(model, x)))


def cmd_draws(args: argparse.Namespace) -> None:
    """Repeat the DP noise draw many times (no Flower): mean ± s.e. of the holdout AUC."""
    import logging
    import tempfile

    from fedmi.client.data import load_site_data
    from fedmi.client.ingest.report import load_accepted
    from fedmi.shared.tasks import get_task
    from fedmi.simulations.runner import site_settings

    torch.set_num_threads(1)
    logging.disable(logging.WARNING)
    root = Path(args.data)
    task = get_task(args.task)
    sites = site_settings(root, Path(tempfile.mkdtemp(prefix="fedmi-draws-")))
    train = [s for s in sites if s.role == "train"]
    holdout = next(s.site_id for s in sites if s.role == "holdout")
    report: dict[str, object] = {}
    for eps_text in args.eps:
        eps = None if eps_text == "off" else float(eps_text)
        n = len(args.seeds) if eps is None else args.draws  # no DP: one run per seed
        aucs = []
        for i in range(n):
            seed = args.seeds[i % len(args.seeds)]
            datas = {
                s.site_id: load_site_data(load_accepted(s.cache_dir), task, seed) for s in sites
            }
            ledger = Path(tempfile.mkdtemp(prefix="fedmi-draws-ledger-"))
            aucs.append(
                fedavg_draw(train, datas, holdout, eps, seed, args.rounds, ledger, args.task)
            )
        se = statistics.stdev(aucs) / len(aucs) ** 0.5 if len(aucs) > 1 else float("nan")
        report[eps_text] = {
            "mean": round(statistics.mean(aucs), 4),
            "se": round(se, 4),
            "n": len(aucs),
            "aucs": [round(a, 4) for a in aucs],
        }
        print(eps_text, json.dumps(report[eps_text]), flush=True)
    print(json.dumps(report, indent=2))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("step")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--steps", type=int, default=12)
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.set_defaults(func=cmd_step)
    p = sub.add_parser("auc")
    p.add_argument("--data", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--eps", nargs="+", default=["1", "3", "8", "off"])
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--rounds", type=int, default=6)
    p.add_argument("--local-epochs", type=int, default=0, help="0: the model's default")
    p.set_defaults(func=cmd_auc)
    p = sub.add_parser("draws", help="many DP draws of FedAvg without Flower (regional model)")
    p.add_argument("--data", required=True, help="an ingested federation (fedmi-sim generate)")
    p.add_argument("--task", default="fdg-ad")
    p.add_argument("--eps", nargs="+", default=["8", "off"])
    p.add_argument("--draws", type=int, default=12, help="DP draws per ε (seeds cycled)")
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--rounds", type=int, default=6)
    p.set_defaults(func=cmd_draws)
    args = parser.parse_args()
    args.func(args)


if __name__ == "__main__":
    main()
