"""Atrophy: ventricle widening (a smooth non-linear warp) and sulcal widening (cortical loss).

A subject with atrophy index ``a`` (0…1, :func:`fedmi.simulations.phantom.truth.draw_atrophy`)
has, in template space, the activity ``A(x − a·u(x)) · (1 − a·L(x))``:

* ``u`` pushes tissue away from the lateral ventricles (a Gaussian-weighted radial field
  about MNI :data:`VENTRICLE_CENTRE_MNI`, :data:`VENTRICLE_SHIFT_MM` at one sigma), so the
  ventricles widen and the deep grey matter moves outwards: a change of shape that no
  affine transform undoes;
* ``L`` is the smoothed cortical grey-matter map, scaled so that ``a = 1`` removes
  :data:`CORTICAL_LOSS` of the cortical signal: sulcal CSF widening, seen by PET as a
  partial-volume loss of cortical uptake (a real loss of the region's mean, so it belongs
  to the subject's truth, unlike the warp).

Both are applied on the working grid after the PSF blur; ``L`` is smooth (σ 4 mm), so the
order hardly matters at PET resolutions.
"""

from __future__ import annotations

import functools

import numpy as np
from scipy import ndimage

from fedmi.shared.anatomy import region_weights, tissue_on_grid
from fedmi.shared.grid import Grid

#: Centre (MNI RAS mm) and extent (sigma per axis, mm) of the lateral ventricles' field.
VENTRICLE_CENTRE_MNI = (0.0, -10.0, 15.0)
VENTRICLE_SIGMA_MM = (16.0, 24.0, 12.0)
#: Outward displacement at one sigma from the centre for ``a = 1`` (mm).
VENTRICLE_SHIFT_MM = 3.0
#: Fraction of the cortical grey-matter signal lost at ``a = 1``.
CORTICAL_LOSS = 0.10


@functools.lru_cache(maxsize=4)
def atrophy_fields(grid: Grid) -> tuple[np.ndarray, np.ndarray]:
    """``u`` (3 × grid, mm, for ``a = 1``) and ``L`` (grid, 0…1) on ``grid`` (read-only)."""
    xyz = grid.world_coordinates()
    rel = [(xyz[i] - VENTRICLE_CENTRE_MNI[i]) / VENTRICLE_SIGMA_MM[i] for i in range(3)]
    weight = np.exp(0.5 - 0.5 * sum(r * r for r in rel))
    u = np.stack([VENTRICLE_SHIFT_MM * r * weight for r in rel]).astype(np.float32)
    gm = np.asarray(tissue_on_grid(grid)["gm"], dtype=np.float32)
    noncortex = sum(region_weights(r, grid) for r in ("cerebellum_gm", "striatum", "thalamus"))
    cortex = gm * np.clip(1.0 - noncortex, 0.0, 1.0)
    loss = ndimage.gaussian_filter(cortex, 4.0 / np.asarray(grid.spacing))
    loss = (loss / max(float(loss.max()), 1e-6)).astype(np.float32)
    u.setflags(write=False)
    loss.setflags(write=False)
    return u, loss


def cortical_factor(grid: Grid, atrophy: float) -> np.ndarray:
    """``1 − a·CORTICAL_LOSS·L``: the multiplicative cortical loss on ``grid``."""
    _, loss = atrophy_fields(grid)
    return (1.0 - float(atrophy) * CORTICAL_LOSS * loss).astype(np.float32)


def apply_atrophy(volume: np.ndarray, grid: Grid, atrophy: float) -> np.ndarray:
    """The template-space ``volume`` of a subject with atrophy index ``atrophy`` (float32)."""
    if atrophy <= 0:
        return np.asarray(volume, dtype=np.float32)
    u, _ = atrophy_fields(grid)
    idx = np.indices(grid.shape, dtype=np.float32)
    sp = np.asarray(grid.spacing, dtype=np.float32).reshape(3, 1, 1, 1)
    coords = idx - float(atrophy) * u / sp
    warped = ndimage.map_coordinates(
        np.asarray(volume, dtype=np.float32), coords, order=1, mode="nearest", prefilter=False
    )
    return warped * cortical_factor(grid, atrophy)
