"""Benchmark: federated self-supervised pretraining, then DP fine-tuning (issue 22).

Each variant is one ``fedmi-sim run`` on the same generated federation (made with an
unlabelled archive: ``fedmi-sim generate ... --unlabelled-archive 3``); every variant gets
fresh privacy ledgers (``sim-ledger-root`` in its own folder) and shares the ingest cache.
The figure is the holdout sites' ``auc`` in report.json (the exact Mann–Whitney AUC, or
its noisy release under DP), per seed and averaged.

Variants (``--variants``, default all):

* ``regional-dp``: the default regional model under DP at ``--epsilon`` (ε in total);
* ``cnn-scratch``: the 3-D CNN from scratch, DP off, every label (the reference);
* ``cnn-pretrain-dp``: ``pretrain-rounds`` of masked-image pretraining on every scan
  (labelled and unlabelled; holdouts' unlabelled scans too), then DP fine-tuning, all under
  DP at ``--epsilon`` in total;
* ``cnn-scratch-dp``: the CNN from scratch under DP at ``--epsilon`` (what pretraining
  must beat).
* ``cnn-pretrain``: pretraining then fine-tuning without DP (does the pretrained encoder
  help at all).

With ``--labels-per-site N`` every variant also runs on a copy of the federation in which
each training site keeps N labelled scans (stratified by class, seeded) and the others
become unlabelled (label efficiency: the issue's target is the pretrained model with 10
labels per site against ``cnn-scratch`` with all labels).

Usage::

    fedmi-sim generate --out D0 --preset default --task fdg-ad --seed 0 --unlabelled-archive 3
    python -m benchmarks.bench_pretrain --data D0 [D1 D2] --out OUT [--labels-per-site 10]

Writes ``OUT/results.json`` and ``OUT/results.md`` (and ``OUT/label_efficiency.png`` with
``--labels-per-site``). Hours on a 2-core CPU for three seeds; one seed of one preset is
the smallest useful run.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

VARIANTS: dict[str, str] = {
    "regional-dp": "model=regional",
    "cnn-scratch": "model=cnn sim-default-dp=off",
    "cnn-scratch-dp": "model=cnn",
    "cnn-pretrain-dp": "model=cnn pretrain-rounds={pretrain_rounds}",
    "cnn-pretrain": "model=cnn sim-default-dp=off pretrain-rounds={pretrain_rounds}",
}


def reduce_labels(src: Path, dst: Path, per_site: int, seed: int) -> None:
    """A hard-linked copy of federation ``src`` whose training sites keep ``per_site`` labels.

    Stratified by class (at least one of each class a site has), chosen with ``seed``; the
    other labelled patients leave labels.csv and so become unlabelled scans. Holdouts keep
    every label (they are only evaluated).
    """
    if dst.exists():
        shutil.rmtree(dst)
    shutil.copytree(src, dst, copy_function=os.link, ignore=shutil.ignore_patterns(".fedmi-*"))
    rng = np.random.default_rng(seed)
    manifest = json.loads((src / "federation.json").read_text())
    for site in manifest["sites"]:
        if site.get("role") != "train":
            continue
        path = dst / site["site_id"] / "labels.csv"
        with path.open(newline="") as fh:
            reader = csv.DictReader(fh)
            fields, rows = reader.fieldnames or [], list(reader)
        by_class: dict[str, list[dict]] = {}
        for row in rows:
            by_class.setdefault(row.get("label", ""), []).append(row)
        quota = {c: max(1, round(per_site * len(r) / len(rows))) for c, r in by_class.items()}
        keep = [r for c, rs in by_class.items() for r in rng.permutation(rs)[: quota[c]]]
        path.unlink()  # a hard link: never write through it into the source federation
        with path.open("w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=fields)
            writer.writeheader()
            writer.writerows(keep)


def run_variant(data: Path, out: Path, config: str, seed: int, epsilon: float) -> dict:
    """One ``fedmi-sim run``; the holdouts' AUCs and the wall time."""
    if out.exists():
        shutil.rmtree(out)
    cfg = f"{config} sim-default-epsilon={epsilon} sim-ledger-root={out / 'ledgers'}"
    cmd = [sys.executable, "-m", "fedmi.simulations.cli", "run", "--data", str(data)]
    cmd += ["--out", str(out), "--seed", str(seed)]
    for item in cfg.split():
        cmd += ["--config", item]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    (out.parent / f"{out.name}.log").write_text(proc.stdout + proc.stderr)
    result: dict[str, object] = {"seconds": round(seconds, 1), "exit": proc.returncode}
    report = out / "report.json"
    if report.is_file():
        doc = json.loads(report.read_text())
        rows = [r for r in doc["final"]["per_site"] if r.get("role") == "holdout"]
        result["holdout_auc"] = {r["site_id"]: r.get("auc") for r in rows}
        result["outcome"] = doc.get("outcome", {}).get("status")
    return result


def _mean_auc(result: dict) -> float | None:
    aucs = [a for a in (result.get("holdout_auc") or {}).values() if a is not None]
    return float(np.mean(aucs)) if aucs else None


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", type=Path, nargs="+", required=True, help="one federation per seed")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--variants", nargs="+", choices=sorted(VARIANTS), default=list(VARIANTS))
    ap.add_argument("--epsilon", type=float, default=8.0, help="each site's ε in total")
    ap.add_argument("--pretrain-rounds", type=int, default=6)
    ap.add_argument("--labels-per-site", type=int, default=0, help="0: all labels only")
    args = ap.parse_args(argv)
    if args.epsilon <= 0 or args.pretrain_rounds < 1 or args.labels_per_site < 0:
        ap.error("--epsilon must be > 0, --pretrain-rounds >= 1, --labels-per-site >= 0")
    args.out.mkdir(parents=True, exist_ok=True)
    results: dict[str, dict] = {}
    for seed, data in enumerate(args.data):
        sets = {"all": data}
        if args.labels_per_site:
            reduced = args.out / f"data-s{seed}-{args.labels_per_site}"
            reduce_labels(data, reduced, args.labels_per_site, seed)
            sets[f"{args.labels_per_site}/site"] = reduced
        for labels, root in sets.items():
            for name in args.variants:
                config = VARIANTS[name].format(pretrain_rounds=args.pretrain_rounds)
                key = f"{name} | labels {labels} | seed {seed}"
                out = args.out / f"{name}-{labels.replace('/', '')}-s{seed}"
                results[key] = run_variant(root, out, config, seed, args.epsilon)
                print(key, json.dumps(results[key]), flush=True)
    (args.out / "results.json").write_text(json.dumps(results, indent=1))
    lines = ["| variant | labels | seeds | mean holdout AUC | per seed |", "|---|---|---|---|---|"]
    groups: dict[tuple[str, str], list[float | None]] = {}
    for key, res in results.items():
        name, labels, _ = (p.strip() for p in key.split("|"))
        groups.setdefault((name, labels), []).append(_mean_auc(res))
    for (name, labels), aucs in groups.items():
        got = [a for a in aucs if a is not None]
        mean = f"{np.mean(got):.3f}" if got else "—"
        per = ", ".join("—" if a is None else f"{a:.3f}" for a in aucs)
        lines.append(
            f"| {name} | {labels.removeprefix('labels ')} | {len(aucs)} | {mean} | {per} |"
        )
    (args.out / "results.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    if args.labels_per_site:
        _plot(groups, args.out / "label_efficiency.png")
    return 0


def _plot(groups: dict[tuple[str, str], list[float | None]], path: Path) -> None:
    """Mean holdout AUC per variant, all labels beside the reduced labels."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = sorted({n for n, _ in groups})
    label_sets = sorted({lab for _, lab in groups}, key=lambda v: v != "labels all")
    fig, ax = plt.subplots(figsize=(7, 3.5))
    width = 0.8 / len(label_sets)
    for i, labels in enumerate(label_sets):
        means = []
        for n in names:
            got = [a for a in groups.get((n, labels), []) if a is not None]
            means.append(float(np.mean(got)) if got else np.nan)
        xs = np.arange(len(names)) + i * width
        ax.bar(xs, means, width, label=labels.removeprefix("labels "))
    ax.set_xticks(np.arange(len(names)) + width * (len(label_sets) - 1) / 2, names)
    ax.set_ylabel("mean holdout AUC")
    ax.set_ylim(0.5, 1.0)
    ax.legend(title="labels per training site")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


if __name__ == "__main__":
    raise SystemExit(main())
