"""Extra aggregates of the final evaluation-only round (``evaluate.external``).

Beside the validation statistics (:mod:`fedmi.client.evaluation.statistics`), each site computes on the
same evaluated scans (training sites: test split; holdout sites: all scans):

* MC-dropout uncertainty, its calibration and the referral curve (:mod:`fedmi.client.evaluation.uncertainty`);
* OOD-score histograms against the federation's feature description, when the server sent
  one (:mod:`fedmi.client.evaluation.ood`);
* for tasks with MCI outcomes (fdg-ad), the model's score and the meta-ROI SUVR as
  conversion biomarkers on the site's MCI scans (:mod:`fedmi.client.evaluation.biomarker`).

Each family is optional: one that fails is logged and left out, never the whole reply.
"""

from __future__ import annotations

import logging

import torch
from torch import nn

from fedmi.client.evaluation.biomarker import (
    biomarker_metrics,
    load_outcome_scans,
    meta_roi_suvr,
    meta_roi_weights,
)
from fedmi.client.evaluation.ood import embeddings, ood_metrics
from fedmi.client.evaluation.uncertainty import mc_dropout_probabilities, uncertainty_metrics
from fedmi.client.site.settings import SiteSettings
from fedmi.client.training.loop import predict
from fedmi.shared.biomarker import CONVERTER
from fedmi.shared.instructions import ExternalInstruction
from fedmi.shared.tasks import get_task

log = logging.getLogger(__name__)


def external_extras(
    site: SiteSettings,
    ins: ExternalInstruction,
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    harmonized: bool = False,
) -> dict[str, object]:
    """Declared uncertainty, OOD and biomarker metrics (``shared.contract.EXTERNAL_METRICS``)."""
    k = site.min_cell_count
    out: dict[str, object] = {}
    try:
        probs = mc_dropout_probabilities(model, x, ins.mc_passes, seed=ins.seed)
        out |= uncertainty_metrics(probs, y.numpy(), k)
    except Exception as exc:  # noqa: BLE001 - an optional family
        log.warning("MC-dropout uncertainty failed: %s: %s", type(exc).__name__, exc)
    description = ins.ood
    if description is not None:
        try:
            out |= ood_metrics(embeddings(model, x), description, k)
        except Exception as exc:  # noqa: BLE001
            log.warning("OOD scoring failed: %s: %s", type(exc).__name__, exc)
    task = get_task(ins.task)
    if CONVERTER in task.other_labels and not harmonized:
        try:
            out |= _biomarker(site, ins.task, model, k)
        except Exception as exc:  # noqa: BLE001
            log.warning("biomarker evaluation failed: %s: %s", type(exc).__name__, exc)
    return out


def _biomarker(site: SiteSettings, task_name: str, model: nn.Module, k: int) -> dict[str, object]:
    from fedmi.client.ingest.report import load_accepted

    task = get_task(task_name)
    x, converted = load_outcome_scans(load_accepted(site.cache_dir), task)
    if len(converted) == 0:
        return {}
    scores = predict(model, x)
    suvr = meta_roi_suvr(x, meta_roi_weights(task.grid))
    log.info("biomarker: %d MCI scans scored", len(converted))
    return biomarker_metrics(scores, suvr, converted, k)
