"""Spatial normalisation: register a scan to its task template with SimpleITK.

The fixed image is the task's template (:func:`fedmi.shared.templates.task_template`, 4 mm,
whole head), the moving image the scan, anti-aliased and resampled to 4 mm over its field
of view. Both are brain PET/SPECT of similar contrast, so the metric is the normalised
cross-correlation, evaluated inside the dilated template brain on a fixed pseudo-random
sample of voxels (seeded: the result is a deterministic function of the scan).

Stages (:class:`RegistrationSettings`):

1. similarity transform (rotation, one scale, translation) at 8 mm with 8 mm smoothing,
   started from the centre-of-mass translation of
   :func:`fedmi.client.ingest.template.head_shift`; when its correlation stays below
   ``restart_below``, again from heads pitched by ``start_pitches_deg`` (the largest real
   tilt is nodding), keeping the best;
2. affine transform (12 parameters: anisotropic head size and shear) at 4 mm;
3. optionally (``method="affine+bspline"``) a coarse B-spline warp (``bspline_mesh``³
   control cells) for brains whose shape differs (atrophy).

``method="translation"`` skips all three: the centre-of-mass translation of earlier
versions. SimpleITK is imported inside the functions so ``fedmi-site --help`` stays fast.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import ndimage

from fedmi.shared.grid import Grid
from fedmi.shared.templates import REGISTRATION_GRID

METHODS = ("translation", "affine", "affine+bspline")
#: Rotation centre of the transforms: about the centre of the brain (MNI RAS mm).
CENTRE_MNI = (0.0, -18.0, 12.0)


@dataclass(frozen=True)
class RegistrationSettings:
    """How ingest normalises a scan spatially (every field is part of the cache key).

    Attributes
    ----------
    method
        ``translation`` (centre of mass only, as before), ``affine`` (default) or
        ``affine+bspline``.
    coarse_smoothing_mm, coarse_sampling, coarse_iterations
        Stage 1: Gaussian smoothing (mm), fraction of mask voxels sampled, iterations.
    fine_sampling, fine_iterations
        Stage 2 (affine at 4 mm).
    bspline_mesh, bspline_iterations
        Stage 3: control cells per axis and L-BFGS-B iterations.
    restart_below
        Stage-1 correlation below which the other starting pitches are tried.
    start_pitches_deg
        Extra starting head pitches (degrees about the left–right axis).
    """

    method: str = "affine"
    coarse_smoothing_mm: float = 8.0
    coarse_sampling: float = 0.5
    coarse_iterations: int = 100
    fine_sampling: float = 0.15
    fine_iterations: int = 50
    bspline_mesh: int = 3
    bspline_iterations: int = 30
    restart_below: float = 0.85
    start_pitches_deg: tuple[float, ...] = (25.0, -25.0)

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(
                f"unknown spatial normalisation {self.method!r}; choose one of {METHODS}"
            )

    def fingerprint(self) -> str:
        """The settings as text (hashed into ingest cache keys)."""
        return repr(self)


@dataclass(frozen=True)
class Registration:
    """Where each template point lies in the scan.

    Attributes
    ----------
    matrix
        4×4 affine from template RAS mm to scan RAS mm (applied after ``warp``).
    warp
        The B-spline stage's SimpleITK transform (template → template), or ``None``.
    metric
        The optimiser's final correlation (0…1, higher is better).
    iterations
        Optimiser iterations over all stages and starts.
    starts
        Starting poses tried.
    """

    matrix: np.ndarray
    warp: Any = None
    metric: float = float("nan")
    iterations: int = 0
    starts: int = 1

    def scan_points(self, grid: Grid) -> np.ndarray:
        """Scan RAS mm of every voxel centre of ``grid``, shape ``(3, *grid.shape)``."""
        pts = grid.world_coordinates().reshape(3, -1)
        if self.warp is not None:
            pts = pts + _displacement(self.warp, grid).reshape(3, -1)
        out = self.matrix[:3, :3] @ pts + self.matrix[:3, 3:4]
        return out.reshape(3, *grid.shape)


def translation(shift_mm: np.ndarray) -> Registration:
    """The centre-of-mass translation as a :class:`Registration`."""
    m = np.eye(4)
    m[:3, 3] = shift_mm
    return Registration(matrix=m)


def _image(array: np.ndarray, grid: Grid) -> Any:
    import SimpleITK as sitk

    img = sitk.GetImageFromArray(np.ascontiguousarray(np.asarray(array, np.float32).transpose()))
    img.SetSpacing(tuple(float(v) for v in grid.spacing))
    img.SetOrigin(tuple(float(v) for v in grid.origin))
    return img


def _method(sampling: float, iterations: int, scales: list[float], mask: Any) -> Any:
    import SimpleITK as sitk

    r = sitk.ImageRegistrationMethod()
    r.SetMetricAsCorrelation()
    r.SetMetricFixedMask(mask)
    r.SetMetricSamplingStrategy(r.RANDOM)
    r.SetMetricSamplingPercentage(sampling, 1)
    r.SetInterpolator(sitk.sitkLinear)
    r.SetOptimizerAsRegularStepGradientDescent(
        learningRate=1.0,
        minStep=1e-3,
        numberOfIterations=iterations,
        relaxationFactor=0.5,
        gradientMagnitudeTolerance=1e-6,
    )
    r.SetOptimizerScales(scales)
    return r


def _stage_similarity(
    fixed: Any, moving: Any, mask: Any, shift: np.ndarray, settings: RegistrationSettings
) -> tuple[Any, float, int, int]:
    """Stage 1 from each start; the best transform, its correlation, iterations, starts."""
    import SimpleITK as sitk

    best, best_metric, iterations, starts = None, -np.inf, 0, 0
    r2 = 80.0**2  # a unit rotation/scale moves a point 80 mm from the centre by 80 mm
    for pitch in (0.0, *settings.start_pitches_deg):
        xf = sitk.Similarity3DTransform()
        xf.SetCenter(CENTRE_MNI)
        xf.SetTranslation(tuple(float(v) for v in shift))
        xf.SetRotation((1.0, 0.0, 0.0), math.radians(pitch))
        r = _method(
            settings.coarse_sampling, settings.coarse_iterations, [r2] * 3 + [1.0] * 3 + [r2], mask
        )
        r.SetShrinkFactorsPerLevel([2])
        r.SetSmoothingSigmasPerLevel([settings.coarse_smoothing_mm])
        r.SmoothingSigmasAreSpecifiedInPhysicalUnitsOn()
        r.SetInitialTransform(xf, inPlace=True)
        r.Execute(fixed, moving)
        metric = -float(r.GetMetricValue())
        iterations += int(r.GetOptimizerIteration())
        starts += 1
        if np.isfinite(metric) and metric > best_metric:
            best, best_metric = xf, metric
        if best_metric >= settings.restart_below:
            break
    return best, best_metric, iterations, starts


def register(
    moving: np.ndarray,
    moving_grid: Grid,
    template: np.ndarray,
    template_mask: np.ndarray,
    shift: np.ndarray,
    settings: RegistrationSettings,
    template_grid: Grid = REGISTRATION_GRID,
) -> Registration:
    """Register ``moving`` (on ``moving_grid``) to ``template`` (on ``template_grid``).

    Raises
    ------
    RuntimeError
        When SimpleITK fails (e.g. too few voxels of the scan overlap the template).
    """
    import SimpleITK as sitk

    if settings.method == "translation":
        return translation(shift)
    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(1)
    fixed, mov = _image(template, template_grid), _image(moving, moving_grid)
    mask = sitk.Cast(
        _image(ndimage.binary_dilation(template_mask, iterations=2), template_grid), sitk.sitkUInt8
    )
    sim, _, iterations, starts = _stage_similarity(fixed, mov, mask, shift, settings)
    if sim is None:
        raise RuntimeError("the correlation with the template was never finite")
    aff = sitk.AffineTransform(3)
    aff.SetCenter(CENTRE_MNI)
    aff.SetMatrix(sim.GetMatrix())
    aff.SetTranslation(sim.GetTranslation())
    r = _method(settings.fine_sampling, settings.fine_iterations, [80.0**2] * 9 + [1.0] * 3, mask)
    r.SetInitialTransform(aff, inPlace=True)
    r.Execute(fixed, mov)
    metric = -float(r.GetMetricValue())
    iterations += int(r.GetOptimizerIteration())
    warp = None
    if settings.method == "affine+bspline":
        warp, metric, its = _stage_bspline(fixed, mov, mask, aff, settings)
        iterations += its
    return Registration(_matrix(aff), warp, metric, iterations, starts)


def _stage_bspline(
    fixed: Any, moving: Any, mask: Any, affine: Any, settings: RegistrationSettings
) -> tuple[Any, float, int]:
    """Stage 3: a coarse B-spline warp in template space, after ``affine``."""
    import SimpleITK as sitk

    warp = sitk.BSplineTransformInitializer(fixed, [settings.bspline_mesh] * 3)
    r = sitk.ImageRegistrationMethod()
    r.SetMetricAsCorrelation()
    r.SetMetricFixedMask(mask)
    r.SetMetricSamplingStrategy(r.RANDOM)
    r.SetMetricSamplingPercentage(settings.fine_sampling, 1)
    r.SetInterpolator(sitk.sitkLinear)
    r.SetOptimizerAsLBFGSB(
        gradientConvergenceTolerance=1e-5,
        numberOfIterations=settings.bspline_iterations,
        maximumNumberOfCorrections=5,
    )
    r.SetMovingInitialTransform(affine)
    r.SetInitialTransform(warp, inPlace=True)
    r.Execute(fixed, moving)
    return warp, -float(r.GetMetricValue()), int(r.GetOptimizerIteration())


def _matrix(xf: Any) -> np.ndarray:
    """4×4 of a SimpleITK matrix-offset transform (``y = A(x − c) + c + t``)."""
    a = np.asarray(xf.GetMatrix(), dtype=np.float64).reshape(3, 3)
    c = np.asarray(xf.GetCenter(), dtype=np.float64)
    t = np.asarray(xf.GetTranslation(), dtype=np.float64)
    m = np.eye(4)
    m[:3, :3] = a
    m[:3, 3] = c + t - a @ c
    return m


def _displacement(warp: Any, grid: Grid) -> np.ndarray:
    """The warp's displacement (mm) at every voxel centre of ``grid``, ``(3, *shape)``."""
    import SimpleITK as sitk

    field = sitk.TransformToDisplacementField(
        warp,
        sitk.sitkVectorFloat64,
        [int(v) for v in grid.shape],
        [float(v) for v in grid.origin],
        [float(v) for v in grid.spacing],
    )
    arr = sitk.GetArrayFromImage(field)  # (z, y, x, 3)
    return np.moveaxis(arr, -1, 0).transpose(0, 3, 2, 1)
