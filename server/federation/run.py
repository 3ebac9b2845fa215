"""One whole run at the coordinator: who takes part, training, validation, outputs.

Flow of :func:`run_federation`:

1. wait for the expected number of sites, send each a ``query`` and check the replies:
   site pseudonym, role and counts (:mod:`fedmi.server.federation.sites`);
2. with ``pretrain-rounds`` > 0, federated self-supervised pretraining of the CNN encoder
   on the sites' scans without labels (:mod:`fedmi.server.federation.pretrain`); its
   encoder stages become the classifier's initial weights;
3. run the method's Flower strategy on the *training* sites only
   (:mod:`fedmi.server.strategy`), with per-round evaluation on their local test splits;
   every round's weights are checkpointed and a restarted coordinator resumes
   (:mod:`fedmi.server.federation.rounds`, :mod:`fedmi.server.federation.resume`);
4. collect the aggregates the final evaluation needs (pooled embedding moments for
   label-free adaptation, the OOD description) and send the final model in an
   evaluation-only round to every site (:mod:`fedmi.server.federation.external`);
5. where the run builds one, fit the normative model of normal scans from the training
   sites' statistics and evaluate its anomaly score at the holdout sites
   (:mod:`fedmi.server.federation.normative`);
6. write the final model, the model card, the signed model package
   (:mod:`fedmi.server.package`) and ``report.json`` to the run folder.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from flwr.app import ArrayRecord, MetricRecord
from flwr.serverapp import Grid
from flwr.serverapp.strategy import Strategy

from fedmi.server.federation import resume
from fedmi.server.federation.external import external_validation
from fedmi.server.federation.harmonization import collect_feature_reference
from fedmi.server.federation.normative import collect_normative_model, normative_validation
from fedmi.server.federation.ood import collect_ood_description
from fedmi.server.federation.pretrain import (
    initial_pretrain_arrays,
    pretrain_nodes,
    run_pretraining,
    transfer_pretrained,
)
from fedmi.server.federation.rounds import run_rounds
from fedmi.server.federation.sites import query_sites, wait_for_nodes
from fedmi.server.history import RunHistory
from fedmi.server.package import normative_member, ood_member, write_model_package
from fedmi.server.report.document import (
    build_report,
    model_card,
    save_arrays,
    summary_table,
    write_json,
    write_report,
)
from fedmi.server.report.outcome import FAILED, RunFailed
from fedmi.server.strategy import make_strategy
from fedmi.shared import contract
from fedmi.shared.harmonization import build_method_model
from fedmi.shared.instructions import EvaluateInstruction, ExternalInstruction, TrainInstruction
from fedmi.shared.model import ModelSpec, federated_state_dict
from fedmi.shared.normative import NormativeModel
from fedmi.shared.ood import FeatureDescription
from fedmi.shared.package import operating_point
from fedmi.shared.regional import region_index
from fedmi.shared.run_config import RunConfig
from fedmi.shared.tasks import get_task

log = logging.getLogger(__name__)


def round_progress(entry: dict, total: int, evaluated: dict | None = None) -> str:
    """One terminal line per round: sites trained, mean train loss, test AUC per site.

    ``evaluated`` is the newest round whose model has been evaluated (the sites evaluate
    round r's model at the start of round r + 1, see :func:`fedmi.server.federation.rounds.run_rounds`);
    by default ``entry`` itself.
    """
    evaluated = entry if evaluated is None else evaluated
    trained = {k: v for k, v in entry["train"].items() if v.get("status") == "ok"}
    losses = [v["train-loss"] for v in trained.values() if "train-loss" in v]
    # the AUC the site computed on its scores (k-merged histogram bins can flatten to 0.5)
    shown = {k: v.get("auc") for k, v in evaluated["evaluate"].items()}
    aucs = ", ".join(f"{k} {a:.2f}" for k, a in sorted(shown.items()) if a is not None)
    which = "" if evaluated is entry else f" of round {evaluated['round']}"
    loss = f"{sum(losses) / len(losses):.3f}" if losses else "—"
    dropped = f", dropped {len(entry['dropped'])}" if entry["dropped"] else ""
    return (
        f"round {entry['round']}/{total}: {len(trained)} site(s) trained, loss {loss}{dropped}; "
        f"test AUC{which} {aucs or '—'} ({entry.get('seconds', 0):.1f} s)"
    )


def array_shapes(arrays: ArrayRecord) -> dict[str, tuple[tuple[int, ...], str]]:
    """Name → (shape, dtype) of every array: what replies and checkpoints must match."""
    return {k: (tuple(v.shape), str(v.dtype)) for k, v in arrays.items()}


def model_arrays(cfg: RunConfig) -> ArrayRecord:
    """The federated weights of a fresh model of ``cfg`` (shapes only matter to callers)."""
    return contract.array_record(
        federated_state_dict(
            build_method_model(cfg.method, ModelSpec(arch=cfg.model, task=cfg.task))
        )
    )


@dataclass
class _Run:
    """What the steps of one run share."""

    cfg: RunConfig
    out_dir: Path
    history: RunHistory = field(default_factory=RunHistory)
    timing: dict[str, float] = field(default_factory=dict)


def _training_nodes(grid: Grid, run: _Run) -> list[int]:
    """Wait for the sites, query them; the node ids of the training sites with data."""
    nodes = wait_for_nodes(grid, run.cfg.min_nodes, run.cfg.node_wait)
    log.info("%d site(s) connected", len(nodes))
    query_sites(grid, nodes, run.cfg, run.history)
    train_nodes = [
        n
        for n, s in run.history.sites.items()
        if s.role == "train" and s.status == "ok" and s.num_train > 0
    ]
    if not train_nodes:
        _fail_without_training(run)
    return train_nodes


def _fail_without_training(run: _Run) -> None:
    """Write a failed report naming every site's status, and raise :class:`RunFailed`."""
    sites = ", ".join(
        f"{s.site_id} ({s.role}) {s.status}, {s.num_train} training scans"
        for s in sorted(run.history.sites.values(), key=lambda s: s.site_id)
    )
    reason = "no training site is available" + (f": {sites}" if sites else ": no site answered")
    report = build_report(run.cfg, run.history, run.timing)
    report["outcome"] = {"status": FAILED, "reasons": [reason]}
    write_report(run.out_dir, report)
    check_outcome(report)


def _checkpointer(run: _Run, strategy: Strategy):
    """The per-round hook: checkpoint, progress line, report so far, resume point."""
    started = {"t": time.perf_counter()}
    cfg, history = run.cfg, run.history

    def checkpoint(server_round: int, arrays: ArrayRecord) -> MetricRecord | None:
        save_arrays(resume.checkpoint_path(run.out_dir, server_round), arrays)
        now = time.perf_counter()
        if server_round > 0:
            entry = history._round(server_round)
            entry["seconds"] = round(now - started["t"], 3)
            evaluated = [
                e for k, e in history.rounds.items() if k <= server_round and e["evaluate"]
            ]
            newest = max(evaluated, key=lambda e: e["round"]) if evaluated else entry
            log.info("%s", round_progress(entry, cfg.num_server_rounds, newest))
            write_report(run.out_dir, build_report(cfg, history, run.timing, finished=False))
            resume.save_resume_point(run.out_dir, cfg, server_round, strategy, history)
        started["t"] = now
        return None

    return checkpoint


def _pretrain(
    grid: Grid,
    run: _Run,
    train_nodes: list[int],
    model: torch.nn.Module,
    initial: ArrayRecord,
    point: resume.ResumePoint | None,
) -> None:
    """The pretraining rounds from ``initial`` (or after a pretraining resume point); the
    pretrained encoder stages are then copied into ``model`` (in place)."""
    cfg = run.cfg
    t0 = time.perf_counter()
    arrays, first = initial, 1
    if point is not None:
        arrays, first = point.arrays, point.last_round + 1
        run.history.pretraining.update(point.pretraining)
        run.timing["resumed_after_pretraining_round"] = point.last_round
        log.info("resuming after pretraining round %d of %d", point.last_round, cfg.pretrain_rounds)

    def checkpoint(server_round: int, arrays: ArrayRecord) -> None:
        save_arrays(resume.checkpoint_path(run.out_dir, server_round, "pretrain"), arrays)
        resume.save_resume_point(
            run.out_dir, cfg, server_round, None, run.history, phase="pretrain"
        )

    nodes = pretrain_nodes(run.history, cfg, train_nodes)
    pretrained = run_pretraining(
        grid, cfg, run.history, nodes, arrays=arrays, first_round=first, on_round=checkpoint
    )
    save_arrays(run.out_dir / "pretrained_model.npz", pretrained)
    moved = transfer_pretrained(model, pretrained)
    log.info("pretraining done: %d encoder tensors moved into the classifier", len(moved))
    run.timing["pretraining_seconds"] = time.perf_counter() - t0


def _train(grid: Grid, run: _Run, train_nodes: list[int], model: torch.nn.Module) -> ArrayRecord:
    """Pretraining when asked, then every round of the strategy (continuing after a resume
    point of either phase); the final weights."""
    cfg = run.cfg
    expected = array_shapes(contract.array_record(federated_state_dict(model)))
    # the pretraining network's decoder is drawn right after the classifier (seeded)
    pretrain_initial = initial_pretrain_arrays(model) if cfg.pretrains else None
    pretrain_shapes = array_shapes(pretrain_initial) if pretrain_initial is not None else None
    # a restarted coordinator continues after the last completed round of its phase
    point = resume.load_resume_point(run.out_dir, cfg, expected, pretrain_arrays=pretrain_shapes)
    if pretrain_initial is not None and (point is None or point.phase == "pretrain"):
        _pretrain(grid, run, train_nodes, model, pretrain_initial, point)
        point = None  # training starts at its first round
    elif point is not None:
        run.history.pretraining.update(point.pretraining)
    initial = contract.array_record(federated_state_dict(model))
    strategy = make_strategy(
        cfg, train_nodes=train_nodes, history=run.history, expected_arrays=expected
    )
    start_arrays, first_round = initial, 1
    if point is not None:
        start_arrays, first_round = point.arrays, point.last_round + 1
        run.history.rounds.update(point.rounds)
        resume.restore_strategy(strategy, point.strategy_state)
        run.timing["resumed_after_round"] = point.last_round
        log.info("resuming after round %d of %d", point.last_round, cfg.num_server_rounds)
    return run_rounds(
        strategy,
        grid,
        arrays=start_arrays,
        first_round=first_round,
        num_rounds=cfg.num_server_rounds,
        timeout=cfg.round_timeout,
        train=TrainInstruction.from_run_config(cfg),
        evaluate=EvaluateInstruction.from_run_config(cfg),
        history=run.history,
        on_round=_checkpointer(run, strategy),
    )


def _validate(grid: Grid, run: _Run, final: ArrayRecord) -> FeatureDescription | None:
    """The aggregates the final evaluation needs, then the evaluation-only round; the OOD
    description of the training data (``None`` when no site could give one)."""
    reference, classes = collect_feature_reference(grid, final, run.cfg, run.history)
    # the training data's feature description, for the sites' OOD scores
    ood = collect_ood_description(grid, final, run.cfg, run.history)
    instruction = ExternalInstruction.from_run_config(
        run.cfg, reference=reference, classes=classes, ood=ood
    )
    external_validation(grid, final, run.cfg, run.history, instruction)
    return ood


def _normative(grid: Grid, run: _Run, final: ArrayRecord, card: dict) -> NormativeModel | None:
    """The normative model (fit at the training sites' statistics, evaluated at the
    holdouts at the card's operating point); ``None`` when the run builds none."""
    if not run.cfg.builds_normative_model:
        return None
    names = region_index(get_task(run.cfg.task).grid)[1]
    models = collect_normative_model(grid, final, run.cfg, run.history, names)
    if models is None:
        return None
    threshold, _ = operating_point(card)
    normative_validation(grid, final, run.cfg, run.history, models, threshold)
    return models[0]


def run_federation(grid: Grid, cfg: RunConfig, out_dir: Path) -> dict:
    """The whole run; returns the report document (also written to ``out_dir``)."""
    t0 = time.perf_counter()
    out_dir.mkdir(parents=True, exist_ok=True)
    run = _Run(cfg, out_dir)
    train_nodes = _training_nodes(grid, run)
    torch.manual_seed(cfg.seed)
    spec = ModelSpec(arch=cfg.model, task=cfg.task)
    model = build_method_model(cfg.method, spec)
    t_train = time.perf_counter()
    final = _train(grid, run, train_nodes, model)
    run.timing["training_seconds"] = time.perf_counter() - t_train
    save_arrays(out_dir / "final_model.npz", final)
    t_val = time.perf_counter()
    ood = _validate(grid, run, final)
    run.timing["validation_seconds"] = time.perf_counter() - t_val
    card = model_card(cfg, run.history, spec, model)
    t_norm = time.perf_counter()
    normative = _normative(grid, run, final, card)
    if cfg.builds_normative_model:
        run.timing["normative_seconds"] = time.perf_counter() - t_norm
    run.timing["total_seconds"] = time.perf_counter() - t0
    write_json(out_dir / "model_card.json", card)
    report = build_report(cfg, run.history, run.timing)
    # the signed, versioned model package the sites receive (fedmi-site model pull)
    members = {**ood_member(ood, report), **normative_member(normative)}
    write_model_package(out_dir, card, final, extra_members=members)
    write_report(out_dir, report)
    log.info(
        "run finished in %.0f s: report.json, model_card.json and final_model.npz written",
        run.timing["total_seconds"],
    )
    log.debug("final results\n%s", summary_table(report))
    check_outcome(report)
    return report


def check_outcome(report: dict) -> None:
    """Raise :class:`RunFailed` (after logging its reasons) when the report's run failed.

    Raises
    ------
    RunFailed
        When ``report["outcome"]["status"]`` is ``failed``: the run trained nothing or
        evaluated no site. Its report is written; the command exits non-zero.
    """
    outcome = report.get("outcome") or {}
    if outcome.get("status") == FAILED:
        reasons = list(outcome.get("reasons") or ["unknown"])
        for reason in reasons:
            log.error("run failed: %s", reason)
        raise RunFailed(reasons)
