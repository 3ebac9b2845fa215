"""What a site computes for validation, and the counts it may share about its data.

Everything per patient (scores, labels) stays in this process: the functions return only
declared statistics (:data:`fedmi.shared.contract.EVAL_METRICS`, :data:`INVENTORY_FIELDS`) with
the small-cell rule (:mod:`fedmi.client.evaluation.suppression`) already applied.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from fedmi.client.evaluation.suppression import suppress_categories, suppress_evaluation
from fedmi.client.training.loop import predict
from fedmi.shared.contract import INVENTORY_FIELDS, OPERATING_THRESHOLD
from fedmi.shared.stats import (
    calibration_statistics,
    delong_auc,
    operating_point,
    sufficient_statistics,
    wilson_interval,
)

log = logging.getLogger(__name__)

MANIFEST_FILE = "data_manifest.json"
_MANIFEST_KEYS = {"tracer": "by_tracer", "manufacturer": "by_manufacturer", "model": "by_model"}


def evaluation_statistics(
    scores: np.ndarray, labels: np.ndarray, min_cell_count: int
) -> tuple[dict[str, object], str]:
    """Declared evaluation metrics of ``scores`` against ``labels``, after suppression.

    Parameters
    ----------
    scores
        Predicted probabilities of the positive class (never leave the site).
    labels
        0/1 truth (never leaves the site).
    min_cell_count
        The site's ``k`` of the small-cell rule.

    Returns
    -------
    (dict, str)
        Metrics (sufficient statistics, loss and squared-error sums, calibration bins,
        the DeLong AUC interval and the Wilson intervals of sensitivity and specificity
        at the operating threshold) and the reply status (``ok`` or ``suppressed``).
    """
    labels = np.asarray(labels).astype(np.int64)
    p = np.clip(np.asarray(scores, dtype=np.float64), 1e-7, 1 - 1e-7)
    stats: dict[str, object] = dict(sufficient_statistics(scores, labels))
    stats["loss-sum"] = (
        float(-(labels * np.log(p) + (1 - labels) * np.log(1 - p)).sum()) if labels.size else 0.0
    )
    stats.update(calibration_statistics(scores, labels))
    if labels.size and 0 < labels.sum() < labels.size:
        d = delong_auc(scores, labels)
        stats["auc-exact"] = d.auc
        stats["auc-se"] = min(1.0, d.se)
        stats["auc-ci-low"], stats["auc-ci-high"] = d.ci_low, d.ci_high
        op = operating_point(stats, OPERATING_THRESHOLD)  # type: ignore[arg-type]
        stats["sens-ci-low"], stats["sens-ci-high"] = wilson_interval(op.tp, op.tp + op.fn)
        stats["spec-ci-low"], stats["spec-ci-high"] = wilson_interval(op.tn, op.tn + op.fp)
    return suppress_evaluation(stats, min_cell_count)


def evaluate_site(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, min_cell_count: int
) -> tuple[dict[str, object], str]:
    """Score ``x`` with ``model`` and return :func:`evaluation_statistics` (plus timing)."""
    t0 = time.perf_counter()
    scores = predict(model, x)
    stats, status = evaluation_statistics(scores, y.numpy(), min_cell_count)
    if status == "ok":
        stats["compute-seconds"] = time.perf_counter() - t0
    return stats, status


def inventory_counts(cache_dir: Path) -> dict[str, dict[str, int]]:
    """Exact scans per tracer, manufacturer and model (stays at the site).

    Read from the ingest's counts-only ``data_manifest.json`` (DICOM (0008,0070)
    *Manufacturer* and (0008,1090) *Manufacturer's Model Name* of each accepted series);
    empty when no manifest exists.
    """
    path = Path(cache_dir) / MANIFEST_FILE
    if not path.is_file():
        return {}
    manifest = json.loads(path.read_text(encoding="utf-8"))
    out: dict[str, dict[str, int]] = {}
    for field in INVENTORY_FIELDS:
        raw: dict[str, int] = {}
        for name, count in dict(manifest.get(_MANIFEST_KEYS[field], {})).items():
            raw[_label(name)] = raw.get(_label(name), 0) + int(count)
        out[field] = raw
    return out


def data_inventory(cache_dir: Path, min_cell_count: int) -> tuple[dict[str, list], int]:
    """Counts of accepted scans per tracer, manufacturer and model, small cells pooled.

    Returns
    -------
    (dict, int)
        The ``inventory`` record's content (``<field>-names`` / ``<field>-counts``) and the
        number of categories pooled or withheld. Empty when no manifest exists.
    """
    counts = inventory_counts(cache_dir)
    record: dict[str, list] = {}
    withheld = 0
    for field, raw in counts.items():
        released, n = suppress_categories(raw, min_cell_count)
        withheld += n
        record[f"{field}-names"] = list(released)
        record[f"{field}-counts"] = list(released.values())
    return record, withheld


def _label(text: object) -> str:
    """A category name cut to the contract's label alphabet (other characters → ``_``)."""
    clean = "".join(c if c.isalnum() or c in " -_.+()" else "_" for c in str(text)).strip()
    return clean[:64] or "unknown"
