"""``train.pretrain``: one round of federated masked-image pretraining at a site.

The site pretrains the received encoder and decoder (a
:class:`~fedmi.shared.pretraining.PretrainNet` around the run's classifier) on *volumes
only*: a training site on its train split's scans and its unlabelled archive, a holdout
site on its unlabelled archive alone (its labelled scans stay unseen until the final
evaluation). No label is ever read here: the train split comes from
:meth:`fedmi.client.data.SiteData.subset` with its labels dropped, the archive from
:func:`fedmi.client.data.load_unlabelled_volumes`, which has none.

With DP on (the site's :class:`~fedmi.client.privacy.settings.PrivacySettings`) the
round is DP-SGD charged to the site's ledger under kind ``train.pretrain``
(:func:`fedmi.client.privacy.pretrain_round.private_pretraining`), capped at the site's
own share of its budget (site.toml ``[privacy] pretrain-share``);
the reconstruction loss is then not sent, as the train loss is not. Without DP,
:func:`fedmi.client.training.pretrain.pretrain_local`.
"""

from __future__ import annotations

import logging

import torch
from flwr.app import ArrayRecord, MetricRecord, RecordDict

from fedmi.client.data import NotIngested, load_unlabelled_volumes, site_data
from fedmi.client.privacy.pretrain_round import private_pretraining
from fedmi.client.privacy.settings import PrivacySettings
from fedmi.client.replies import site_record, status_reply, to_state
from fedmi.client.site.settings import SiteSettings
from fedmi.client.training.loop import TrainSettings
from fedmi.client.training.pretrain import MaskingSettings, PretrainResult, pretrain_local
from fedmi.shared import contract
from fedmi.shared.harmonization import build_method_model
from fedmi.shared.instructions import PretrainInstruction
from fedmi.shared.model import ModelSpec, federated_state_dict, load_federated_state
from fedmi.shared.pretraining import PretrainNet

log = logging.getLogger(__name__)


def pretrain_volumes(site: SiteSettings, ins: PretrainInstruction) -> torch.Tensor:
    """The scans a site pretrains on, without labels: ``(n, 1, *grid)``.

    A training site: its train split's volumes (the split of the run's seed, so its test
    scans stay unseen) followed by its unlabelled archive; a holdout site: its archive
    alone. ``n`` may be 0.

    Raises
    ------
    NotIngested
        The site has not ingested (or its cache is damaged).
    """
    parts = []
    if site.role == "train":
        x, _ = site_data(site, ins.task, ins.seed).subset("train")  # labels dropped here
        parts.append(x)
    try:
        parts.append(load_unlabelled_volumes(site.cache_dir, ins.task))
    except NotIngested:
        if not parts:  # a holdout without an ingest: nothing to pretrain on
            raise
        log.info("no readable unlabelled archive: pretraining on the train split only")
    return torch.cat(parts) if len(parts) > 1 else parts[0]


def handle_pretrain(
    site: SiteSettings,
    arrays: ArrayRecord,
    ins: PretrainInstruction,
    *,
    privacy: PrivacySettings,
    run_id: int | str = "local",
) -> RecordDict:
    """One pretraining round on the received weights (module docstring).

    Parameters
    ----------
    site, arrays, ins
        The site, the received federated :class:`PretrainNet` weights and the instruction.
    privacy, run_id
        The site's DP settings (``pretrain_share``: the share of its ε pretraining may
        bring its ledger to — the site's to choose, never the server's) and the run (its
        ledger entries).

    Returns
    -------
    RecordDict
        ``ok`` with the PretrainNet's federated weights and the declared metrics; ``no-data``
        without scans; the DP refusal (``budget-exhausted``, ``ledger-error``) untrained.
    """
    x = pretrain_volumes(site, ins)
    if x.shape[0] == 0:
        return status_reply(site, ins.task, "no-data")
    settings = TrainSettings.from_instruction(ins)
    masking = MaskingSettings(mask_ratio=ins.mask_ratio)
    torch.manual_seed(settings.seed)
    net = PretrainNet(build_method_model(ins.method, ModelSpec(arch=ins.model, task=ins.task)))
    load_federated_state(net, to_state(arrays))
    dp_metrics: dict[str, float | int] | None = None
    if privacy.dp:
        outcome = private_pretraining(
            site,
            privacy,
            net,
            x,
            settings,
            run_id=str(run_id),
            server_round=ins.server_round,
            planned_rounds=ins.num_pretrain_rounds,
            share=privacy.pretrain_share,
            masking=masking,
        )
        if outcome.result is None:
            return status_reply(site, ins.task, outcome.status, outcome.metrics)
        result, dp_metrics = outcome.result, outcome.metrics
    else:
        result = pretrain_local(net, x, settings, masking=masking)
    log.info(
        "pretraining round %d: %d scans, %d step(s), loss %.4f",
        ins.server_round,
        result.num_examples,
        result.steps,
        result.loss,
    )
    return _pretrained_reply(site, ins, net, result, dp_metrics)


def _pretrained_reply(
    site: SiteSettings,
    ins: PretrainInstruction,
    net: PretrainNet,
    result: PretrainResult,
    dp_metrics: dict[str, float | int] | None,
) -> RecordDict:
    """The PretrainNet's federated weights (encoder and decoder) and declared metrics."""
    metrics = MetricRecord(
        {
            "num-examples": result.num_examples,
            "pretrain-loss": result.loss,
            "local-epochs": ins.local_epochs,
            "local-steps": result.steps,
            "compute-seconds": result.seconds,
        }
    )
    if dp_metrics is not None:  # the loss is not a DP statistic: kept at the site
        del metrics["pretrain-loss"]
        metrics.update(dp_metrics)
    return RecordDict(
        {
            contract.ARRAYS: contract.array_record(federated_state_dict(net)),
            contract.METRICS: metrics,
            contract.SITE: site_record(site, ins.task, "ok"),
        }
    )
