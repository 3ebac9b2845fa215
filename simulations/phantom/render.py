"""A subject on a scanner grid: head pose, the scanner's voxel grid and resampling.

Frames: the working grid is MNI RAS mm; the scanner world frame is DICOM LPS:
``LPS = diag(−1, −1, 1) · RAS_head + table_offset``. Blurring with the scanner PSF
commutes with the rigid head pose, so the generator blurs the basis once per site
(:meth:`~fedmi.simulations.phantom.basis.Basis.blurred`) and renders each subject's
weighted sum with :func:`render_on_scanner`.
"""

from __future__ import annotations

import functools
import math

import numpy as np
from scipy import ndimage

from fedmi.shared.anatomy import tissue_on_grid
from fedmi.shared.grid import Grid
from fedmi.simulations.phantom.atrophy import apply_atrophy
from fedmi.simulations.phantom.basis import WORKING_GRID_2MM
from fedmi.simulations.phantom.tasks import build_basis, subject_coefficients
from fedmi.simulations.phantom.truth import SubjectTruth

#: MNI point about which subject size varies and the head is rotated (roughly the
#: centre of the brain).
BRAIN_CENTRE_MNI = (0.0, -18.0, 12.0)

RAS_TO_LPS = np.diag([-1.0, -1.0, 1.0, 1.0])


def _rotation(deg: tuple[float, float, float]) -> np.ndarray:
    ax, ay, az = (math.radians(v) for v in deg)
    rx = np.array([[1, 0, 0], [0, math.cos(ax), -math.sin(ax)], [0, math.sin(ax), math.cos(ax)]])
    ry = np.array([[math.cos(ay), 0, math.sin(ay)], [0, 1, 0], [-math.sin(ay), 0, math.cos(ay)]])
    rz = np.array([[math.cos(az), -math.sin(az), 0], [math.sin(az), math.cos(az), 0], [0, 0, 1]])
    return rz @ ry @ rx


def mni_to_scanner_lps(
    scale: tuple[float, float, float] = (1.0, 1.0, 1.0),
    rotation_deg: tuple[float, float, float] = (0.0, 0.0, 0.0),
    shift_mm: tuple[float, float, float] = (0.0, 0.0, 0.0),
    table_offset_lps: tuple[float, float, float] = (0.0, 0.0, 0.0),
) -> np.ndarray:
    """4×4 map from template MNI (RAS mm) to the scanner's DICOM LPS frame.

    The subject's head is the template scaled about :data:`BRAIN_CENTRE_MNI`, rotated
    about it (x, then y, then z) and shifted by ``shift_mm`` (RAS); then RAS → LPS and
    the site's table offset (LPS mm).
    """
    c = np.asarray(BRAIN_CENTRE_MNI)
    m = np.eye(4)
    lin = _rotation(rotation_deg) @ np.diag(scale)
    m[:3, :3] = lin
    m[:3, 3] = c - lin @ c + np.asarray(shift_mm)
    off = np.eye(4)
    off[:3, 3] = table_offset_lps
    return off @ RAS_TO_LPS @ m


def scanner_affine(
    shape: tuple[int, int, int],
    spacing: tuple[float, float, float],
    table_offset_lps: tuple[float, float, float] = (0.0, 0.0, 0.0),
    slice_direction: int = 1,
    fov_centre_mni: tuple[float, float, float] = (0.0, -18.0, 12.0),
) -> np.ndarray:
    """Voxel ``[i, j, k]`` → LPS affine of an axial scanner grid centred on the head.

    Rows run along +x LPS (towards the patient's left), columns along +y (posterior);
    ``slice_direction`` +1 puts slice 0 at the feet end, −1 at the head end.
    """
    a = np.diag([spacing[0], spacing[1], spacing[2] * (1 if slice_direction >= 0 else -1), 1.0])
    centre = RAS_TO_LPS[:3, :3] @ np.asarray(fov_centre_mni) + np.asarray(table_offset_lps)
    a[:3, 3] = centre - a[:3, :3] @ ((np.asarray(shape) - 1) / 2.0)
    return a


@functools.lru_cache(maxsize=4)
def brain_surface_points(grid: Grid) -> np.ndarray:
    """MNI RAS mm (N × 3) of the template brain's boundary voxels (GM + WM ≥ 0.5) on ``grid``."""
    t = tissue_on_grid(grid)
    mask = (t["gm"] + t["wm"]) >= 0.5
    surface = mask & ~ndimage.binary_erosion(mask)
    pts = grid.world_coordinates()[:, surface].T.copy()
    pts.setflags(write=False)
    return pts


def axial_fov_centre(
    mni_to_lps: np.ndarray,
    n_slices: int,
    slice_mm: float,
    table_offset_lps: tuple[float, float, float],
    fov_cut_mm: float,
    grid: Grid = WORKING_GRID_2MM,
) -> tuple[float, float, float]:
    """``fov_centre_mni`` for :func:`scanner_affine` that centres the posed brain axially.

    The technologist centres the head in the axial field of view; with ``fov_cut_mm`` > 0
    the field of view instead ends that many mm below the top of the brain (vertex cut),
    with ``fov_cut_mm`` < 0 that many mm above its bottom (cerebellum cut). In-plane the
    default centre is kept.
    """
    pts = brain_surface_points(grid)
    z = (np.asarray(mni_to_lps)[2, :3] @ pts.T) + np.asarray(mni_to_lps)[2, 3]
    half = (n_slices - 1) / 2.0 * slice_mm
    if fov_cut_mm > 0:
        centre = float(z.max()) - fov_cut_mm - half
    elif fov_cut_mm < 0:
        centre = float(z.min()) - fov_cut_mm + half
    else:
        centre = 0.5 * float(z.max() + z.min())
    return (0.0, -18.0, centre - float(table_offset_lps[2]))


def render_on_scanner(
    volume: np.ndarray,
    grid: Grid,
    mni_to_lps: np.ndarray,
    shape: tuple[int, int, int],
    affine_lps: np.ndarray,
) -> np.ndarray:
    """Sample a working-grid volume at every scanner voxel (trilinear, 0 outside).

    Returns a float32 ``shape`` array indexed ``[i, j, k]`` like the DICOM writer.
    """
    m = np.linalg.inv(grid.affine) @ np.linalg.inv(mni_to_lps) @ np.asarray(affine_lps)
    return ndimage.affine_transform(
        np.asarray(volume, dtype=np.float32),
        m[:3, :3],
        offset=m[:3, 3],
        output_shape=tuple(shape),
        order=1,
        mode="constant",
        cval=0.0,
        prefilter=False,
    )


def subject_volume(
    truth: SubjectTruth,
    shape: tuple[int, int, int],
    affine_lps: np.ndarray,
    *,
    fwhm_mm: float = 0.0,
    table_offset_lps: tuple[float, float, float] = (0.0, 0.0, 0.0),
    grid: Grid = WORKING_GRID_2MM,
) -> np.ndarray:
    """One subject's noiseless volume on a scanner grid (SUV for PET, activity for NM).

    Convenience for tests; the generator does the same with a per-site blurred basis.
    """
    basis = build_basis(truth.task, grid)
    if fwhm_mm > 0:
        basis = basis.blurred(fwhm_mm)
    vol = apply_atrophy(basis.combine(subject_coefficients(truth, basis)), grid, truth.atrophy)
    xf = mni_to_scanner_lps(truth.scale, truth.rotation_deg, truth.shift_mm, table_offset_lps)
    return render_on_scanner(vol, grid, xf, shape, affine_lps)
