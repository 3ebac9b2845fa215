"""What a site does for each instruction, as plain functions of (settings, records).

The Flower handlers in :mod:`fedmi.client.app` only unpack a Message, call one of these and
pack the reply; everything here can be called directly in tests.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field

import numpy as np
import torch
from flwr.app import ArrayRecord, ConfigRecord, MetricRecord, RecordDict

from fedmi.client.data import SiteData, load_site_data, rows_fingerprint
from fedmi.client.evaluation.external import external_extras
from fedmi.client.evaluation.statistics import data_inventory, evaluate_site
from fedmi.client.harmonization.adaptation import evaluation_model, local_layers
from fedmi.client.privacy.rounds import FALLBACK_ROUNDS, private_round
from fedmi.client.privacy.settings import PrivacySettings, resolve_privacy
from fedmi.client.site.settings import SiteSettings
from fedmi.client.training.loop import TrainSettings, train_local
from fedmi.shared import contract
from fedmi.shared.model import ModelSpec, build_model, federated_state_dict, load_federated_state
from fedmi.shared.tasks import get_task

log = logging.getLogger(__name__)

_DATA_CACHE: dict[tuple[str, str, int, str], SiteData] = {}
_LOCK = threading.Lock()


@dataclass(frozen=True)
class Instruction:
    """The server's instruction for one round, parsed from the ``config`` record."""

    task: str = "fdg-ad"
    model: str = "regional"
    server_round: int = 0
    settings: TrainSettings = field(default_factory=TrainSettings)
    #: evaluate the received weights on the test split before training, in the same reply
    evaluate_received: bool = False

    @classmethod
    def from_record(cls, record: ConfigRecord | None) -> Instruction:
        r = dict(record or {})
        seed = int(r.get("seed", 0))
        return cls(
            task=str(r.get("task", "fdg-ad")),
            model=str(r.get("model", "regional")),
            server_round=int(r.get("server-round", 0)),
            evaluate_received=bool(r.get("evaluate-received", False)),
            settings=TrainSettings(
                epochs=int(r.get("local-epochs", 1)),
                batch_size=int(r.get("batch-size", 16)),
                learning_rate=float(r.get("learning-rate", 0.6)),
                optimizer=str(r.get("optimizer", "sgd")),
                augment=bool(r.get("augment", False)),
                proximal_mu=float(r.get("proximal-mu", 0.0)),
                # a different but reproducible stream per round
                seed=seed * 100_003 + int(r.get("server-round", 0)),
            ),
        )

    @property
    def split_seed(self) -> int:
        return self.settings.seed // 100_003


def site_data(site: SiteSettings, task_name: str, split_seed: int) -> SiteData:
    """The site's labelled data, ingesting on first use and cached in memory."""
    from fedmi.client.ingest.pipeline import ingest_site
    from fedmi.client.ingest.report import load_accepted

    task = get_task(task_name)
    with _LOCK:
        report = site.cache_dir / "ingest_report.json"
        if not report.exists():
            log.info("no ingest report yet: ingesting the site's DICOM")
            ingest_site(site.data_dir, task_name, site.cache_dir)
        key = (str(site.cache_dir), task_name, split_seed, rows_fingerprint(site.cache_dir))
        if key not in _DATA_CACHE:
            rows = load_accepted(site.cache_dir)
            _DATA_CACHE[key] = load_site_data(rows, task, split_seed)
        return _DATA_CACHE[key]


def _site_record(site: SiteSettings, task: str, status: str) -> ConfigRecord:
    return ConfigRecord(
        {"site-id": site.site_id, "role": site.role, "status": status, "task": task}
    )


def _to_state(arrays: ArrayRecord) -> dict[str, torch.Tensor]:
    return {k: torch.from_numpy(np.array(v.numpy(), copy=True)) for k, v in arrays.items()}


def expected_arrays(model: torch.nn.Module) -> dict[str, tuple[tuple[int, ...], str]]:
    """Name → (shape, dtype) of every federated array of ``model``."""
    return {
        k: (tuple(v.shape), str(v.numpy().dtype)) for k, v in federated_state_dict(model).items()
    }


def handle_query(site: SiteSettings, config: ConfigRecord | None) -> RecordDict:
    """Site facts and counts (no training, no weights)."""
    ins = Instruction.from_record(config)
    data = site_data(site, ins.task, ins.split_seed)
    n_test = int(data.is_test.sum())
    inventory, withheld = data_inventory(site.cache_dir, site.min_cell_count)
    metrics = MetricRecord(
        {
            "num-examples": len(data),
            "num-train": len(data) - n_test,
            "num-test": n_test,
            "num-positive": int(data.y.sum()),
            "min-cell-count": site.min_cell_count,
            "suppressed-cells": withheld,
        }
    )
    content = RecordDict(
        {contract.METRICS: metrics, contract.SITE: _site_record(site, ins.task, "ok")}
    )
    if inventory:
        content[contract.INVENTORY] = ConfigRecord(inventory)  # type: ignore[arg-type]
    return content


def handle_train(
    site: SiteSettings,
    arrays: ArrayRecord,
    config: ConfigRecord | None,
    *,
    run_id: int | str = "local",
    privacy: PrivacySettings | None = None,
) -> RecordDict:
    """Train the received federated weights on the site's train split.

    With DP on (the default; ``privacy`` from :func:`fedmi.client.privacy.settings.resolve_privacy`, else
    the site.toml ``[privacy]`` table) the round is DP-SGD charged to the site's privacy
    ledger under ``run_id``; train loss and accuracy are then not sent (they are not DP
    statistics) and the reply carries the declared privacy metrics instead.
    """
    ins = Instruction.from_record(config)
    if site.role != "train":
        log.warning("a train instruction reached a holdout site; refusing")
        return _status_reply(site, ins.task, contract.TRAIN, "error")
    # the previous round's global model, evaluated before it is trained further: the
    # server then needs one message per site and round instead of two
    received = None
    if ins.evaluate_received:
        try:
            received = handle_evaluate(site, arrays, config, contract.EVALUATE)
        except Exception as exc:  # a failed evaluation must not cost the round's training
            log.error("evaluation of the received model failed: %s: %s", type(exc).__name__, exc)
            received = _status_reply(site, ins.task, contract.EVALUATE, "error")
    reply = _train_round(site, arrays, config, ins, run_id, privacy)
    return reply if received is None else with_evaluation(reply, received)


def with_evaluation(reply: RecordDict, evaluation: RecordDict) -> RecordDict:
    """``reply`` (a train reply) carrying ``evaluation`` (an evaluate reply's content).

    The metrics go into the declared :data:`fedmi.shared.contract.EVALUATION` record, their
    status into the site field ``evaluation-status``.
    """
    site = evaluation[contract.SITE]
    reply[contract.EVALUATION] = evaluation[contract.METRICS]
    reply[contract.SITE]["evaluation-status"] = site["status"]  # type: ignore[index]
    if "harmonization" in site:  # type: ignore[operator]
        reply[contract.SITE]["harmonization"] = site["harmonization"]  # type: ignore[index]
    return reply


def _train_round(
    site: SiteSettings,
    arrays: ArrayRecord,
    config: ConfigRecord | None,
    ins: Instruction,
    run_id: int | str,
    privacy: PrivacySettings | None,
) -> RecordDict:
    """One round of local training (the part of :func:`handle_train` after the checks)."""
    data = site_data(site, ins.task, ins.split_seed)
    x, y = data.subset("train")
    if len(y) == 0:
        return _status_reply(site, ins.task, contract.TRAIN, "no-data")
    torch.manual_seed(ins.settings.seed)
    local = local_layers(site, ins.task, config, data)  # fedbn/fedmi: the site's own layers
    model = local.model if local is not None else build_model(ModelSpec(arch=ins.model))
    if local is not None:
        x, y = local.subset(data, "train")  # + the scans' harmonization-group channel
    state = _to_state(arrays)
    load_federated_state(model, state)
    global_params = None
    if ins.settings.proximal_mu > 0:
        global_params = [p.detach().clone() for p in model.backbone.parameters() if p.requires_grad]
    if privacy is None:
        privacy = resolve_privacy(site, {}, {})
    dp_metrics: dict[str, float | int] = {}
    if privacy.dp:
        planned = int(dict(config or {}).get("num-server-rounds", FALLBACK_ROUNDS))
        outcome = private_round(
            site,
            privacy,
            model,
            x,
            y,
            ins.settings,
            run_id=str(run_id),
            server_round=ins.server_round,
            planned_rounds=planned,
            global_params=global_params,
        )
        if outcome.result is None:
            reply = _status_reply(site, ins.task, contract.TRAIN, outcome.status)
            reply[contract.METRICS] = MetricRecord({"num-examples": 0, **outcome.metrics})
            return reply
        result, dp_metrics = outcome.result, outcome.metrics
    else:
        result = train_local(model, x, y, ins.settings, global_params=global_params)
    log.info(
        "round %d: trained %d scans for %d epoch(s), loss %.4f",
        ins.server_round,
        result.num_examples,
        ins.settings.epochs,
        result.loss,
    )
    if local is not None:  # kept in the state dir; federated_state_dict never includes them
        local.save("trained")
    out_arrays = contract.array_record(federated_state_dict(model))
    metrics = MetricRecord(
        {
            "num-examples": result.num_examples,
            "train-loss": result.loss,
            "train-accuracy": result.accuracy,
            "local-epochs": ins.settings.epochs,
            "local-steps": result.steps,
            "compute-seconds": result.seconds,
        }
    )
    if privacy.dp:  # loss and accuracy on the train split are not DP: kept at the site
        del metrics["train-loss"], metrics["train-accuracy"]
        metrics.update(dp_metrics)
    return RecordDict(
        {
            contract.ARRAYS: out_arrays,
            contract.METRICS: metrics,
            contract.SITE: _site_record(site, ins.task, "ok"),
        }
    )


def handle_evaluate(
    site: SiteSettings, arrays: ArrayRecord, config: ConfigRecord | None, message_type: str
) -> RecordDict:
    """Evaluate the received weights: a training site on its test split, a holdout on all its scans."""
    ins = Instruction.from_record(config)
    data = site_data(site, ins.task, ins.split_seed)
    x, y = data.subset("test" if site.role == "train" else "all")
    if len(y) == 0:
        return _status_reply(site, ins.task, message_type, "no-data")
    which = "test" if site.role == "train" else "all"
    harmonized = evaluation_model(site, ins.task, _to_state(arrays), config, data, which)
    if harmonized is not None:  # fedbn/fedmi: trained, adapted or identity local layers
        model, x, y, used = harmonized
    else:
        model = build_model(ModelSpec(arch=ins.model))
        load_federated_state(model, _to_state(arrays))
    stats, status = evaluate_site(model, x, y, site.min_cell_count)  # small cells suppressed
    if message_type == contract.EXTERNAL:  # uncertainty, OOD scores, MCI biomarker
        extras = external_extras(
            site, ins.task, config, model, x, y, harmonized=harmonized is not None
        )
        stats.update(extras)
    reply = RecordDict(
        {
            contract.METRICS: MetricRecord(stats),  # type: ignore[arg-type]
            contract.SITE: _site_record(site, ins.task, status),
        }
    )
    if harmonized is not None:
        reply[contract.SITE]["harmonization"] = used  # type: ignore[index]
    return reply


def _status_reply(site: SiteSettings, task: str, message_type: str, status: str) -> RecordDict:
    return RecordDict(
        {
            contract.METRICS: MetricRecord({"num-examples": 0}),
            contract.SITE: _site_record(site, task, status),
        }
    )


def error_reply(site_id: str, role: str, task: str) -> RecordDict:
    """A declared, content-free reply used when a handler fails."""
    return RecordDict(
        {
            contract.METRICS: MetricRecord({"num-examples": 0}),
            contract.SITE: ConfigRecord(
                {"site-id": site_id, "role": role, "status": "error", "task": task}
            ),
        }
    )
