"""The regional head centred on the task template against the uncentred one, at 0.5.

    python -m benchmarks.bench_regional_head --data ROOT [--splits 0 1 2 3] [--eps 8 off] \\
        [--variants uncentred:0.6 centred:3.0] [--out results.json]

FedAvg without Flower (:func:`benchmarks.bench_dp.fedavg_model`: each training site runs the
project's own round, under DP with a real ledger), 6 rounds of the regional model's recipe,
on an ingested federation (``fedmi-sim generate`` then any run, or
:func:`fedmi.simulations.runner.ingest_all`). Each variant is ``centred|uncentred:LR``:
``uncentred:0.6`` is the recipe before the head was centred (shared/regional.py).
Per split seed (the per-site train/test split, the initial weights and the DP draws),
the training sites' test splits pooled and the holdout sites' scans: AUC, balanced
accuracy at 0.5 and the best balanced accuracy any threshold gives; then the mean over
splits and the smallest holdout balanced accuracy at 0.5 (a collapse — every scan called
one class — shows as 0.5). Exact, per-scan figures: a benchmark of the training recipe, not
of what a site may release. Numbers for comparing recipes, not a test.
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import tempfile
from pathlib import Path

import numpy as np
import torch


def balanced_accuracy(scores: np.ndarray, labels: np.ndarray, threshold: float) -> float:
    """Mean of sensitivity and specificity with ``score >= threshold`` called positive."""
    pos, neg = scores[labels == 1], scores[labels == 0]
    return 0.5 * (float((pos >= threshold).mean()) + float((neg < threshold).mean()))


def figures(scores: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """AUC, balanced accuracy at 0.5 and the best over every threshold."""
    from sklearn.metrics import roc_auc_score

    best = max(balanced_accuracy(scores, labels, t) for t in np.unique(scores))
    return {
        "auc": float(roc_auc_score(labels, scores)),
        "ba_at_0.5": balanced_accuracy(scores, labels, 0.5),
        "best_ba": best,
    }


def parse_variant(text: str) -> tuple[bool, float]:
    """``centred:3.0`` → (True, 3.0)."""
    kind, _, lr = text.partition(":")
    if kind not in ("centred", "uncentred") or not lr:
        raise argparse.ArgumentTypeError(f"variant {text!r}: use centred:LR or uncentred:LR")
    return kind == "centred", float(lr)


def main() -> None:
    from benchmarks.bench_dp import fedavg_model
    from fedmi.client.data import load_site_data
    from fedmi.client.ingest.report import load_accepted
    from fedmi.client.training.loop import predict
    from fedmi.shared.tasks import get_task
    from fedmi.simulations.runner import site_settings

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", required=True, help="an ingested federation")
    p.add_argument("--splits", nargs="+", type=int, default=[0, 1, 2, 3])
    p.add_argument("--eps", nargs="+", default=["8", "off"])
    p.add_argument("--variants", nargs="+", default=["uncentred:0.6", "centred:3.0"])
    p.add_argument("--rounds", type=int, default=6)
    p.add_argument("--out", help="write every figure here (JSON)")
    args = p.parse_args()
    variants = [(v, *parse_variant(v)) for v in args.variants]
    torch.set_num_threads(1)
    logging.disable(logging.WARNING)
    root = Path(args.data)
    task_name = json.loads((root / "federation.json").read_text())["task"]
    sites = site_settings(root, Path(tempfile.mkdtemp(prefix="fedmi-head-")))
    train = [s for s in sites if s.role == "train"]
    rows: list[dict[str, object]] = []
    for split in args.splits:
        datas = {
            s.site_id: load_site_data(load_accepted(s.cache_dir), get_task(task_name), split)
            for s in sites
        }
        for name, centred, lr in variants:
            for eps_text in args.eps:
                eps = None if eps_text == "off" else float(eps_text)
                ledger = Path(tempfile.mkdtemp(prefix="fedmi-head-ledger-"))
                model = fedavg_model(
                    train, datas, eps, split, args.rounds, ledger, task_name,
                    learning_rate=lr, centred=centred,
                )  # fmt: skip
                row: dict[str, object] = {"variant": name, "eps": eps_text, "split": split}
                for role, which in (("train", "test"), ("holdout", "all")):
                    parts = [datas[s.site_id].subset(which) for s in sites if s.role == role]
                    scores = np.concatenate([predict(model, x) for x, _ in parts])
                    labels = np.concatenate([y.numpy() for _, y in parts])
                    row[role] = figures(scores, labels)
                rows.append(row)
                print(json.dumps(row), flush=True)
    print(f"\n{task_name}: mean over splits {args.splits} (train = training sites' test splits)")
    print(
        "| variant | ε | train AUC | train BA@0.5 | holdout AUC | holdout BA@0.5 | best | min BA@0.5 |"
    )
    print("|---|---|---|---|---|---|---|---|")
    summary = []
    for name, _, _ in variants:
        for eps_text in args.eps:
            sel = [r for r in rows if r["variant"] == name and r["eps"] == eps_text]
            mean = {
                f"{role}_{k}": statistics.mean(r[role][k] for r in sel)  # type: ignore[index]
                for role in ("train", "holdout")
                for k in ("auc", "ba_at_0.5", "best_ba")
            }
            low = min(r["holdout"]["ba_at_0.5"] for r in sel)  # type: ignore[index]
            summary.append({"variant": name, "eps": eps_text, **mean, "holdout_min_ba": low})
            print(
                f"| {name} | {eps_text} | {mean['train_auc']:.3f} | {mean['train_ba_at_0.5']:.3f} "
                f"| {mean['holdout_auc']:.3f} | {mean['holdout_ba_at_0.5']:.3f} "
                f"| {mean['holdout_best_ba']:.3f} | {low:.3f} |"
            )
    if args.out:
        Path(args.out).write_text(json.dumps({"task": task_name, "rows": rows, "summary": summary}))


if __name__ == "__main__":
    main()
