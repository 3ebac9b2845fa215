"""The model's score as a conversion biomarker in MCI, with a regional SUVR baseline.

MCI scans are not training data (:func:`fedmi.client.data.load_site_data` skips them); they are
loaded here from the same ingest cache (:func:`load_outcome_scans`), scored by the final
model and by the meta-ROI SUVR (:func:`meta_roi_suvr`), and summarised into the declared
``bio-*`` aggregates (:func:`biomarker_metrics`): per-outcome histograms of both markers
and the paired DeLong difference of their AUCs. Per-scan values never leave.
"""

from __future__ import annotations

import logging

import nibabel as nib
import numpy as np
import torch

from fedmi.client.evaluation.suppression import merge_score_histograms
from fedmi.shared.anatomy import region_weights
from fedmi.shared.biomarker import CONVERTER, META_ROI, STABLE, paired_delong, suvr_histograms
from fedmi.shared.grid import Grid
from fedmi.shared.stats import sufficient_statistics
from fedmi.shared.tasks import TaskSpec

log = logging.getLogger(__name__)


def load_outcome_scans(rows: list[dict], task: TaskSpec) -> tuple[torch.Tensor, np.ndarray]:
    """MCI scans with a conversion outcome: ``(x, converted)``.

    Parameters
    ----------
    rows
        Accepted ingest rows (absolute ``cached_path``, ``label`` from labels.csv).
    task
        The task; only ``MCI-converter`` / ``MCI-stable`` rows are used.

    Returns
    -------
    (tensor, ndarray)
        ``(n, 1, *grid.shape)`` float32 volumes and 0/1 outcome (1 = converter).
    """
    xs, ys = [], []
    for row in rows:
        label = str(row.get("label", ""))
        if label not in (CONVERTER, STABLE):
            continue
        vol = np.asarray(nib.load(str(row["cached_path"])).dataobj, dtype=np.float32)
        if vol.shape != task.grid.shape:
            continue
        xs.append(vol)
        ys.append(int(label == CONVERTER))
    if not xs:
        return torch.zeros((0, 1, *task.grid.shape)), np.zeros(0, dtype=np.int64)
    return torch.from_numpy(np.stack(xs)[:, None]), np.asarray(ys, dtype=np.int64)


def meta_roi_weights(grid: Grid) -> np.ndarray:
    """Voxel weights of the AD meta-ROI (:data:`fedmi.shared.biomarker.META_ROI`) on ``grid``."""
    w = np.zeros(grid.shape, dtype=np.float64)
    for name in META_ROI:
        w += region_weights(name, grid)
    return np.clip(w, 0.0, 1.0)


def meta_roi_suvr(x: torch.Tensor | np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Weighted mean of each reference-normalised volume in the meta-ROI (its SUVR)."""
    v = np.asarray(x, dtype=np.float64).reshape(len(x), -1)
    w = np.asarray(weights, dtype=np.float64).ravel()
    return (v @ w) / w.sum()


def biomarker_metrics(
    model_scores: np.ndarray, suvr: np.ndarray, converted: np.ndarray, min_cell_count: int
) -> dict[str, object]:
    """Declared ``bio-*`` aggregates of one site's MCI scans.

    Both markers' histograms per outcome (bins merged under the small-cell rule) and
    ``AUC(model) − AUC(SUVR)`` with a paired DeLong interval (SUVR negated: lower SUVR
    means converter). Only ``bio-num-examples`` and ``bio-num-converters`` are returned
    when either outcome has fewer than ``k`` scans.
    """
    y = np.asarray(converted).astype(np.int64)
    k = int(min_cell_count)
    n, n_pos = int(y.size), int(y.sum())
    out: dict[str, object] = {"bio-num-examples": n, "bio-num-converters": n_pos}
    if n_pos < k or n - n_pos < k:
        return out
    model_hist = sufficient_statistics(model_scores, y)
    m = merge_score_histograms(model_hist["hist-pos"], model_hist["hist-neg"], k)  # type: ignore[arg-type]
    s_pos, s_neg = suvr_histograms(suvr, y)
    s = merge_score_histograms(s_pos, s_neg, k)
    if m is None or s is None:
        return out
    d = paired_delong(np.asarray(model_scores), -np.asarray(suvr), y)
    out |= {
        "bio-hist-model-pos": m[0],
        "bio-hist-model-neg": m[1],
        "bio-hist-suvr-pos": s[0],
        "bio-hist-suvr-neg": s[1],
    }
    if np.isfinite(d.diff):
        out |= {
            "bio-auc-model-exact": float(d.auc_a),
            "bio-auc-suvr-exact": float(d.auc_b),
            "bio-auc-diff": float(d.diff),
            "bio-auc-diff-se": float(min(1.0, d.se)),
            "bio-auc-diff-ci-low": float(d.ci_low),
            "bio-auc-diff-ci-high": float(d.ci_high),
        }
    return out
