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
import secrets

import numpy as np
import torch
from torch import nn

from fedmi.client.evaluation.biomarker import (
    biomarker_metrics,
    load_outcome_scans,
    meta_roi_suvr,
    meta_roi_weights,
)
from fedmi.client.evaluation.ood import embeddings, ood_metrics
from fedmi.client.evaluation.private import (
    EXTRA_MECHANISMS,
    private_biomarker,
    private_ood,
    private_uncertainty,
)
from fedmi.client.evaluation.uncertainty import mc_dropout_probabilities, uncertainty_metrics
from fedmi.client.privacy.release import Release
from fedmi.client.site.settings import SiteSettings
from fedmi.client.training.loop import predict
from fedmi.shared.biomarker import CONVERTER, suvr_histograms
from fedmi.shared.instructions import ExternalInstruction
from fedmi.shared.ood import mahalanobis_scores, ood_histogram
from fedmi.shared.stats import sufficient_statistics
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
    release: Release | None = None,
) -> dict[str, object]:
    """Declared uncertainty, OOD and biomarker metrics (``shared.contract.EXTERNAL_METRICS``).

    With ``release`` (the site has DP on) each family goes out through its Gaussian
    mechanism (:mod:`fedmi.client.evaluation.private`); the MC-dropout masks then come from
    the operating system, not from the coordinator's seed.
    """
    k = site.min_cell_count
    out: dict[str, object] = {}
    try:
        seed = ins.seed if release is None else secrets.randbits(63)
        probs = mc_dropout_probabilities(model, x, ins.mc_passes, seed=seed)
        if release is None:
            out |= uncertainty_metrics(probs, y.numpy(), k)
        else:
            out |= private_uncertainty(probs, y.numpy(), release)
    except Exception as exc:  # noqa: BLE001 - an optional family
        log.warning("MC-dropout uncertainty failed: %s: %s", type(exc).__name__, exc)
    if ins.ood is not None:
        try:
            out |= _ood(model, x, ins, k, release)
        except Exception as exc:  # noqa: BLE001
            log.warning("OOD scoring failed: %s: %s", type(exc).__name__, exc)
    if has_biomarker(ins.task) and not harmonized:
        try:
            out |= _biomarker(site, ins.task, model, k, release)
        except Exception as exc:  # noqa: BLE001
            log.warning("biomarker evaluation failed: %s: %s", type(exc).__name__, exc)
    return out


def has_biomarker(task_name: str) -> bool:
    """Whether the task's labels have MCI outcomes (a public fact of the task)."""
    return CONVERTER in get_task(task_name).other_labels


def extra_mechanisms(ins: ExternalInstruction, harmonized: bool) -> dict[str, float]:
    """The DP mechanisms of the extras this instruction asks for (public facts only)."""
    names = ["mc-calibration", "referral"]
    if ins.ood is not None:
        names.append("ood")
    if has_biomarker(ins.task) and not harmonized:
        names += ["biomarker-count", "biomarker"]
    return {n: EXTRA_MECHANISMS[n] for n in names}


def _ood(
    model: nn.Module, x: torch.Tensor, ins: ExternalInstruction, k: int, release: Release | None
) -> dict[str, object]:
    features = embeddings(model, x)
    if release is None:
        return ood_metrics(features, ins.ood, k)  # type: ignore[arg-type]
    if features.shape[1] != ins.ood.covariance.shape[0]:  # type: ignore[union-attr]
        log.warning("the OOD description does not match this model's feature width")
        return {}
    hist = ood_histogram(mahalanobis_scores(features, ins.ood))  # type: ignore[arg-type]
    return private_ood(hist, len(features), release)


def _biomarker(
    site: SiteSettings, task_name: str, model: nn.Module, k: int, release: Release | None
) -> dict[str, object]:
    from fedmi.client.ingest.report import load_accepted

    task = get_task(task_name)
    x, converted = load_outcome_scans(load_accepted(site.cache_dir), task)
    if release is None and len(converted) == 0:
        return {}
    scores = predict(model, x) if len(converted) else np.zeros(0)
    suvr = meta_roi_suvr(x, meta_roi_weights(task.grid)) if len(converted) else np.zeros(0)
    log.info("biomarker: %d MCI scans scored", len(converted))
    if release is None:
        return biomarker_metrics(scores, suvr, converted, k)
    y = np.asarray(converted).astype(np.int64)
    model_hist = sufficient_statistics(scores, y)
    suvr_hists = suvr_histograms(suvr, y)
    return private_biomarker(
        (np.asarray(model_hist["hist-pos"]), np.asarray(model_hist["hist-neg"])),
        (np.asarray(suvr_hists[0]), np.asarray(suvr_hists[1])),
        len(y),
        int(y.sum()),
        release,
        k,
    )
