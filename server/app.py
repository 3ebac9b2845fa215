"""The fedmi ServerApp: query the sites, train on the training sites, validate everywhere.

Flow of one run (``main``):

1. wait for the expected number of sites, send each a ``query`` and check the replies:
   site pseudonym, role and counts;
2. run the chosen Flower strategy on the *training* sites only, with per-round evaluation
   on their local test splits; every round's weights are checkpointed;
3. send the final model in an evaluation-only round (``evaluate.external``) to every site:
   holdout sites evaluate on all their scans, training sites on their test split;
4. write the final model, the model card and ``report.json`` to the run folder.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from pathlib import Path

import torch
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.serverapp import Grid, ServerApp

from fedmi.server.federation import resume
from fedmi.server.federation.harmonization import collect_feature_reference
from fedmi.server.federation.ood import collect_ood_description
from fedmi.server.federation.polling import PromptGrid
from fedmi.server.history import RunHistory, SiteInfo
from fedmi.server.ingress import check_inbound
from fedmi.server.report.document import (
    build_report,
    model_card,
    save_arrays,
    summary_table,
    write_json,
    write_report,
)
from fedmi.server.strategy import make_strategy
from fedmi.shared import contract
from fedmi.shared.methods import build_method_model
from fedmi.shared.model import ModelSpec, federated_state_dict
from fedmi.shared.run_config import RunConfig

log = logging.getLogger(__name__)


def instruction(cfg: RunConfig) -> ConfigRecord:
    """The config record every site receives with each instruction."""
    return ConfigRecord(
        {
            "task": cfg.task,
            "local-epochs": cfg.effective_local_epochs,
            "batch-size": cfg.effective_batch_size,  # 0: the site's whole train split
            "learning-rate": cfg.effective_learning_rate,
            "optimizer": cfg.effective_optimizer,
            "augment": cfg.effective_augment,
            "model": cfg.model,
            "seed": cfg.seed,
            # the sites calibrate their DP-SGD noise for the planned rounds
            "num-server-rounds": cfg.num_server_rounds,
            # fedbn/fedmi: the sites build the model with their local harmonization layers
            "method": cfg.method,
        }
    )


def wait_for_nodes(grid: Grid, minimum: int, timeout: float) -> list[int]:
    """Node ids once at least ``minimum`` are connected (or whatever is there at the timeout)."""
    deadline = time.monotonic() + timeout
    while True:
        nodes = sorted(grid.get_node_ids())
        if len(nodes) >= minimum or time.monotonic() > deadline:
            return nodes
        time.sleep(1.0)


def query_sites(grid: Grid, nodes: list[int], cfg: RunConfig, history: RunHistory) -> None:
    """Ask every node who it is; record the checked answers in ``history.sites``."""
    # A site may still be (re)connecting — e.g. after a coordinator restart SuperNodes come
    # back with a back-off — so ask again those that gave no answer, until node-wait ends.
    pending = list(nodes)
    deadline = time.monotonic() + max(cfg.round_timeout, cfg.node_wait)
    replies: list[Message] = []
    while pending:
        timeout = max(1.0, min(cfg.round_timeout, deadline - time.monotonic()))
        msgs = [
            Message(
                content=RecordDict({contract.CONFIG: instruction(cfg)}),
                dst_node_id=n,
                message_type=contract.QUERY,
            )
            for n in pending
        ]
        answered = [m for m in grid.send_and_receive(msgs, timeout=timeout) if not m.has_error()]
        replies.extend(answered)
        got = {int(m.metadata.src_node_id) for m in answered}
        pending = [n for n in pending if n not in got]
        if not pending or time.monotonic() >= deadline:
            break
        log.info("%d site(s) have not answered yet; asking again", len(pending))
        time.sleep(2.0)
    for msg in replies:
        verdict = check_inbound(contract.QUERY, msg, None, cfg.max_examples)
        if verdict.problems:
            log.warning(
                "site %s: query reply refused: %s", verdict.site_id, "; ".join(verdict.problems)
            )
            continue
        site = msg.content[contract.SITE]
        m = msg.content[contract.METRICS]
        history.sites[verdict.node_id] = SiteInfo(
            node_id=verdict.node_id,
            site_id=str(site.get("site-id")),
            role=str(site.get("role")),
            status=verdict.status,
            num_examples=int(m.get("num-examples", 0)),
            num_train=int(m.get("num-train", 0)),
            num_test=int(m.get("num-test", 0)),
            num_positive=int(m.get("num-positive", 0)),
            min_cell_count=int(m["min-cell-count"]) if "min-cell-count" in m else None,
            data_counts=inventory_counts(msg.content.get(contract.INVENTORY)),
        )
    for info in sorted(history.sites.values(), key=lambda s: s.site_id):
        log.info(
            "site %s: role %s, status %s, %d labelled scans (%d train / %d test)",
            info.site_id,
            info.role,
            info.status,
            info.num_examples,
            info.num_train,
            info.num_test,
        )


def inventory_counts(record: object) -> dict[str, dict[str, int]] | None:
    """The checked ``inventory`` record of a query reply as field → {category: scans}."""
    if record is None:
        return None
    rec = dict(record)  # type: ignore[call-overload]
    return {
        f: dict(zip(rec.get(f"{f}-names", []), rec.get(f"{f}-counts", []), strict=True))
        for f in contract.INVENTORY_FIELDS
    }


def external_validation(
    grid: Grid,
    arrays: ArrayRecord,
    cfg: RunConfig,
    history: RunHistory,
    extra_config: Mapping[str, object] | None = None,
) -> None:
    """Evaluation-only round of the final model at every site that is up.

    Holdout sites evaluate on all their scans, training sites on their test split. A site
    that does not answer within ``validation-timeout`` seconds, answers with an error or
    sends something undeclared is listed in ``history.missing_final``; the report is
    written regardless. A site whose cases fall under its small-cell rule is recorded
    with status ``suppressed`` (counts only).
    """
    targets = [n for n, s in history.sites.items() if s.status == "ok" and s.num_examples > 0]
    msgs = [
        Message(
            content=RecordDict(
                {
                    contract.ARRAYS: arrays,
                    # extra_config: pooled embedding moments in fedmi runs (server/harmonization.py)
                    contract.CONFIG: ConfigRecord({**instruction(cfg), **(extra_config or {})}),  # type: ignore[dict-item]
                }
            ),
            dst_node_id=n,
            message_type=contract.EXTERNAL,
        )
        for n in targets
    ]
    answered: set[int] = set()
    try:
        replies = list(grid.send_and_receive(msgs, timeout=cfg.validation_timeout))
    except Exception as exc:  # the transport failed: every site is reported missing below
        log.error("external validation round failed: %s: %s", type(exc).__name__, exc)
        replies = []
    for msg in replies:
        verdict = check_inbound(contract.EXTERNAL, msg, None, cfg.max_examples)
        if verdict.node_id not in history.sites or verdict.node_id in answered:
            log.warning("ignored an unexpected external-validation reply")
            continue
        answered.add(verdict.node_id)
        if verdict.status == "suppressed" and not verdict.problems:
            history.record_final(verdict.node_id, dict(msg.content[contract.METRICS]))
            continue
        if not verdict.accepted:
            reason = "; ".join(verdict.problems) or f"status {verdict.status}"
            log.warning("external validation at %s failed: %s", verdict.site_id, reason)
            history.missing_final.append(
                {
                    "site_id": history.sites[verdict.node_id].site_id,
                    "role": history.sites[verdict.node_id].role,
                    "reason": reason,
                }
            )
            continue
        history.record_final(verdict.node_id, dict(msg.content[contract.METRICS]))
        used = dict(msg.content.get(contract.SITE) or {}).get("harmonization")
        if used:  # fedbn/fedmi: which local layers the site evaluated with
            history.final[history.site_name(verdict.node_id)]["harmonization"] = str(used)
    for n in targets:
        if n not in answered:
            history.missing_final.append(
                {
                    "site_id": history.sites[n].site_id,
                    "role": history.sites[n].role,
                    "reason": "no reply before the timeout",
                }
            )


def round_progress(entry: dict, total: int, evaluated: dict | None = None) -> str:
    """One terminal line per round: sites trained, mean train loss, test AUC per site.

    ``evaluated`` is the newest round whose model has been evaluated (the sites evaluate
    round r's model at the start of round r + 1, see :func:`fedmi.server.federation.resume.run_rounds`);
    by default ``entry`` itself.
    """
    evaluated = entry if evaluated is None else evaluated
    trained = {k: v for k, v in entry["train"].items() if v.get("status") == "ok"}
    losses = [v["train-loss"] for v in trained.values() if "train-loss" in v]
    # the site's exact AUC when it sent one (k-merged histogram bins can flatten to 0.5)
    shown = {k: v.get("auc_exact", v.get("auc")) for k, v in evaluated["evaluate"].items()}
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
        federated_state_dict(build_method_model(cfg.method, ModelSpec(arch=cfg.model)))
    )


def run_federation(grid: Grid, cfg: RunConfig, out_dir: Path) -> dict:
    """The whole run; returns the report document (also written to ``out_dir``)."""
    t0 = time.perf_counter()
    out_dir.mkdir(parents=True, exist_ok=True)
    history = RunHistory()
    nodes = wait_for_nodes(grid, cfg.min_nodes, cfg.node_wait)
    log.info("%d site(s) connected", len(nodes))
    query_sites(grid, nodes, cfg, history)
    train_nodes = [
        n
        for n, s in history.sites.items()
        if s.role == "train" and s.status == "ok" and s.num_train > 0
    ]
    if not train_nodes:
        raise RuntimeError("no training site is available: check the sites' roles and data")

    torch.manual_seed(cfg.seed)
    spec = ModelSpec(arch=cfg.model)
    model = build_method_model(cfg.method, spec)
    initial = contract.array_record(federated_state_dict(model))
    expected = array_shapes(initial)
    strategy = make_strategy(
        cfg, train_nodes=train_nodes, history=history, expected_arrays=expected
    )
    timing: dict[str, float] = {}
    round_started = {"t": time.perf_counter()}

    def checkpoint(server_round: int, arrays: ArrayRecord) -> MetricRecord | None:
        save_arrays(out_dir / "checkpoints" / f"round-{server_round:03d}.npz", arrays)
        now = time.perf_counter()
        if server_round > 0:
            entry = history._round(server_round)
            entry["seconds"] = round(now - round_started["t"], 3)
            evaluated = [
                e for k, e in history.rounds.items() if k <= server_round and e["evaluate"]
            ]
            newest = max(evaluated, key=lambda e: e["round"]) if evaluated else entry
            log.info("%s", round_progress(entry, cfg.num_server_rounds, newest))
            write_report(out_dir, build_report(cfg, history, timing))
            resume.save_resume_point(out_dir, cfg, server_round, strategy, history)
        round_started["t"] = now
        return None

    train_cfg = instruction(cfg)
    t_train = time.perf_counter()
    # a restarted coordinator continues after the last completed round (server/resume.py)
    point = resume.load_resume_point(out_dir, cfg, expected)
    start_arrays, first_round = initial, 1
    if point is not None:
        start_arrays, first_round = point.arrays, point.last_round + 1
        history.rounds.update(point.rounds)
        resume.restore_strategy(strategy, point.strategy_state)
        timing["resumed_after_round"] = point.last_round
        log.info("resuming after round %d of %d", point.last_round, cfg.num_server_rounds)
    final = resume.run_rounds(
        strategy,
        grid,
        arrays=start_arrays,
        first_round=first_round,
        num_rounds=cfg.num_server_rounds,
        timeout=cfg.round_timeout,
        train_config=train_cfg,
        evaluate_config=instruction(cfg),
        history=history,
        on_round=checkpoint,
    )
    timing["training_seconds"] = time.perf_counter() - t_train
    save_arrays(out_dir / "final_model.npz", final)
    t_val = time.perf_counter()
    reference = collect_feature_reference(grid, final, dict(instruction(cfg)), cfg, history)
    # the training data's feature description, for the sites' OOD scores (server/ood.py)
    reference = {
        **reference,
        **collect_ood_description(grid, final, dict(instruction(cfg)), cfg, history),
    }
    external_validation(grid, final, cfg, history, reference)
    timing["validation_seconds"] = time.perf_counter() - t_val
    timing["total_seconds"] = time.perf_counter() - t0
    write_json(out_dir / "model_card.json", model_card(cfg, history, spec, model))
    report = build_report(cfg, history, timing)
    write_report(out_dir, report)
    log.info(
        "run finished in %.0f s: report.json, model_card.json and final_model.npz written",
        timing["total_seconds"],
    )
    log.debug("final results\n%s", summary_table(report))
    return report


def build_server_app(overrides: Mapping[str, object] | None = None) -> ServerApp:
    """Build the ServerApp; ``overrides`` replace run-config keys (used by the one-machine runner)."""
    app = ServerApp()

    @app.main()
    def main(grid: Grid, context: Context) -> None:
        values = {**dict(context.run_config), **dict(overrides or {})}
        cfg = RunConfig.from_mapping(values)
        out_dir = cfg.output_dir(context.run_id)
        resume.progress_logging()  # under `flwr run --stream`: show fedmi's progress lines
        log.info(
            "fedmi run %s: task %s, method %s, output in the run folder",
            context.run_id,
            cfg.task,
            cfg.method,
        )
        # Flower's grids poll for replies every 0.1 s (simulation) or 3 s (SuperLink)
        run_federation(PromptGrid(grid), cfg, out_dir)

    return app


app = build_server_app()
