"""Out-of-distribution scoring at the site, against the federation's feature description.

Two steps, both on aggregates only (:mod:`fedmi.shared.ood`):

* ``query.ood`` (training sites): per-class count, feature sum and sum of outer products
  of the final model's embedding over the site's *train* split
  (:func:`handle_ood_statistics`);
* ``evaluate.external`` (every site): the description the server pooled from those
  arrives in the config; the site scores each evaluated scan by its smallest Mahalanobis
  distance to the class means and releases only a fixed-bin histogram of the scores
  (:func:`ood_metrics`).
"""

from __future__ import annotations

import logging

import numpy as np
import torch
from flwr.app import ArrayRecord, ConfigRecord, MetricRecord, RecordDict
from torch import nn

from fedmi.client.data import site_data
from fedmi.client.evaluation.private import EMBEDDING_MECHANISMS, private_class_sums
from fedmi.client.evaluation.suppression import merge_groups
from fedmi.client.harmonization.adaptation import site_model
from fedmi.client.privacy.release import Release, ReleaseRefused, open_release
from fedmi.client.privacy.settings import PrivacySettings
from fedmi.client.replies import to_state
from fedmi.client.site.settings import SiteSettings
from fedmi.shared import contract
from fedmi.shared.contract.privacy import FEATURE_CLIP_NORM
from fedmi.shared.instructions import OodQuery
from fedmi.shared.ood import (
    FeatureDescription,
    class_feature_statistics,
    mahalanobis_scores,
    ood_histogram,
)

log = logging.getLogger(__name__)


@torch.no_grad()
def embeddings(model: nn.Module, x: torch.Tensor, batch_size: int = 32) -> np.ndarray:
    """``model.features`` of every scan (evaluation mode), ``(n, d)`` float64."""
    model.eval()
    feats = [
        model.features(x[i : i + batch_size]).double().cpu().numpy()  # type: ignore[operator]
        for i in range(0, int(x.shape[0]), batch_size)
    ]
    return np.concatenate(feats) if feats else np.zeros((0, 1))


def merge_histogram(hist: list[int], k: int) -> tuple[list[int], int] | None:
    """Pool neighbouring bins until none holds 0 < n < ``k`` scans.

    A merged group's count goes to the middle of its occupied bins. Returns the new
    histogram and the number of small bins before merging, or ``None`` when the total is
    below ``k``.
    """
    cells = np.asarray(hist, dtype=np.int64)
    groups = merge_groups(cells[:, None], k)
    if groups is None:
        return None
    out = np.zeros_like(cells)
    for first, last in groups:
        occupied = np.flatnonzero(cells[first : last + 1]) + first
        out[(int(occupied[0]) + int(occupied[-1])) // 2] += int(cells[first : last + 1].sum())
    small = int(((cells > 0) & (cells < k)).sum())
    return [int(v) for v in out], small


def ood_metrics(
    features: np.ndarray, description: FeatureDescription, min_cell_count: int
) -> dict[str, object]:
    """Declared OOD aggregates (:data:`fedmi.shared.contract.OOD_METRICS`) of the evaluated scans.

    Empty when fewer than ``k`` scans were scored or the feature width does not match.
    """
    f = np.asarray(features, dtype=np.float64)
    if f.ndim != 2 or f.shape[1] != description.covariance.shape[0]:
        log.warning("the OOD description does not match this model's feature width")
        return {}
    if len(f) < int(min_cell_count) or len(f) == 0:
        return {}
    merged = merge_histogram(ood_histogram(mahalanobis_scores(f, description)), min_cell_count)
    if merged is None:
        return {}
    return {"ood-num-examples": int(len(f)), "ood-hist": merged[0]}


def ood_statistics_metrics(
    features: np.ndarray, labels: np.ndarray, min_cell_count: int
) -> dict[str, object]:
    """The ``query.ood`` metrics of a training site's train-split embeddings."""
    stats = class_feature_statistics(features, labels, contract.OOD_CLASSES, min_cell_count)
    return {
        "num-examples": int(stats.counts.sum()),
        "min-cell-count": int(min_cell_count),
        "ood-class-count": [int(v) for v in stats.counts],
        "ood-feat-sum": [float(v) for v in stats.sums.ravel()],
        "ood-feat-outer": [float(v) for v in stats.outers.ravel()],
    }


def private_ood_statistics(
    features: np.ndarray, labels: np.ndarray, release: Release, min_cell_count: int
) -> dict[str, object]:
    """The ``query.ood`` metrics under DP: noisy counts and clipped, noisy sums.

    A class whose noisy count is below the site's k is withheld (zeros), as in the exact
    reply; the number of scans is public.
    """
    counts, sums, outers = private_class_sums(
        features, labels, release, FEATURE_CLIP_NORM, outer=True, n_classes=contract.OOD_CLASSES
    )
    small = counts < min_cell_count
    counts[small], sums[small], outers[small] = 0, 0.0, 0.0
    return {
        "num-examples": int(len(labels)),
        "min-cell-count": int(min_cell_count),
        "epsilon": release.epsilon,
        "ood-class-count": [int(v) for v in counts],
        "ood-feat-sum": [float(v) for v in sums.ravel()],
        "ood-feat-outer": [float(v) for v in outers.ravel()],
    }


def handle_ood_statistics(
    site: SiteSettings,
    arrays: ArrayRecord,
    ins: OodQuery,
    *,
    privacy: PrivacySettings | None = None,
    run_id: int | str = "local",
) -> RecordDict:
    """``query.ood``: per-class embedding sums of the final model over the train split.

    A holdout site, or a site whose train split holds fewer than ``k`` scans of every
    class, answers with counts only (status ``no-data`` / ``suppressed``).
    """
    record = {"site-id": site.site_id, "role": site.role, "task": ins.task}
    metrics: dict[str, object] = {"num-examples": 0}
    status = "ok"
    if site.role != "train":
        status = "no-data"
    else:
        data = site_data(site, ins.task, ins.seed)
        model, x, y, _ = site_model(site, ins, to_state(arrays), data, "train")
        k = site.min_cell_count
        counts = np.bincount(y.numpy().astype(np.int64), minlength=contract.OOD_CLASSES)
        dp = privacy is not None and privacy.dp
        # under DP the decision may use only the public size; the classes are noisy
        if len(y) < (k if dp else 1) or (not dp and (counts < k).all()):
            status = "suppressed"
            metrics["num-examples"] = int(len(y))
        elif dp:
            try:
                release = open_release(
                    site,
                    privacy,
                    run_id=str(run_id),
                    kind=ins.message_type,
                    mechanisms=EMBEDDING_MECHANISMS,
                )
            except ReleaseRefused as exc:
                status = exc.status
            else:
                metrics = private_ood_statistics(embeddings(model, x), y.numpy(), release, k)
        else:
            metrics = ood_statistics_metrics(embeddings(model, x), y.numpy(), k)
            log.info("OOD feature statistics of %d train-split scans", metrics["num-examples"])
    return RecordDict(
        {
            contract.METRICS: MetricRecord(metrics),  # type: ignore[arg-type]
            contract.SITE: ConfigRecord({**record, "status": status}),
        }
    )
