"""MC-dropout predictive uncertainty at the site (scores never leave; only aggregates do).

``T`` stochastic forward passes with every dropout layer in training mode and everything
else (GroupNorm, the site-local layers) in evaluation mode give ``T`` probabilities per
scan; their mean is the MC-dropout prediction and its binary entropy the scan's
uncertainty (:mod:`fedmi.shared.uncertainty`). :func:`uncertainty_metrics` turns them into the
declared ``evaluate.external`` aggregates (:data:`fedmi.shared.contract.UNCERTAINTY_METRICS`).
"""

from __future__ import annotations

import logging

import numpy as np
import torch
from torch import nn

from fedmi.client.evaluation.suppression import merge_calibration_bins
from fedmi.shared.contract import REFERRAL_RATES
from fedmi.shared.stats import calibration_statistics
from fedmi.shared.uncertainty import DEFAULT_MC_PASSES, mc_summary, referral_statistics

log = logging.getLogger(__name__)


def _dropouts(model: nn.Module) -> list[nn.Module]:
    return [m for m in model.modules() if isinstance(m, nn.modules.dropout._DropoutNd)]


@torch.no_grad()
def mc_dropout_probabilities(
    model: nn.Module,
    x: torch.Tensor,
    passes: int = DEFAULT_MC_PASSES,
    *,
    seed: int = 0,
    batch_size: int = 32,
) -> np.ndarray:
    """``(passes, n)`` positive-class probabilities with dropout active.

    The model is left in evaluation mode afterwards; the global torch RNG is not
    disturbed (the passes draw from a forked, seeded stream).
    """
    model.eval()
    drops = _dropouts(model)
    if not drops:
        log.warning("the model has no dropout layer: MC-dropout passes are identical")
    out = np.zeros((passes, int(x.shape[0])), dtype=np.float64)
    try:
        for m in drops:
            m.train()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            for t in range(passes):
                for start in range(0, int(x.shape[0]), batch_size):
                    logits = model(x[start : start + batch_size]).float()
                    out[t, start : start + len(logits)] = torch.sigmoid(logits).cpu().numpy()
    finally:
        model.eval()
    return out


def uncertainty_metrics(
    pass_probs: np.ndarray, labels: np.ndarray, min_cell_count: int
) -> dict[str, object]:
    """Declared uncertainty aggregates of one site's evaluated scans.

    Calibration bins of the MC mean are merged under the small-cell rule; nothing is
    returned when the site has fewer than ``k`` scans or fewer than ``k`` of a class
    (the same rule as the evaluation reply).
    """
    y = np.asarray(labels).astype(np.int64)
    k = int(min_cell_count)
    n, n_pos = int(y.size), int(y.sum())
    if n < k or n_pos < k or n - n_pos < k or n == 0:
        return {}
    mean, entropy, _ = mc_summary(pass_probs)
    cal = calibration_statistics(mean, y)
    merged = merge_calibration_bins(cal["cal-count"], cal["cal-sum-prob"], cal["cal-sum-label"], k)  # type: ignore[arg-type]
    if merged is None:
        return {}
    retained, correct = referral_statistics(mean, y, entropy, REFERRAL_RATES)
    return {
        "mc-passes": int(np.asarray(pass_probs).shape[0]),
        "mc-sq-error-sum": float(cal["sq-error-sum"]),  # type: ignore[arg-type]
        "mc-cal-count": merged[0],
        "mc-cal-sum-prob": merged[1],
        "mc-cal-sum-label": merged[2],
        "referral-retained": retained,
        "referral-correct": correct,
    }
