"""FedAvg against pooled training without Flower: the client-drift gap at each holdout site.

    python -m benchmarks.bench_drift --data ROOT --task amyloid [--model regional|cnn] \\
        [--rounds 6] [--local-epochs 0] [--batch-size -1] [--lr 0] [--seeds 0 1 2] \\
        [--split sites|iid]

For each seed, on a federation written by ``fedmi-sim generate`` (ingested first, or read
from its ingest cache), FedAvg runs in one process — every training site trains a copy of
the global model on its own train split with :func:`fedmi.client.training.loop.train_local`, the
server averages the federated weights by example count — and the pooled baseline trains
the same model on all training sites' train splits for ``rounds × local epochs`` epochs,
exactly as ``fedmi-sim run --method pooled`` does. Each holdout site's exact AUC of all its
scans is printed for both, with pooled − FedAvg per seed and its paired standard error.

``--split iid`` spreads the same training scans at random over the same sites, keeping each
site's size: what is left of the gap is what local training costs without heterogeneity,
so the difference between the two splits is the part the sites' heterogeneity causes.
0 or −1 for a setting means the model's default (``server.config.MODEL_DEFAULTS``).
Numbers for an analysis, not a test.
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch


def average_states(
    states: Sequence[Mapping[str, torch.Tensor]], counts: Sequence[int]
) -> dict[str, torch.Tensor]:
    """FedAvg's example-weighted mean of federated state dicts."""
    total = float(sum(counts))
    return {
        k: sum(st[k] * (n / total) for st, n in zip(states, counts, strict=True))  # type: ignore[misc]
        for k in states[0]
    }


def iid_split(
    parts: Sequence[tuple[torch.Tensor, torch.Tensor]], seed: int
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The scans of ``parts`` shuffled over as many parts of the same sizes."""
    x = torch.cat([p[0] for p in parts])
    y = torch.cat([p[1] for p in parts])
    order = torch.randperm(len(y), generator=torch.Generator().manual_seed(seed))
    out, start = [], 0
    for px, _ in parts:
        idx = order[start : start + len(px)]
        out.append((x[idx], y[idx]))
        start += len(px)
    return out


def paired_gap(a: Sequence[float], b: Sequence[float]) -> tuple[float, float | None]:
    """Mean of ``a − b`` over paired seeds and its standard error (``None`` for one seed)."""
    diffs = [x - y for x, y in zip(a, b, strict=True)]
    se = statistics.stdev(diffs) / len(diffs) ** 0.5 if len(diffs) > 1 else None
    return statistics.fmean(diffs), se


def run_seed(args: argparse.Namespace, sites: list, seed: int) -> dict[str, dict[str, float]]:
    """Holdout AUCs of FedAvg and pooled for one seed: ``{method: {site: auc}}``."""
    from sklearn.metrics import roc_auc_score

    from fedmi.client.data import load_site_data
    from fedmi.client.ingest.report import load_accepted
    from fedmi.client.training.loop import TrainSettings, predict, train_local
    from fedmi.shared.instructions import round_seed
    from fedmi.shared.model import (
        ModelSpec,
        build_model,
        federated_state_dict,
        load_federated_state,
    )
    from fedmi.shared.run_config import RunConfig
    from fedmi.shared.tasks import get_task

    cfg = RunConfig(model=args.model, local_epochs=args.local_epochs, learning_rate=args.lr)
    batch = args.batch_size if args.batch_size >= 0 else cfg.effective_batch_size
    spec = ModelSpec(arch=args.model, task=args.task)
    task = get_task(args.task)
    datas = {s.site_id: load_site_data(load_accepted(s.cache_dir), task, seed) for s in sites}
    train = [s.site_id for s in sites if s.role == "train"]
    holdouts = [s.site_id for s in sites if s.role == "holdout"]
    parts = [datas[s].subset("train") for s in train]
    if args.split == "iid":
        parts = iid_split(parts, seed)

    def settings(epochs: int, salt: int) -> TrainSettings:
        return TrainSettings(
            epochs=epochs,
            batch_size=batch,
            learning_rate=cfg.effective_learning_rate,
            optimizer=cfg.effective_optimizer,
            augment=cfg.effective_augment,
            seed=round_seed(seed, salt),
        )

    torch.manual_seed(seed)
    weights = federated_state_dict(build_model(spec))
    for r in range(1, args.rounds + 1):
        states, counts = [], []
        for x, y in parts:
            model = build_model(spec)
            load_federated_state(model, {k: v.clone() for k, v in weights.items()})
            train_local(model, x, y, settings(cfg.effective_local_epochs, r))
            states.append(federated_state_dict(model))
            counts.append(int(y.shape[0]))
        weights = average_states(states, counts)
    fedavg = build_model(spec)
    load_federated_state(fedavg, weights)
    torch.manual_seed(seed)
    pooled = build_model(spec)
    x = torch.cat([p[0] for p in parts])
    y = torch.cat([p[1] for p in parts])
    train_local(pooled, x, y, settings(args.rounds * cfg.effective_local_epochs, 1))
    out: dict[str, dict[str, float]] = {}
    for name, model in (("fedavg", fedavg), ("pooled", pooled)):
        out[name] = {}
        for s in holdouts:
            hx, hy = datas[s].subset("all")
            out[name][s] = float(roc_auc_score(hy.numpy(), predict(model, hx)))
    return out


def main(argv: Sequence[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help="a federation root (fedmi-sim generate)")
    parser.add_argument("--task", default="amyloid")
    parser.add_argument("--model", default="regional", choices=["regional", "cnn"])
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--local-epochs", type=int, default=0, help="0: the model's default")
    parser.add_argument(
        "--batch-size", type=int, default=-1, help="-1: the model's default; 0: full batch"
    )
    parser.add_argument("--lr", type=float, default=0.0, help="0: the model's default")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--split", default="sites", choices=["sites", "iid"])
    args = parser.parse_args(argv)
    from fedmi.simulations.runner import ingest_all, site_settings

    if not (Path(args.data) / "federation.json").is_file():
        parser.error(f"--data {args.data}: not a federation root written by fedmi-sim generate")
    torch.set_num_threads(2)
    logging.disable(logging.WARNING)  # quiet while it runs; restored for a caller in-process
    try:
        sites = site_settings(Path(args.data), Path(tempfile.mkdtemp(prefix="fedmi-drift-")))
        ingest_all(sites, args.task)  # cached: an ingested federation is only read
        per_seed = []
        for seed in args.seeds:
            per_seed.append(run_seed(args, sites, seed))
            print(seed, json.dumps(per_seed[-1]), flush=True)
    finally:
        logging.disable(logging.NOTSET)
    summary: dict[str, dict[str, object]] = {}
    for site in per_seed[0]["fedavg"]:
        fa = [r["fedavg"][site] for r in per_seed]
        po = [r["pooled"][site] for r in per_seed]
        gap, se = paired_gap(po, fa)
        summary[site] = {
            "fedavg": round(statistics.fmean(fa), 4),
            "pooled": round(statistics.fmean(po), 4),
            "pooled-minus-fedavg": round(gap, 4),
            "se": None if se is None else round(se, 4),
        }
    print(json.dumps({"split": args.split, "model": args.model, "holdouts": summary}, indent=2))
    return summary


if __name__ == "__main__":
    main()
