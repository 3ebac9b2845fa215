"""Native volume → the task's template grid: anti-aliasing, spatial normalisation,
resampling, quality control and reference-region normalisation.

Spatial normalisation
---------------------
Scanners put the head anywhere in the field of view, tilted and of any size, so the native
RAS frame is not MNI. Ingest first estimates a translation: the centre of mass of the scan's
*brain activity* is moved onto that of the template brain (the hottest ``N`` voxels of the
anti-aliased scan on a 4 mm grid over its whole field of view, ``N`` the number of template
brain voxels; binary masks because the tracer's own pattern would pull an intensity-weighted
centre by up to ~20 mm). From there :func:`fedmi.client.ingest.registration.register` finds
the affine transform (and optionally a coarse B-spline warp) that brings the task's template
(:func:`fedmi.shared.templates.task_template`) onto the scan. ``RegistrationSettings(method=
"translation")`` stops after the translation, as fedmi did before (no QC beyond coverage).

Resampling
----------
Before sampling, the native volume is smoothed with a Gaussian whose FWHM per axis is
``sqrt(target² − native²)`` (only where the native voxel is smaller than the 4 mm target),
so that down-sampling does not alias noise; then every task-grid voxel is sampled
(trilinear) at its place in the scan.

Quality control and cut fields of view
--------------------------------------
:mod:`fedmi.client.ingest.quality` measures the result (correlation with the template,
brain and reference coverage, the pose) and rejects or flags the series. Task-grid voxels
outside the scan's field of view (a cut vertex or cerebellum) take the mean of the visible
part of their atlas composite region (:func:`fedmi.shared.anatomy.composite_index`) when at
least half of it is visible, else the template scaled to the scan: a regional mean is then
the mean of what was imaged, not diluted by zeros.

Normalisation
-------------
The result is divided by the weighted mean over the task's reference region
(:func:`fedmi.shared.anatomy.region_weights`): SUVR for PET, a count ratio for SPECT.
"""

from __future__ import annotations

import functools
import time
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from fedmi.client.ingest.errors import IngestError
from fedmi.client.ingest.quality import QcThresholds, Quality, judge, measure
from fedmi.client.ingest.registration import Registration, RegistrationSettings, register
from fedmi.shared.anatomy import composite_index, region_weights, tissue_on_grid
from fedmi.shared.grid import Grid, resample_to_grid
from fedmi.shared.tasks import TaskSpec
from fedmi.shared.templates import REGISTRATION_GRID, brain_mask, task_template

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
    registration
        Where the template lies in the scan (``None`` never, kept optional for callers).
    quality
        QC figures and flags (``None`` for ``method="translation"``).
    seconds
        Time spent registering.
    """

    volume: np.ndarray
    reference_value: float
    shift_mm: tuple[float, float, float]
    coverage: float
    registration: Registration | None = None
    quality: Quality | None = None
    seconds: float = 0.0


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


def fov_volume(
    volume: np.ndarray, affine_ras: np.ndarray, spacing: float
) -> tuple[Grid, np.ndarray]:
    """The (anti-aliased) scan on an axis-aligned ``spacing`` grid over its field of view."""
    search = field_of_view_grid(volume.shape, affine_ras, spacing)
    return search, resample_to_grid(volume, affine_ras, search, order=1)


def head_shift(volume: np.ndarray, affine_ras: np.ndarray, grid: Grid) -> np.ndarray:
    """RAS translation (mm) that moves the scan's brain onto the template brain.

    See the module docstring; ``volume`` should already be anti-aliased.
    """
    search, coarse = fov_volume(volume, affine_ras, float(min(grid.spacing)))
    return _com_shift(coarse, search, grid)


def _com_shift(coarse: np.ndarray, search: Grid, grid: Grid) -> np.ndarray:
    """:func:`head_shift` from the scan already on its field-of-view grid ``search``."""
    mask_t, com_t = template_brain(grid)
    n = int(mask_t.sum())
    xyz = search.world_coordinates().reshape(3, -1)
    coarse = coarse.reshape(-1)
    positive = int(np.count_nonzero(coarse > 0))
    if positive == 0:
        return np.zeros(3)
    n = min(n, positive)
    thr = np.partition(coarse, coarse.size - n)[coarse.size - n]
    sel = coarse >= max(thr, np.finfo(np.float32).tiny)
    com_s = xyz[:, sel].mean(axis=1)
    return com_s - com_t


def _sample(volume: np.ndarray, affine_ras: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Trilinear samples of ``volume`` at RAS ``points`` ``(3, ...)``; NaN outside it."""
    inv = np.linalg.inv(np.asarray(affine_ras, dtype=np.float64))
    flat = points.reshape(3, -1)
    idx = inv[:3, :3] @ flat + inv[:3, 3:4]
    out = ndimage.map_coordinates(
        np.asarray(volume, dtype=np.float32),
        idx,
        order=1,
        mode="constant",
        cval=np.nan,
        prefilter=False,
    )
    return out.reshape(points.shape[1:]).astype(np.float32, copy=False)


def fill_outside(out: np.ndarray, spec: TaskSpec) -> None:
    """Fill NaN voxels (outside the field of view) in place (see the module docstring)."""
    missing = ~np.isfinite(out)
    if not missing.any():
        return
    flat, miss = out.reshape(-1), missing.reshape(-1)
    tpl = task_template(spec, spec.grid).reshape(-1).astype(np.float64)
    vis = ~miss & (tpl > 0.05)
    scale = float(np.dot(flat[vis], tpl[vis]) / max(float(np.dot(tpl[vis], tpl[vis])), 1e-12))
    fill = (tpl * scale).astype(np.float32)
    index, _ = composite_index(spec.grid)
    for slot in np.unique(index[miss & (index >= 0)]):
        sel = index == slot
        seen = sel & ~miss
        if seen.sum() >= 0.5 * sel.sum():
            fill[sel & miss] = float(flat[seen].mean())
    flat[miss] = fill[miss]


def to_template(
    volume: np.ndarray,
    affine_ras: np.ndarray,
    task: TaskSpec,
    *,
    name: str = "series",
    settings: RegistrationSettings | None = None,
    thresholds: QcThresholds | None = None,
) -> TemplateResult:
    """Normalise a native volume onto ``task.grid`` and divide it by its reference-region mean.

    Parameters
    ----------
    volume
        Native volume (SUV or counts), indexed like ``affine_ras``.
    affine_ras
        4×4 voxel → RAS mm affine.
    task
        Supplies the grid, the template and the reference region.
    name
        Series description for error messages.
    settings, thresholds
        Spatial normalisation and QC levels (defaults: affine, :class:`QcThresholds`).

    Raises
    ------
    IngestError
        ``not_brain``, ``registration_failed``, ``implausible_registration`` or
        ``incomplete_coverage`` (:mod:`fedmi.client.ingest.quality`);
        ``empty_reference_region`` when the reference mean is not positive.
    """
    settings = settings or RegistrationSettings()
    grid = task.grid
    smooth = antialias(volume, affine_ras, float(min(grid.spacing)))
    search, coarse = fov_volume(smooth, affine_ras, float(min(grid.spacing)))
    shift = _com_shift(coarse, search, grid)
    task_template(task)  # built once per process, not timed
    t0 = time.perf_counter()
    reg = _register(coarse, search, task, shift, settings, name)
    seconds = time.perf_counter() - t0
    out = _sample(smooth, affine_ras, reg.scan_points(grid))
    quality = None
    if settings.method == "translation":
        coverage = float(np.isfinite(out[brain_mask(grid)]).mean())
        _legacy_coverage(coverage, shift, name)
        np.nan_to_num(out, copy=False, nan=0.0)
    else:
        quality = judge(measure(out, reg, task), thresholds or QcThresholds(), name)
        coverage = quality.coverage
        fill_outside(out, task)
    ref = _reference(out, task, name)
    out /= np.float32(ref)
    return TemplateResult(
        out.astype(np.float32, copy=False),
        ref,
        tuple(shift.tolist()),
        coverage,
        reg,
        quality,
        seconds,
    )


def _register(
    coarse: np.ndarray,
    search: Grid,
    task: TaskSpec,
    shift: np.ndarray,
    settings: RegistrationSettings,
    name: str,
) -> Registration:
    """:func:`~fedmi.client.ingest.registration.register`, a failure as an IngestError."""
    try:
        return register(
            coarse, search, task_template(task), brain_mask(REGISTRATION_GRID), shift, settings
        )
    except RuntimeError as exc:
        raise IngestError(
            "registration_failed",
            f"{name}: spatial normalisation failed ({exc}). Check that the series is a whole "
            "brain scan; review it in the fedmi-site check montage.",
        ) from exc


def _legacy_coverage(coverage: float, shift: np.ndarray, name: str) -> None:
    """The coverage rule of the translation-only path (earlier versions)."""
    if coverage < MIN_COVERAGE:
        raise IngestError(
            "incomplete_coverage",
            f"{name}: only {100 * coverage:.0f}% of the brain lies inside the field of view "
            f"(head-position shift {np.round(shift, 1).tolist()} mm). Export a reconstruction "
            "that covers the whole head.",
        )


def _reference(out: np.ndarray, task: TaskSpec, name: str) -> float:
    """Weighted mean of ``out`` over the task's reference region (must be positive)."""
    w = region_weights(task.reference_region, task.grid)
    ref = float(np.sum(w * out, dtype=np.float64) / np.sum(w, dtype=np.float64))
    if not np.isfinite(ref) or ref <= 0:
        raise IngestError(
            "empty_reference_region",
            f"{name}: the {task.reference_region} reference region has mean {ref:g} after "
            "resampling, so no ratio can be formed. Check that the series is a brain scan with "
            "activity.",
        )
    return ref
