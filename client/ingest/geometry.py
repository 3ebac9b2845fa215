"""Slice ordering and the voxel → patient (LPS) → RAS affine of a DICOM volume.

Conventions
-----------
Native volumes are indexed ``[i, j, k]`` = [column, row, slice]: ``i`` moves along the first
three values of (0020,0037) *Image Orientation (Patient)* (the row direction cosine, i.e.
the direction of increasing column index) by ``PixelSpacing[1]``; ``j`` along the last three
(column direction cosine) by ``PixelSpacing[0]``; ``k`` along the slice normal. DICOM
patient coordinates are LPS; NIfTI / MNI are RAS (x and y negated).

Slices are ordered by their position along the normal, ``dot(normal, IPP)`` with
(0020,0032) *Image Position (Patient)*, never by file name, (0020,0013) *Instance Number*
or (0020,1041) *Slice Location* (annotative only). The slice step is taken from the
first and last positions, not from (0018,0050) *Slice Thickness* or (0018,0088)
*Spacing Between Slices*, which can be wrong.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from fedmi.client.ingest.errors import IngestError

#: LPS ↔ RAS: negate x and y.
LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])

#: Relative tolerance on slice gaps (fraction of the median gap).
SPACING_RTOL = 0.01
#: Absolute tolerance (mm) on orientation, in-plane drift and gaps.
POSITION_ATOL_MM = 0.01


def direction_cosines(iop: Sequence[float]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Row cosine, column cosine and slice normal from (0020,0037) *Image Orientation (Patient)*.

    Parameters
    ----------
    iop
        Six values: the row direction cosine (x, y, z) then the column direction cosine.

    Returns
    -------
    tuple of numpy.ndarray
        ``(row, col, normal)`` unit vectors in LPS; ``normal = row × col``.
    """
    v = np.asarray([float(x) for x in iop], dtype=np.float64)
    if v.shape != (6,):
        raise ValueError("Image Orientation (Patient) must have 6 values")
    row, col = v[:3], v[3:]
    nr, nc = np.linalg.norm(row), np.linalg.norm(col)
    if nr < 1e-6 or nc < 1e-6:
        raise ValueError("Image Orientation (Patient) has a zero direction cosine")
    row, col = row / nr, col / nc
    if abs(float(row @ col)) > 1e-3:
        raise ValueError("Image Orientation (Patient) direction cosines are not orthogonal")
    normal = np.cross(row, col)
    return row, col, normal / np.linalg.norm(normal)


def affine_lps(
    iop: Sequence[float],
    pixel_spacing: Sequence[float],
    first_ipp: Sequence[float],
    slice_step: Sequence[float],
) -> np.ndarray:
    """The 4×4 voxel ``[i, j, k]`` → LPS mm affine.

    Parameters
    ----------
    iop
        (0020,0037) *Image Orientation (Patient)*.
    pixel_spacing
        (0028,0030) *Pixel Spacing* ``[row spacing, column spacing]`` in mm.
    first_ipp
        (0020,0032) *Image Position (Patient)* of slice ``k = 0`` (centre of its first voxel).
    slice_step
        LPS vector (mm) from slice ``k`` to slice ``k + 1``.
    """
    row, col, _ = direction_cosines(iop)
    dr, dc = float(pixel_spacing[0]), float(pixel_spacing[1])
    aff = np.eye(4)
    aff[:3, 0] = row * dc
    aff[:3, 1] = col * dr
    aff[:3, 2] = np.asarray(slice_step, dtype=np.float64)
    aff[:3, 3] = np.asarray(first_ipp, dtype=np.float64)
    return aff


def lps_to_ras(aff_lps: np.ndarray) -> np.ndarray:
    """Turn a voxel → LPS affine into a voxel → RAS affine (NIfTI convention)."""
    return LPS_TO_RAS @ aff_lps


def voxel_sizes(aff: np.ndarray) -> tuple[float, float, float]:
    """Voxel edge lengths (mm) along ``i, j, k`` of an affine."""
    s = np.linalg.norm(np.asarray(aff)[:3, :3], axis=0)
    return (float(s[0]), float(s[1]), float(s[2]))


def order_slices(
    ipps: np.ndarray,
    iop: Sequence[float],
    *,
    expected_slices: int | None = None,
    series: str = "",
) -> tuple[np.ndarray, np.ndarray]:
    """Sort slices along the normal and check that they form one evenly spaced stack.

    Parameters
    ----------
    ipps
        ``(n, 3)`` (0020,0032) *Image Position (Patient)* of each slice, any order.
    iop
        The series' common (0020,0037) *Image Orientation (Patient)*.
    expected_slices
        (0054,0081) *Number of Slices* when the header gives it.
    series
        Series description for error messages.

    Returns
    -------
    tuple of numpy.ndarray
        ``(order, slice_step)``: indices that sort the input, and the LPS step between
        consecutive sorted slices (``(last − first) / (n − 1)``).

    Raises
    ------
    IngestError
        ``conflicting_duplicates`` for two slices at one position, ``missing_slices`` for a
        gap or too few slices, ``uneven_spacing`` for irregular gaps, ``inconsistent_geometry``
        for slices that drift in-plane (gantry tilt / sheared stack).
    """
    ipps = np.asarray(ipps, dtype=np.float64)
    n = ipps.shape[0]
    if n < 2:
        raise IngestError(
            "missing_slices",
            f"{series} has only {n} slice; a volume needs the whole stack. "
            "Re-export the complete series from the scanner or PACS.",
        )
    _, _, normal = direction_cosines(iop)
    pos = ipps @ normal
    order = np.argsort(pos, kind="stable")
    pos = pos[order]
    step = _even_gap(pos, series)
    if expected_slices is not None and expected_slices > n:
        raise IngestError(
            "missing_slices",
            f"{series}: (0054,0081) Number of Slices says {expected_slices} but only {n} files "
            "were found. Re-send the complete series from the scanner or PACS.",
        )
    sorted_ipps = ipps[order]
    _check_in_plane_drift(sorted_ipps, pos, normal, step, series)
    return order, (sorted_ipps[-1] - sorted_ipps[0]) / (n - 1)


def _even_gap(pos: np.ndarray, series: str) -> float:
    """The common gap (mm) between sorted slice positions along the normal.

    Parameters
    ----------
    pos
        Sorted ``dot(normal, (0020,0032) Image Position (Patient))`` of each slice.
    series
        Series description for error messages.

    Returns
    -------
    float
        The median gap.

    Raises
    ------
    IngestError
        ``conflicting_duplicates`` for two slices at one position; ``missing_slices`` when
        every gap is a whole multiple of the median and one is at least twice it;
        ``uneven_spacing`` for any other irregular gap.
    """
    gaps = np.diff(pos)
    if np.any(gaps < POSITION_ATOL_MM):
        k = int(np.argmin(gaps))
        raise IngestError(
            "conflicting_duplicates",
            f"{series} has two different images at the same slice position "
            f"({pos[k]:.2f} mm along the normal). A dynamic/gated series or two merged exports "
            "cannot be stacked: export a single static frame.",
        )
    step = float(np.median(gaps))
    tol = max(SPACING_RTOL * step, POSITION_ATOL_MM)
    if np.any(np.abs(gaps - step) > tol):
        ratio = gaps / step
        near_int = np.abs(ratio - np.round(ratio)) < SPACING_RTOL * np.maximum(ratio, 1.0)
        if np.all(near_int) and np.any(np.round(ratio) >= 2):
            missing = int(np.sum(np.round(ratio) - 1))
            raise IngestError(
                "missing_slices",
                f"{series}: {missing} slice(s) are missing from the stack (gap of "
                f"{float(gaps.max()):.2f} mm where slices are {step:.2f} mm apart). "
                "Re-send the complete series from the scanner or PACS.",
            )
        raise IngestError(
            "uneven_spacing",
            f"{series}: slice gaps vary from {float(gaps.min()):.3f} to {float(gaps.max()):.3f} mm "
            f"(median {step:.3f} mm). Reconstruct or export the series with uniform slice spacing.",
        )
    return step


def _check_in_plane_drift(
    sorted_ipps: np.ndarray, pos: np.ndarray, normal: np.ndarray, step: float, series: str
) -> None:
    """Check that the slice origins lie on one line along the normal.

    Parameters
    ----------
    sorted_ipps
        ``(n, 3)`` (0020,0032) *Image Position (Patient)* in slice order.
    pos
        Their positions along ``normal`` (mm).
    normal
        Unit normal of (0020,0037) *Image Orientation (Patient)*.
    step
        The slice gap (mm); the tolerance is 5 % of it, at least 0.05 mm.
    series
        Series description for error messages.

    Raises
    ------
    IngestError
        ``inconsistent_geometry`` for origins that drift in-plane (gantry tilt, sheared stack).
    """
    drift = sorted_ipps - sorted_ipps[0] - np.outer(pos - pos[0], normal)
    if float(np.abs(drift).max()) > max(0.05 * step, 0.05):
        raise IngestError(
            "inconsistent_geometry",
            f"{series}: slice origins drift in-plane by up to {float(np.abs(drift).max()):.2f} mm "
            "(gantry tilt or a sheared stack). Export the series resampled to an orthogonal grid.",
        )
