"""Benchmark: federated self-supervised pretraining, then DP fine-tuning (issue 22).

Each variant is one ``fedmi-sim run`` on the same generated federation (made with an
unlabelled archive: ``fedmi-sim generate ... --unlabelled-archive 3``); every variant gets
fresh privacy ledgers (``sim-ledger-root`` in its own folder) and shares the ingest cache.
The figure is each holdout's exact Mann–Whitney AUC of the run's final model
(:func:`exact_holdout_auc`: the holdout's own evaluation repeated without the DP release),
per seed and averaged; the released AUC of report.json (noisy under DP) is kept beside it
(``holdout_auc_released``), and so is each training site's exact AUC on its own train and
test split (``training_site_auc``, :func:`training_site_auc`: did the model learn where it
was trained?). A run that pretrained also records ``probe_ceiling`` (:func:`probe_ceiling`):
the holdout AUC a linear read-out without DP reaches on the pretrained encoder's pooled
stages, on a random encoder's and on the regional model's inputs (how far could a
low-dimensional probe go, and did pretraining teach the encoder anything?).

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
* ``cnn-pretrain-lp-dp``: as ``cnn-pretrain-dp``, but the first ``--linear-probe-rounds``
  training rounds train only the encoder's projection and the head (linear probing, then
  fine-tuning: LP-FT, Kumar et al., ICLR 2022);
* ``cnn-pretrain-probe-dp``: as ``cnn-pretrain-dp``, every training round a linear probe
  (the pretrained stages never move).

With ``--labels-per-site N [N ...]`` every variant also runs on copies of the federation in
which each training site keeps N labelled scans (stratified by class, seeded) and the others
become unlabelled (``--skip-all-labels``: those copies only) (label efficiency: the issue's
target is the pretrained model with 10 labels per site against ``cnn-scratch`` with all
labels). ``--config KEY=VALUE`` adds run-config settings to every variant (checked before
anything runs; a key a variant sets itself is refused); the result keys then name the variant
``NAME +KEY=VALUE``, e.g. ``cnn-pretrain +local-epochs=10`` (with 10 labels a site's train
split is one batch, so one local epoch is one optimiser step a round).

Each federation's results are keyed and run with the seed it was generated with (its
``federation.json``): the run's ``--seed`` and the label copies' draw.

Usage::

    fedmi-sim generate --out D0 --preset default --task fdg-ad --seed 0 --unlabelled-archive 3
    python -m benchmarks.bench_pretrain --data D0 [D1 D2] --out OUT [--labels-per-site 5 10 20]
    python -m benchmarks.bench_pretrain --merge OUT1/results.json OUT2/results.json --out OUT
    python -m benchmarks.bench_pretrain --rescore --data D0 [D1 D2] --out OUT

Writes ``OUT/results.json`` and ``OUT/results.md`` and, when more than one label count was
run, ``OUT/label_efficiency.png`` (mean holdout AUC against labelled scans per training
site, a line per variant, each seed a dot). ``--merge`` runs nothing: it joins earlier
``results.json`` files (a later file's entry replaces an earlier one of the same variant,
label count and seed) and writes the same three files. ``--rescore`` runs nothing either: it
scores the finished runs of ``OUT/results.json`` exactly (results written before the
benchmark did). Hours on a 2-core CPU for three seeds;
one seed of one preset is the smallest useful run.
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
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from fedmi.shared.run_settings import RUN_CONFIG
from fedmi.simulations.federated import SIM_CACHE_DIR

VARIANTS: dict[str, str] = {
    "regional-dp": "model=regional",
    "cnn-scratch": "model=cnn sim-default-dp=off",
    "cnn-scratch-dp": "model=cnn",
    "cnn-pretrain-dp": "model=cnn pretrain-rounds={pretrain_rounds}",
    "cnn-pretrain": "model=cnn sim-default-dp=off pretrain-rounds={pretrain_rounds}",
    "cnn-pretrain-lp-dp": (
        "model=cnn pretrain-rounds={pretrain_rounds} linear-probe-rounds={probe_rounds}"
    ),
    "cnn-pretrain-probe-dp": (
        "model=cnn pretrain-rounds={pretrain_rounds} linear-probe-rounds={rounds} "
        "num-server-rounds={rounds}"
    ),
}
#: training rounds of every variant: the run config's default ``num-server-rounds``
TRAIN_ROUNDS: int = RUN_CONFIG.setting("num-server-rounds").default


def reduce_labels(src: Path, dst: Path, per_site: int, seed: int) -> None:
    """A hard-linked copy of federation ``src`` whose training sites keep ``per_site`` labels.

    Stratified by class (at least one of each class a site has), chosen with ``seed``; the
    other labelled patients leave labels.csv and so become unlabelled scans. Holdouts keep
    every label (they are only evaluated).

    The source's ingest cache (``.fedmi-cache/<site>/cache``, what ``fedmi-sim run`` fills)
    is copied too, not linked: its entries are keyed by each series' files (path, size,
    modification time: the same hard-linked files) and hold no label, so the copy's first
    run takes every series from it instead of ingesting the federation again (about 13
    minutes of a 2-core machine), and nothing it writes reaches the source's cache.
    """
    if dst.exists():
        shutil.rmtree(dst)
    shutil.copytree(src, dst, copy_function=os.link, ignore=shutil.ignore_patterns(".fedmi-*"))
    for cache in sorted((src / SIM_CACHE_DIR).glob("*/cache")):
        shutil.copytree(cache, dst / cache.relative_to(src))
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


def federation_seed(data: Path, default: int) -> int:
    """The seed ``data`` was generated with (``federation.json``), else ``default``."""
    try:
        seed = json.loads((data / "federation.json").read_text()).get("seed")
    except (OSError, ValueError):
        return default
    return seed if isinstance(seed, int) and not isinstance(seed, bool) and seed >= 0 else default


def extra_config(items: list[str], variants: list[str]) -> str:
    """``--config`` items checked against the run config and the variants' own keys.

    Raises
    ------
    ValueError
        A typo, a bad value (naming the key) or a key one of ``variants`` already sets.
    """
    RUN_CONFIG.parse_pairs(items, "--config")  # a ConfigError (a ValueError) names the key
    for item in items:
        key = item.partition("=")[0].strip()
        for name in variants:
            if any(word.startswith(f"{key}=") for word in VARIANTS[name].split()):
                raise ValueError(f"--config {item!r}: variant {name} sets `{key}` itself")
    return " ".join(item.strip() for item in items)


def run_command(data: Path, out: Path, config: str, seed: int, epsilon: float) -> list[str]:
    """The ``fedmi-sim run`` of one variant, for the task the federation was generated for
    (its ``federation.json``)."""
    task = json.loads((data / "federation.json").read_text())["task"]
    cfg = f"{config} sim-default-epsilon={epsilon} sim-ledger-root={out / 'ledgers'}"
    cmd = [sys.executable, "-m", "fedmi.simulations.cli", "run", "--data", str(data)]
    cmd += ["--out", str(out), "--seed", str(seed), "--task", task]
    for item in cfg.split():
        cmd += ["--config", item]
    return cmd


def run_variant(data: Path, out: Path, config: str, seed: int, epsilon: float) -> dict:
    """One ``fedmi-sim run``; the holdouts' AUCs and the wall time."""
    if out.exists():
        shutil.rmtree(out)
    cmd = run_command(data, out, config, seed, epsilon)
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    (out.parent / f"{out.name}.log").write_text(proc.stdout + proc.stderr)
    result: dict[str, object] = {"seconds": round(seconds, 1), "exit": proc.returncode}
    result["run"] = out.name
    report = out / "report.json"
    if report.is_file():
        doc = json.loads(report.read_text())
        rows = [r for r in doc["final"]["per_site"] if r.get("role") == "holdout"]
        result["holdout_auc_released"] = {r["site_id"]: r.get("auc") for r in rows}
        result["outcome"] = doc.get("outcome", {}).get("status")
        if (out / "final_model.npz").is_file():
            result.update(exact_scores(data, out))
    return result


def exact_scores(data: Path, run: Path) -> dict[str, dict]:
    """A finished run's exact figures: ``holdout_auc`` (:func:`exact_holdout_auc`),
    ``training_site_auc`` (:func:`training_site_auc`) and, for a run that pretrained,
    ``probe_ceiling`` (:func:`probe_ceiling`)."""
    scores: dict[str, dict] = {
        "holdout_auc": exact_holdout_auc(data, run),
        "training_site_auc": training_site_auc(data, run),
    }
    if (run / "pretrained_model.npz").is_file():
        scores["probe_ceiling"] = probe_ceiling(data, run)
    return scores


def _final_model(run: Path):  # noqa: ANN202 - (EvaluateInstruction, ArrayRecord)
    """The evaluation the run's coordinator sends (from report.json's run config) and the
    run's final model (``final_model.npz``)."""
    from fedmi.server.report.document import load_arrays
    from fedmi.shared.instructions import EvaluateInstruction
    from fedmi.shared.run_config import RunConfig

    doc = json.loads((run / "report.json").read_text())
    cfg = RunConfig.from_mapping(doc["run_config"], source=str(run / "report.json"))
    return EvaluateInstruction.from_run_config(cfg), load_arrays(run / "final_model.npz")


def exact_holdout_auc(data: Path, run: Path) -> dict[str, float | None]:
    """Each holdout's exact AUC of the run's final model, scored as the site scores it.

    Under DP a holdout releases its AUC with Gaussian noise (about 0.05 sd on these
    federations; report.json ``auc_noise_sd``), which would swamp the 0.02 differences the
    targets are about. The benchmark runs on the researcher's machine, which holds every
    site's data, so it repeats the holdout's own evaluation (:func:`fedmi.client.evaluation.
    handler.handle_evaluate`: the site's data, split and model, the run's ``final_model.npz``
    and run config) without the release mechanism. ``None``: a class below the site's
    small-cell threshold (no AUC, as in the run).
    """
    from fedmi.client.evaluation.handler import handle_evaluate
    from fedmi.shared import contract
    from fedmi.simulations.runner import site_settings

    ins, arrays = _final_model(run)
    out: dict[str, float | None] = {}
    for site in site_settings(data.resolve(), run.resolve()):
        if site.role == "holdout":
            metrics = handle_evaluate(site, arrays, ins, privacy=None)[contract.METRICS]
            auc = metrics.get("auc-exact")  # the declared statistic (shared/contract/metrics.py)
            out[site.site_id] = None if auc is None else float(auc)
    return out


def training_site_auc(data: Path, run: Path) -> dict[str, dict[str, float | None]]:
    """Each training site's exact AUC of the run's final model on its train and test split.

    Did the model learn where it was trained? A holdout AUC near or below 0.5 reads
    differently when the training sites' own train-split AUC is high (a feature that does
    not carry to the holdout's scanner) than when it is near 0.5 too (nothing was learnt).
    The site's own model as it evaluates (its harmonization layers of the run included:
    :func:`fedmi.client.harmonization.adaptation.site_model`), scored with
    ``sklearn.metrics.roc_auc_score``; ``None`` for a split without both classes. No
    small-cell rule: the benchmark runs on the researcher's machine, which holds every
    site's data, and nothing here is released.
    """
    from sklearn.metrics import roc_auc_score

    from fedmi.client.data import site_data
    from fedmi.client.harmonization.adaptation import site_model
    from fedmi.client.replies import to_state
    from fedmi.client.training.loop import predict
    from fedmi.simulations.runner import site_settings

    ins, arrays = _final_model(run)
    state = to_state(arrays)
    out: dict[str, dict[str, float | None]] = {}
    for site in site_settings(data.resolve(), run.resolve()):
        if site.role != "train":
            continue
        scans = site_data(site, ins.task, ins.seed)
        out[site.site_id] = {}
        for split in ("train", "test"):
            if len(scans.subset(split)[1]) == 0:
                out[site.site_id][split] = None
                continue
            model, x, y, _ = site_model(site, ins, state, scans, split)
            labels = y.numpy().astype(int).ravel()
            both = 0 < labels.sum() < len(labels)
            auc = roc_auc_score(labels, predict(model, x)) if both else None
            out[site.site_id][split] = None if auc is None else float(auc)
    return out


#: regularisation (scikit-learn's ``C``) of :func:`probe_ceiling`'s logistic read-out
CEILING_C: float = 0.1
#: the feature sets :func:`probe_ceiling` reads out, in order
CEILING_FEATURES: tuple[str, ...] = ("pretrained", "random", "regional")


def stage_features(model: torch.nn.Module, x: torch.Tensor) -> np.ndarray:
    """Each scan's CNN encoder stages, averaged over space and concatenated.

    ``model`` is a :class:`~fedmi.shared.model.FedmiNet` with the ``cnn`` backbone: the
    scans pass its harmonizer, then each residual stage; each stage's output is averaged
    over its voxels (global average pooling), one value per channel, so a scan gives
    ``sum(ModelSpec.channels)`` values (120 by default): a low-dimensional view of every
    stage that does not depend on the trained ``project`` layer.
    """
    net = getattr(model, "_module", model).eval()
    out = []
    with torch.no_grad():
        for start in range(0, len(x), 32):
            h = net.harmonizer(x[start : start + 32])
            pooled = []
            for stage in net.backbone.encoder.stages:
                h = stage(h)
                pooled.append(h.mean(dim=(2, 3, 4)))
            out.append(torch.cat(pooled, dim=1))
    return torch.cat(out).numpy().astype(np.float64)


def ceiling_features(
    data: Path, run: Path, *, init_seed: int = 0
) -> dict[str, dict[str, tuple[np.ndarray, np.ndarray]]]:
    """The scans :func:`probe_ceiling` reads out: ``{feature set: {site/split: (X, y)}}``.

    Each site's scans pass its own model as it evaluates (:func:`fedmi.client.
    harmonization.adaptation.site_model`: the run's final model and its harmonization
    layers); training sites give their train split (``site-a/train``), holdouts all their
    scans (``site-e/all``). Feature sets (:data:`CEILING_FEATURES`):

    * ``pretrained``: :func:`stage_features` with the encoder stages as pretraining left
      them (the run's ``pretrained_model.npz``);
    * ``random``: the same with the stages as an untrained CNN starts
      (``torch.manual_seed(init_seed)``): what pretraining must beat;
    * ``regional``: what the regional model's head reads (atlas regions' log uptake,
      standardised per scan, centred on the task template).

    Raises
    ------
    FileNotFoundError
        The run kept no ``pretrained_model.npz`` (it did not pretrain).
    """
    from fedmi.client.data import site_data
    from fedmi.client.harmonization.adaptation import site_model
    from fedmi.client.replies import to_state
    from fedmi.server.report.document import load_arrays
    from fedmi.shared.model import ModelSpec, build_model, make_backbone
    from fedmi.shared.pretraining import ENCODER_PREFIX, transfer_encoder
    from fedmi.simulations.runner import site_settings

    path = run / "pretrained_model.npz"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no pretrained encoder (did the run pretrain?)")
    pretrained = {
        k: v for k, v in to_state(load_arrays(path)).items() if k.startswith(ENCODER_PREFIX)
    }
    ins, arrays = _final_model(run)
    state = to_state(arrays)
    with torch.random.fork_rng():  # seeds its own stream, not the caller's
        torch.manual_seed(init_seed)
        fresh = build_model(ModelSpec(arch="cnn", task=ins.task)).backbone.encoder.stages
    untrained = {
        ENCODER_PREFIX + k: v.detach().clone()
        for k, v in fresh.state_dict().items()
        if ENCODER_PREFIX + k in pretrained
    }
    regional = make_backbone(ModelSpec(arch="regional", task=ins.task, dropout=0.0)).eval()
    out: dict[str, dict[str, tuple[np.ndarray, np.ndarray]]] = {f: {} for f in CEILING_FEATURES}
    for site in site_settings(data.resolve(), run.resolve()):
        split = "train" if site.role == "train" else "all"
        scans = site_data(site, ins.task, ins.seed)
        if len(scans.subset(split)[1]) == 0:
            continue
        model, x, y, _ = site_model(site, ins, state, scans, split)
        labels = y.numpy().astype(int).ravel()
        name = f"{site.site_id}/{split}"
        for feature_set, stages in (("pretrained", pretrained), ("random", untrained)):
            transfer_encoder(model, stages)
            out[feature_set][name] = (stage_features(model, x), labels)
        net = getattr(model, "_module", model).eval()
        with torch.no_grad():
            feats = regional.head_input(regional.encoder(net.harmonizer(x)))
        out["regional"][name] = (feats.numpy().astype(np.float64), labels)
    return out


def probe_ceiling(data: Path, run: Path, *, init_seed: int = 0) -> dict[str, dict]:
    """What a linear read-out of each feature set reaches at the holdouts, without DP.

    An upper bound for a low-dimensional probe on the pretrained encoder: a logistic
    regression (standardised features, ``C`` = :data:`CEILING_C`) fitted on every training
    site's train split pooled in one place, as if federation and DP cost nothing, scored by
    each holdout's exact AUC (``roc_auc_score``; ``None`` for a holdout without both
    classes). The features are :func:`ceiling_features`'s; ``random`` tells whether
    pretraining taught the encoder anything a random one lacks, ``regional`` what the
    regional model's inputs allow.

    Returns
    -------
    dict
        ``{feature set: {"dims": int, "holdout_auc": {site: float | None}}}``.
    """
    return linear_read_out(ceiling_features(data, run, init_seed=init_seed))


def linear_read_out(features: dict[str, dict[str, tuple[np.ndarray, np.ndarray]]]) -> dict:
    """:func:`probe_ceiling`'s read-out of :func:`ceiling_features`'s scans: per feature set,
    one logistic regression fitted on every ``…/train`` set pooled, scored on each
    ``SITE/all`` set."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    out: dict[str, dict] = {}
    for feature_set, sets in features.items():
        train = [v for k, v in sets.items() if k.endswith("/train")]
        if not train:
            raise ValueError(f"{feature_set}: no training site has a train split to fit on")
        readout = make_pipeline(StandardScaler(), LogisticRegression(C=CEILING_C, max_iter=5000))
        readout.fit(np.concatenate([x for x, _ in train]), np.concatenate([y for _, y in train]))
        aucs: dict[str, float | None] = {}
        for name, (x, y) in sets.items():
            if name.endswith("/all"):
                both = 0 < y.sum() < len(y)
                score = readout.decision_function(x)
                aucs[name.removesuffix("/all")] = float(roc_auc_score(y, score)) if both else None
        out[feature_set] = {"dims": int(train[0][0].shape[1]), "holdout_auc": aucs}
    return out


def run_folder(label: str, labels: str, seed: int) -> str:
    """The folder of one run under OUT: ``cnn-pretrain +local-epochs=10``, ``10/site``, 2 →
    ``cnn-pretrain-local-epochs10-10site-s2`` (``label``: the variant as the result key names
    it)."""
    tag = label.replace(" +", "-").replace("=", "")
    return f"{tag}-{labels.replace('/', '')}-s{seed}"


def _mean_auc(result: dict) -> float | None:
    aucs = [a for a in (result.get("holdout_auc") or {}).values() if a is not None]
    return float(np.mean(aucs)) if aucs else None


def _mean_fit(result: dict) -> float | None:
    """Mean train-split AUC of the training sites (:func:`training_site_auc`), or None."""
    per_site = result.get("training_site_auc") or {}
    aucs = [s.get("train") for s in per_site.values() if isinstance(s, dict)]
    aucs = [a for a in aucs if a is not None]
    return float(np.mean(aucs)) if aucs else None


def _split_key(key: str) -> tuple[str, str, int]:
    """``"cnn-pretrain | labels 10/site | seed 0"`` → ``("cnn-pretrain", "10/site", 0)``."""
    parts = [p.strip() for p in key.split("|")]
    if (
        len(parts) != 3
        or not parts[1].startswith("labels ")
        or not parts[2].startswith("seed ")
        or not parts[2].removeprefix("seed ").isdigit()
    ):
        raise ValueError(
            f"not a bench_pretrain result key: {key!r} "
            "(expected 'VARIANT | labels all|N/site | seed K')"
        )
    return parts[0], parts[1].removeprefix("labels "), int(parts[2].removeprefix("seed "))


def _label_order(labels: str) -> float:
    """Sort key of a label count: N/site by N, ``all`` last."""
    return float("inf") if labels == "all" else float(labels.removesuffix("/site"))


def summarise(
    results: dict[str, dict], figure: Callable[[dict], float | None] = _mean_auc
) -> dict[tuple[str, str], list[float | None]]:
    """Each (variant, label count)'s ``figure`` per seed, in seed order (default: the mean
    holdout AUC)."""
    by_seed: dict[tuple[str, str], dict[int, float | None]] = {}
    for key, res in results.items():
        name, labels, seed = _split_key(key)
        by_seed.setdefault((name, labels), {})[seed] = figure(res)
    return {
        k: [v[s] for s in sorted(v)]
        for k, v in sorted(by_seed.items(), key=lambda kv: (kv[0][0], _label_order(kv[0][1])))
    }


def write_outputs(results: dict[str, dict], out: Path) -> list[str]:
    """``results.json``, ``results.md`` and, with two label counts or more, the plot."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(results, indent=1))
    groups = summarise(results)
    fits = summarise(results, _mean_fit)
    lines = [
        "| variant | labels | seeds | mean holdout AUC | per seed "
        "| training sites' train-split AUC per seed |",
        "|---|---|---|---|---|---|",
    ]

    def per_seed(values: list[float | None]) -> str:
        return ", ".join("—" if a is None else f"{a:.3f}" for a in values)

    for (name, labels), aucs in groups.items():
        got = [a for a in aucs if a is not None]
        mean = f"{np.mean(got):.3f}" if got else "—"
        fit = per_seed(fits[(name, labels)])
        lines.append(f"| {name} | {labels} | {len(aucs)} | {mean} | {per_seed(aucs)} | {fit} |")
    lines += _ceiling_table(results)
    (out / "results.md").write_text("\n".join(lines) + "\n")
    if len({labels for _, labels in groups}) > 1:
        plot_label_efficiency(groups, out / "label_efficiency.png")
    return lines


def _ceiling_table(results: dict[str, dict]) -> list[str]:
    """results.md's lines for the runs with a :func:`probe_ceiling` (none: no lines)."""
    rows = [(key, res["probe_ceiling"]) for key, res in results.items() if res.get("probe_ceiling")]
    if not rows:
        return []
    lines = [
        "",
        "Linear read-out ceiling (probe_ceiling: a logistic regression without DP, fitted on "
        "the training sites' train splits pooled; mean holdout AUC, feature dimensions in "
        "brackets):",
        "",
        "| variant | labels | seed | " + " | ".join(CEILING_FEATURES) + " |",
        "|---|---|---|" + "---|" * len(CEILING_FEATURES),
    ]
    for key, ceiling in rows:
        cells = [str(part) for part in _split_key(key)]  # the key's own parts, one a column
        for feature_set in CEILING_FEATURES:
            got = ceiling.get(feature_set) or {}
            aucs = [a for a in (got.get("holdout_auc") or {}).values() if a is not None]
            mean = f"{np.mean(aucs):.3f}" if aucs else "—"
            cells.append(f"{mean} ({got.get('dims', '—')})")
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def rescore(results: dict[str, dict], out: Path, data: list[Path]) -> dict[str, dict]:
    """``results`` with each finished run's exact figures (:func:`exact_scores`).

    For results written before the benchmark scored exactly (their ``holdout_auc`` was the
    released one): the run folder is the entry's ``run`` or the one its key names under
    ``out``; the federation is the one of ``data`` generated with the key's seed (a label
    count's copy under ``out``). An entry whose run folder or federation is missing is
    left as it was.
    """
    by_seed = {federation_seed(d, i): d for i, d in enumerate(data)}
    if len(by_seed) < len(data):
        raise ValueError("--data: two federations generated with the same seed")
    done: dict[str, dict] = {}
    for key, res in results.items():
        name, labels, seed = _split_key(key)
        run = out / str(res.get("run") or run_folder(name, labels, seed))
        root = (
            by_seed.get(seed)
            if labels == "all"
            else out / f"data-s{seed}-{labels.removesuffix('/site')}"
        )
        res = dict(res)
        if root is not None and root.is_dir() and (run / "final_model.npz").is_file():
            res.setdefault("holdout_auc_released", res.get("holdout_auc"))
            res["run"] = run.name
            res.update(exact_scores(root, run))
        done[key] = res
    return done


def merge(paths: list[Path]) -> dict[str, dict]:
    """Earlier ``results.json`` files joined; a later file's entry replaces an earlier one."""
    results: dict[str, dict] = {}
    for path in paths:
        try:
            doc = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise ValueError(f"{path}: not a readable results.json ({exc})") from exc
        if not isinstance(doc, dict):
            raise ValueError(f"{path}: expected a JSON object of results")
        for key, res in doc.items():
            try:
                _split_key(key)  # refuses a file of another benchmark, naming the key
            except ValueError as exc:
                raise ValueError(f"{path}: {exc}") from exc
            if not isinstance(res, dict):
                raise ValueError(f"{path}: entry {key!r} is not an object")
            results[key] = res
    return results


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", type=Path, nargs="+", help="one federation per seed")
    ap.add_argument(
        "--merge", type=Path, nargs="+", help="results.json files to join; runs nothing"
    )
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--variants", nargs="+", choices=sorted(VARIANTS), default=list(VARIANTS))
    ap.add_argument("--epsilon", type=float, default=8.0, help="each site's ε in total")
    ap.add_argument("--pretrain-rounds", type=int, default=6)
    ap.add_argument(
        "--linear-probe-rounds",
        type=int,
        default=3,
        help=f"cnn-pretrain-lp-dp's probe rounds (of {TRAIN_ROUNDS} training rounds)",
    )
    ap.add_argument(
        "--labels-per-site", type=int, nargs="+", default=[], help="label counts besides all"
    )
    ap.add_argument(
        "--skip-all-labels",
        action="store_true",
        help="run the --labels-per-site counts only (the all-labels runs come from --merge)",
    )
    ap.add_argument(
        "--config",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a run-config setting added to every variant (named in the result keys)",
    )
    ap.add_argument(
        "--rescore",
        action="store_true",
        help="score OUT/results.json's finished runs exactly (with --data); runs nothing",
    )
    args = ap.parse_args(argv)
    if args.rescore:
        if args.data is None or args.merge is not None:
            ap.error("--rescore needs --data (the federations of OUT's runs) and no --merge")
        try:
            results = json.loads((args.out / "results.json").read_text())
            results = rescore(results, args.out, args.data)
        except (OSError, ValueError) as exc:
            ap.error(f"{args.out / 'results.json'}: {exc}")
        print("\n".join(write_outputs(results, args.out)))
        return 0
    if (args.data is None) == (args.merge is None):
        ap.error("give --data (run the variants) or --merge (join results), not both")
    if args.epsilon <= 0 or args.pretrain_rounds < 1 or any(n < 1 for n in args.labels_per_site):
        ap.error("--epsilon must be > 0, --pretrain-rounds >= 1, each --labels-per-site >= 1")
    if not 1 <= args.linear_probe_rounds <= TRAIN_ROUNDS:
        ap.error(f"--linear-probe-rounds must lie in 1 … {TRAIN_ROUNDS}")
    if args.skip_all_labels and not args.labels_per_site:
        ap.error("--skip-all-labels needs --labels-per-site (there would be nothing to run)")
    try:
        extra = extra_config(args.config, args.variants)
    except ValueError as exc:
        ap.error(str(exc))
    if args.merge is not None:
        try:
            results = merge(args.merge)
        except ValueError as exc:
            ap.error(str(exc))
        print("\n".join(write_outputs(results, args.out)))
        return 0
    seeds = [federation_seed(data, i) for i, data in enumerate(args.data)]
    if len(set(seeds)) < len(seeds):
        ap.error(
            f"--data: federations generated with the same seed ({seeds}) would share result keys; run them apart"
        )
    args.out.mkdir(parents=True, exist_ok=True)
    results = {}
    for seed, data in zip(seeds, args.data, strict=True):
        sets = {} if args.skip_all_labels else {"all": data}
        for n in sorted(set(args.labels_per_site)):
            reduced = args.out / f"data-s{seed}-{n}"
            reduce_labels(data, reduced, n, seed)
            sets[f"{n}/site"] = reduced
        for labels, root in sets.items():
            for name in args.variants:
                config = VARIANTS[name].format(
                    pretrain_rounds=args.pretrain_rounds,
                    probe_rounds=args.linear_probe_rounds,
                    rounds=TRAIN_ROUNDS,
                )
                label = f"{name} +{extra.replace(' ', ' +')}" if extra else name
                key = f"{label} | labels {labels} | seed {seed}"
                out = args.out / run_folder(label, labels, seed)
                results[key] = run_variant(
                    root, out, f"{config} {extra}".strip(), seed, args.epsilon
                )
                print(key, json.dumps(results[key]), flush=True)
    print("\n".join(write_outputs(results, args.out)))
    return 0


def plot_label_efficiency(groups: dict[tuple[str, str], list[float | None]], path: Path) -> None:
    """Mean holdout AUC against labelled scans per training site: a line per variant."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ticks = sorted({labels for _, labels in groups}, key=_label_order)
    x_of = {labels: i for i, labels in enumerate(ticks)}
    fig, ax = plt.subplots(figsize=(8, 4))
    for name in sorted({n for n, _ in groups}):
        seeds = {
            labels: [a for a in groups.get((name, labels), []) if a is not None] for labels in ticks
        }
        xs = [x_of[labels] for labels in ticks if seeds[labels]]
        means = [float(np.mean(seeds[labels])) for labels in ticks if seeds[labels]]
        (line,) = ax.plot(xs, means, marker="o", label=name)
        for labels in ticks:
            got = seeds[labels]
            ax.scatter([x_of[labels]] * len(got), got, s=12, alpha=0.5, color=line.get_color())
    ax.set_xticks(range(len(ticks)), [t.removesuffix("/site") for t in ticks])
    ax.set_xlabel("labelled scans per training site")
    ax.set_ylabel("holdout AUC (line: mean over seeds)")
    ax.set_ylim(0.4, 1.0)
    ax.grid(alpha=0.3)
    ax.legend(loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    raise SystemExit(main())
