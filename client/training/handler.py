"""``train``: one round of local training on the received weights.

With DP on (the default; the site's own :class:`~fedmi.client.privacy.settings.PrivacySettings`)
the round is DP-SGD charged to the site's privacy ledger (:mod:`fedmi.client.privacy.rounds`);
train loss and accuracy are then not sent (they are not DP statistics) and the reply carries
the declared privacy metrics instead. When the instruction asks (``evaluate-received``), the
site first evaluates the received weights and sends that evaluation in the same reply.
"""

from __future__ import annotations

import logging

import torch
from flwr.app import ArrayRecord, MetricRecord, RecordDict

from fedmi.client.data import site_data
from fedmi.client.evaluation.handler import handle_evaluate
from fedmi.client.harmonization.adaptation import local_layers
from fedmi.client.privacy.rounds import private_round
from fedmi.client.privacy.settings import PrivacySettings
from fedmi.client.replies import site_record, status_reply, to_state
from fedmi.client.site.settings import SiteSettings
from fedmi.client.training.loop import TrainResult, TrainSettings, train_local
from fedmi.shared import contract
from fedmi.shared.instructions import EvaluateInstruction, TrainInstruction
from fedmi.shared.model import ModelSpec, build_model, federated_state_dict, load_federated_state
from fedmi.shared.pretraining import set_linear_probe

log = logging.getLogger(__name__)


def handle_train(
    site: SiteSettings,
    arrays: ArrayRecord,
    ins: TrainInstruction,
    *,
    privacy: PrivacySettings,
    run_id: int | str = "local",
) -> RecordDict:
    """Train the received federated weights on the site's train split (module docstring)."""
    if site.role != "train":
        log.warning("a train instruction reached a holdout site; refusing")
        return status_reply(site, ins.task, "error")
    # the previous round's global model, evaluated before it is trained further: the
    # server then needs one message per site and round instead of two
    received = None
    if ins.evaluate_received:
        evaluation = EvaluateInstruction(
            task=ins.task,
            model=ins.model,
            method=ins.method,
            seed=ins.seed,
            server_round=ins.server_round,
        )
        try:
            received = handle_evaluate(site, arrays, evaluation, privacy=privacy, run_id=run_id)
        except Exception as exc:  # a failed evaluation must not cost the round's training
            log.error("evaluation of the received model failed: %s: %s", type(exc).__name__, exc)
            received = status_reply(site, ins.task, "error")
    reply = train_round(site, arrays, ins, privacy=privacy, run_id=str(run_id))
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


def train_round(
    site: SiteSettings,
    arrays: ArrayRecord,
    ins: TrainInstruction,
    *,
    privacy: PrivacySettings,
    run_id: str,
) -> RecordDict:
    """One round of local training (the part of :func:`handle_train` after the checks)."""
    data = site_data(site, ins.task, ins.seed)
    x, y = data.subset("train")
    if len(y) == 0:
        return status_reply(site, ins.task, "no-data")
    settings = TrainSettings.from_instruction(ins)
    torch.manual_seed(settings.seed)
    local = local_layers(site, ins, data)  # fedbn/fedmi: the site's own layers
    model = (
        local.model if local is not None else build_model(ModelSpec(arch=ins.model, task=ins.task))
    )
    if local is not None:
        x, y = local.subset(data, "train")  # + the scans' harmonization-group channel
    load_federated_state(model, to_state(arrays))
    if ins.linear_probe:  # before the proximal copy and DP-SGD: both take trainable weights only
        trainable = set_linear_probe(model)
        log.info(
            "round %d: linear probe (encoder stages frozen, %d weight tensors trained)",
            ins.server_round,
            len(trainable),
        )
    global_params = None
    if settings.proximal_mu > 0:
        global_params = [p.detach().clone() for p in model.backbone.parameters() if p.requires_grad]
    dp_metrics: dict[str, float | int] = {}
    if privacy.dp:
        outcome = private_round(
            site,
            privacy,
            model,
            x,
            y,
            settings,
            run_id=run_id,
            server_round=ins.server_round,
            planned_rounds=ins.num_server_rounds,
            global_params=global_params,
        )
        if outcome.result is None:
            return status_reply(site, ins.task, outcome.status, outcome.metrics)
        result, dp_metrics = outcome.result, outcome.metrics
    else:
        result = train_local(model, x, y, settings, global_params=global_params)
    log.info(
        "round %d: trained %d scans for %d epoch(s), loss %.4f",
        ins.server_round,
        result.num_examples,
        settings.epochs,
        result.loss,
    )
    if local is not None:  # kept in the state dir; federated_state_dict never includes them
        local.save("trained")
    return _trained_reply(site, ins, model, result, dp_metrics if privacy.dp else None)


def _trained_reply(
    site: SiteSettings,
    ins: TrainInstruction,
    model: torch.nn.Module,
    result: TrainResult,
    dp_metrics: dict[str, float | int] | None,
) -> RecordDict:
    """The weights and the declared metrics of a trained round."""
    metrics = MetricRecord(
        {
            "num-examples": result.num_examples,
            "train-loss": result.loss,
            "train-accuracy": result.accuracy,
            "local-epochs": ins.local_epochs,
            "local-steps": result.steps,
            "compute-seconds": result.seconds,
        }
    )
    if dp_metrics is not None:  # loss and accuracy on the train split are not DP: kept here
        del metrics["train-loss"], metrics["train-accuracy"]
        metrics.update(dp_metrics)
    return RecordDict(
        {
            contract.ARRAYS: contract.array_record(federated_state_dict(model)),
            contract.METRICS: metrics,
            contract.SITE: site_record(site, ins.task, "ok"),
        }
    )
