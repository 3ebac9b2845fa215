"""``query.features``: a training site's embedding moments of the final model (``fedmi`` runs).

Only aggregates leave: per-feature mean and population variance over at least the site's
``min-cell-count`` scans, and the same per class when each class holds that many
(declared in :data:`fedmi.shared.contract.FEATURE_METRICS`). Unseen sites adapt their
local layers to the pooled moments (:mod:`fedmi.client.harmonization.adaptation`).
"""

from __future__ import annotations

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, MetricRecord, RecordDict

from fedmi.client.data import site_data
from fedmi.client.evaluation.private import EMBEDDING_MECHANISMS, private_class_sums
from fedmi.client.harmonization.adaptation import (
    evaluated_features,
    feature_moments,
    local_layers,
)
from fedmi.client.privacy.release import Release, ReleaseRefused, open_release
from fedmi.client.privacy.settings import PrivacySettings
from fedmi.client.replies import to_state
from fedmi.client.site.settings import SiteSettings
from fedmi.shared import contract
from fedmi.shared.contract.privacy import FEATURE_CLIP_NORM
from fedmi.shared.instructions import FeaturesQuery
from fedmi.shared.model import load_federated_state


def handle_features(
    site: SiteSettings,
    arrays: ArrayRecord,
    ins: FeaturesQuery,
    *,
    privacy: PrivacySettings | None = None,
    run_id: int | str = "local",
) -> RecordDict:
    """Embedding moments of the final model (``arrays``) over all the site's scans.

    Only a training site with trained local layers answers with moments, and only over at
    least ``min-cell-count`` scans; otherwise the reply carries counts only. The moments
    per class are added when each class holds at least ``min-cell-count`` scans.
    """
    record = {"site-id": site.site_id, "role": site.role, "task": ins.task}
    data = site_data(site, ins.task, ins.seed)
    hz = local_layers(site, ins, data)
    n = len(data)
    status = "ok"
    metrics: dict[str, object] = {"num-examples": n}
    if site.role != "train" or hz is None or hz.status != "trained":
        status = "no-data"
    elif n < site.min_cell_count:
        status = "suppressed"
    elif privacy is not None and privacy.dp:
        load_federated_state(hz.model, to_state(arrays))
        x, y = hz.subset(data, "all")
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
            feats = evaluated_features(hz.model, x).numpy()
            metrics |= private_moments(feats, y.numpy(), release, site.min_cell_count)
    else:
        load_federated_state(hz.model, to_state(arrays))
        x, y = hz.subset(data, "all")
        m = feature_moments(hz.model, x)
        metrics["feat-mean"] = [float(v) for v in m.mean]
        metrics["feat-var"] = [float(v) for v in m.var]
        positive = y.bool()
        n_pos = int(positive.sum())
        if min(n_pos, len(y) - n_pos) >= site.min_cell_count:  # each class a releasable cell
            metrics["num-positive"] = n_pos
            for suffix, mask in (("-neg", ~positive), ("-pos", positive)):
                c = feature_moments(hz.model, x[mask])
                metrics[f"feat-mean{suffix}"] = [float(v) for v in c.mean]
                metrics[f"feat-var{suffix}"] = [float(v) for v in c.var]
    return RecordDict(
        {
            contract.METRICS: MetricRecord(metrics),  # type: ignore[arg-type]
            contract.SITE: ConfigRecord({**record, "status": status}),
        }
    )


def private_moments(
    features: np.ndarray, labels: np.ndarray, release: Release, min_cell_count: int
) -> dict[str, object]:
    """Embedding moments under DP, from noisy per-class sums of clipped embeddings.

    The overall moments use the public number of scans; the per-class ones are added when
    both noisy class counts reach the site's k.
    """
    counts, sums, squares = private_class_sums(
        features, labels, release, FEATURE_CLIP_NORM, outer=False
    )
    n = len(labels)
    out: dict[str, object] = {"epsilon": release.epsilon}
    mean = sums.sum(0) / n
    out["feat-mean"] = [float(v) for v in mean]
    out["feat-var"] = [float(v) for v in np.maximum(squares.sum(0) / n - mean**2, 0.0)]
    n_pos = int(min(counts[1], n - 1))
    if min(n_pos, n - n_pos) >= min_cell_count:
        out["num-positive"] = n_pos
        for suffix, c, size in (("-neg", 0, n - n_pos), ("-pos", 1, n_pos)):
            m = sums[c] / size
            out[f"feat-mean{suffix}"] = [float(v) for v in m]
            out[f"feat-var{suffix}"] = [float(v) for v in np.maximum(squares[c] / size - m**2, 0)]
    return out
