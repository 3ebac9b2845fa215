"""Site-side OOD scores and MC-dropout passes on tiny synthetic volumes (no DICOM)."""

from __future__ import annotations

import numpy as np
import torch
from scipy import ndimage

from fedmi.client.evaluation.ood import (
    embeddings,
    merge_histogram,
    ood_metrics,
    ood_statistics_metrics,
)
from fedmi.client.evaluation.uncertainty import mc_dropout_probabilities
from fedmi.server.federation.ood import statistics_from_metrics
from fedmi.shared.contract import OOD_METRICS
from fedmi.shared.model import build_model
from fedmi.shared.ood import (
    describe,
    detection_auroc,
    mahalanobis_scores,
    ood_histogram,
    pool_feature_statistics,
)

SHAPE = (40, 48, 40)


def _volumes(n: int, seed: int) -> tuple[torch.Tensor, np.ndarray]:
    """Smooth 'brains': an ellipsoid with a label-dependent dip and per-scan texture."""
    rng = np.random.default_rng(seed)
    zz, yy, xx = np.meshgrid(*[np.linspace(-1, 1, s) for s in SHAPE], indexing="ij")
    brain = ((zz / 0.8) ** 2 + (yy / 0.85) ** 2 + (xx / 0.75) ** 2 < 1).astype(np.float32)
    y = rng.integers(0, 2, n)
    out = []
    for i in range(n):
        tex = ndimage.gaussian_filter(rng.normal(size=SHAPE), 1.0) * 3.0
        v = brain * (1.0 + 0.3 * tex - 0.3 * y[i] * (yy > 0.3))
        out.append(v.astype(np.float32))
    return torch.from_numpy(np.stack(out)[:, None]), y


def test_blurred_scaled_site_scores_higher_than_an_unshifted_one():
    torch.manual_seed(0)
    model = build_model()
    xs = [_volumes(16, s) for s in (1, 2)]  # two training sites
    parts = [
        statistics_from_metrics(ood_statistics_metrics(embeddings(model, x), y, 3)) for x, y in xs
    ]
    desc = describe(pool_feature_statistics(parts))
    x_in, _ = _volumes(12, 3)
    shifted = torch.from_numpy(
        np.stack([ndimage.gaussian_filter(v[0], 2.5) * 1.6 for v in x_in.numpy()])[:, None]
    )
    s_in = mahalanobis_scores(embeddings(model, x_in), desc)
    s_out = mahalanobis_scores(embeddings(model, shifted), desc)
    assert np.median(s_out) > np.median(s_in)
    auc = detection_auroc(ood_histogram(s_out), ood_histogram(s_in))
    assert auc.auc > 0.9
    m = ood_metrics(embeddings(model, shifted), desc, 3)
    assert all(not OOD_METRICS[k].problems(k, v) for k, v in m.items())
    assert m["ood-num-examples"] == 12 and sum(m["ood-hist"]) == 12
    assert ood_metrics(embeddings(model, shifted), desc, 13) == {}


def test_merge_histogram_leaves_no_small_cell():
    hist = [0] * 10
    hist[1], hist[2], hist[5], hist[9] = 2, 3, 6, 1
    merged, small = merge_histogram(hist, 5)
    assert sum(merged) == 12 and small == 3
    assert all(v == 0 or v >= 5 for v in merged)
    assert merge_histogram([1, 2, 0], 5) is None


def test_mc_dropout_passes_vary_but_leave_model_and_rng_alone():
    torch.manual_seed(0)
    model = build_model()
    x, _ = _volumes(3, 4)
    model.eval()
    with torch.no_grad():
        plain = torch.sigmoid(model(x)).numpy()
    state = torch.random.get_rng_state()
    probs = mc_dropout_probabilities(model, x, passes=5, seed=1)
    assert torch.equal(state, torch.random.get_rng_state())
    assert probs.shape == (5, 3)
    assert np.ptp(probs, axis=0).max() > 0  # dropout was on
    assert not model.training and not any(m.training for m in model.modules())
    again = mc_dropout_probabilities(model, x, passes=5, seed=1)
    np.testing.assert_array_equal(probs, again)
    with torch.no_grad():
        np.testing.assert_allclose(torch.sigmoid(model(x)).numpy(), plain)
