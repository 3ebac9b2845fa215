"""Native volume → the task's template grid: anti-aliasing, head-position correction,
resampling and reference-region normalisation.

Head-position correction (a translation, **not** a registration)
----------------------------------------------------------------
Scanners put the head anywhere in the field of view, so the native RAS frame is not MNI.
Ingest estimates one translation: the centre of mass of the scan's *brain activity* is
moved onto the centre of mass of the template brain. The scan's brain activity is taken
as the hottest ``N`` voxels of the (smoothed) scan on a 4 mm grid spanning the scan's
whole field of view (heads sit anywhere in scanner coordinates), with ``N`` the number of
template voxels that are at least half brain (GM + WM probability from
:func:`fedmi.shared.anatomy.tissue_on_grid`); the template side is that same binary brain mask.
Binary masks rather than raw intensity weights are used on purpose: the tracer's own
pattern (the striatum in DaT SPECT, white matter in amyloid PET, cortex in FDG) would
otherwise pull the centre of mass by up to ~20 mm. No rotation, scaling or non-linear
warp is estimated: a head that is tilted or of unusual size stays so, which is acceptable
for 4 mm regional ratios but not for voxel-wise statistics.

Resampling
----------
Before sampling, the native volume is smoothed with a Gaussian whose FWHM per axis is
``sqrt(target² − native²)`` (only where the native voxel is smaller than the 4 mm target),
so that down-sampling does not alias noise; then trilinear interpolation with
:func:`fedmi.shared.grid.resample_to_grid`.

Normalisation
-------------
The result is divided by the weighted mean over the task's reference region
(:func:`fedmi.shared.anatomy.region_weights`): SUVR for PET, a count ratio for SPECT.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from fedmi.client.ingest.errors import IngestError
from fedmi.shared.anatomy import region_weights, tissue_on_grid
from fedmi.shared.grid import Grid, resample_to_grid
from fedmi.shared.tasks import TaskSpec

#: Fraction of the template brain that must lie inside the scan's field of view.
MIN_COVERAGE = 0.95
FWHM_PER_SIGMA = 2.0 * np.sqrt(2.0 * np.log(2.0))


@dataclass(frozen=True)
class TemplateResult:
    """A volume on the task grid and the quality figures of getting it there.

    Attributes
    ----------
    volume
        float32 of ``task.grid.shape``: the scan divided by its reference-region mean.
    reference_value
        Mean of the resampled scan over the reference region (SUV for PET, counts for NM).
    shift_mm
        RAS translation (mm) applied by the head-position correction (scan CoM − template CoM).
    coverage
        Fraction of template brain voxels inside the scan's field of view.
    """

    volume: np.ndarray
    reference_value: float
    shift_mm: tuple[float, float, float]
    coverage: float


@functools.lru_cache(maxsize=8)
def template_brain(grid: Grid) -> tuple[np.ndarray, np.ndarray]:
    """Binary template brain on ``grid`` (GM + WM ≥ 0.5) and its centre of mass (RAS mm)."""
    tissue = tissue_on_grid(grid)
    mask = (tissue["gm"] + tissue["wm"]) >= 0.5
    com = grid.world_coordinates()[:, mask].mean(axis=1)
    mask.setflags(write=False)
    com.setflags(write=False)
    return mask, com


def field_of_view_grid(shape: tuple[int, ...], affine_ras: np.ndarray, spacing: float) -> Grid:
    """An axis-aligned RAS grid of ``spacing`` mm covering a native volume's field of view."""
    idx = np.array(
        [
            [i, j, k, 1.0]
            for i in (0, shape[0] - 1)
            for j in (0, shape[1] - 1)
            for k in (0, shape[2] - 1)
        ]
    )
    corners = (np.asarray(affine_ras) @ idx.T)[:3]
    lo, hi = corners.min(axis=1), corners.max(axis=1)
    n = np.floor((hi - lo) / spacing).astype(int) + 1
    return Grid(tuple(int(v) for v in n), (spacing,) * 3, tuple(float(v) for v in lo))


def antialias(volume: np.ndarray, affine: np.ndarray, target_mm: float) -> np.ndarray:
    """Gaussian pre-smoothing of axes whose voxels are finer than ``target_mm``."""
    sizes = np.linalg.norm(np.asarray(affine)[:3, :3], axis=0)
    fwhm = np.sqrt(np.clip(target_mm**2 - sizes**2, 0.0, None))
    sigma = fwhm / FWHM_PER_SIGMA / sizes
    if float(sigma.max()) < 0.1:
        return np.asarray(volume, dtype=np.float32)
    return ndimage.gaussian_filter(
        np.asarray(volume, dtype=np.float32), sigma=sigma, mode="nearest", truncate=3.0
    )


def head_shift(volume: np.ndarray, affine_ras: np.ndarray, grid: Grid) -> np.ndarray:
    """RAS translation (mm) that moves the scan's brain onto the template brain.

    See the module docstring; ``volume`` should already be anti-aliased.
    """
    mask_t, com_t = template_brain(grid)
    n = int(mask_t.sum())
    search = field_of_view_grid(volume.shape, affine_ras, float(min(grid.spacing)))
    xyz = search.world_coordinates().reshape(3, -1)
    coarse = resample_to_grid(volume, affine_ras, search, order=1).reshape(-1)
    positive = int(np.count_nonzero(coarse > 0))
    if positive == 0:
        return np.zeros(3)
    n = min(n, positive)
    thr = np.partition(coarse, coarse.size - n)[coarse.size - n]
    sel = coarse >= max(thr, np.finfo(np.float32).tiny)
    com_s = xyz[:, sel].mean(axis=1)
    return com_s - com_t


def to_template(
    volume: np.ndarray, affine_ras: np.ndarray, task: TaskSpec, *, name: str = "series"
) -> TemplateResult:
    """Put a native volume on ``task.grid`` and divide it by its reference-region mean.

    Parameters
    ----------
    volume
        Native volume (SUV or counts), indexed like ``affine_ras``.
    affine_ras
        4×4 voxel → RAS mm affine.
    task
        Supplies the grid and the reference region.
    name
        Series description for error messages.

    Raises
    ------
    IngestError
        ``incomplete_coverage`` when less than :data:`MIN_COVERAGE` of the template brain is
        inside the field of view; ``empty_reference_region`` when the reference mean is not
        positive.
    """
    grid = task.grid
    smooth = antialias(volume, affine_ras, float(min(grid.spacing)))
    shift = head_shift(smooth, affine_ras, grid)
    move = np.eye(4)
    move[:3, 3] = shift
    out = resample_to_grid(
        smooth, affine_ras, grid, order=1, world_to_volume_world=move, cval=np.nan
    )
    mask_t, _ = template_brain(grid)
    coverage = float(np.isfinite(out[mask_t]).mean())
    if coverage < MIN_COVERAGE:
        raise IngestError(
            "incomplete_coverage",
            f"{name}: only {100 * coverage:.0f}% of the brain lies inside the field of view "
            f"(head-position shift {np.round(shift, 1).tolist()} mm). Export a reconstruction "
            "that covers the whole head.",
        )
    np.nan_to_num(out, copy=False, nan=0.0)
    w = region_weights(task.reference_region, grid)
    ref = float(np.sum(w * out, dtype=np.float64) / np.sum(w, dtype=np.float64))
    if not np.isfinite(ref) or ref <= 0:
        raise IngestError(
            "empty_reference_region",
            f"{name}: the {task.reference_region} reference region has mean {ref:g} after "
            "resampling, so no ratio can be formed. Check that the series is a brain scan with "
            "activity.",
        )
    out /= np.float32(ref)
    return TemplateResult(out.astype(np.float32, copy=False), ref, tuple(shift.tolist()), coverage)
