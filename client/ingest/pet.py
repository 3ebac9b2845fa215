"""PET (one file per slice, PET Image Storage) → native SUVbw volume."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset

from fedmi.client.ingest.errors import IngestError
from fedmi.client.ingest.geometry import affine_lps, order_slices
from fedmi.client.ingest.suv import suv_factor
from fedmi.client.ingest.times import acquisition_datetime
from fedmi.client.ingest.volume import (
    NativeSeries,
    native_series,
    read_dataset,
    rescale,
    stored_pixels,
    text,
)


@dataclass(frozen=True)
class _SliceStack:
    """The kept slices of a PET series, in order along the slice normal.

    Attributes
    ----------
    indices
        Index (into the series' files) of each slice, in slice order.
    iop
        The common (0020,0037) *Image Orientation (Patient)*.
    pixel_spacing
        The common (0028,0030) *Pixel Spacing*.
    first_ipp
        (0020,0032) *Image Position (Patient)* of the first slice in order.
    step
        LPS vector (mm) from one slice to the next.
    """

    indices: list[int]
    iop: np.ndarray
    pixel_spacing: np.ndarray
    first_ipp: np.ndarray
    step: np.ndarray


def _floats(ds: Dataset, keyword: str, n: int, name: str) -> np.ndarray:
    """``n`` numbers of a geometry attribute, e.g. (0020,0037) *Image Orientation (Patient)*.

    Raises
    ------
    IngestError
        ``missing_geometry`` when the attribute is absent, not numeric or of another length.
    """
    value = ds.get(keyword)
    try:
        arr = np.asarray([float(v) for v in value], dtype=np.float64)
    except (TypeError, ValueError):
        arr = np.empty(0)
    if arr.shape != (n,):
        raise IngestError(
            "missing_geometry",
            f"{name} lacks a valid {keyword} ({n} numbers); the slice cannot be placed in space. "
            "Re-export the series with its Image Plane module.",
        )
    return arr


def _same_image(a: Dataset, b: Dataset) -> bool:
    """Whether two slices agree in (0020,0032) *Image Position (Patient)*, (0028,1053)
    *Rescale Slope*, (0028,1052) *Rescale Intercept* and (7FE0,0010) *Pixel Data*."""
    keys = ("ImagePositionPatient", "RescaleSlope", "RescaleIntercept")
    return all(str(a.get(k)) == str(b.get(k)) for k in keys) and a.get("PixelData") == b.get(
        "PixelData"
    )


def _split_duplicates(
    datasets: Sequence[Dataset], names: Sequence[str], label: str
) -> tuple[list[int], list[int]]:
    """Separate exact second copies of a slice by (0008,0018) *SOP Instance UID*.

    Returns
    -------
    tuple of list
        ``(keep, duplicates)``: indices of the first copy of each SOP Instance UID and of
        the exact copies (see :func:`_same_image`) after it.

    Raises
    ------
    IngestError
        ``conflicting_duplicates`` when two files share a SOP Instance UID but not the image.
    """
    keep: list[int] = []
    duplicates: list[int] = []
    by_sop: dict[str, int] = {}
    for i, ds in enumerate(datasets):
        sop = text(ds, "SOPInstanceUID")
        if sop in by_sop:
            j = by_sop[sop]
            if _same_image(datasets[j], ds):
                duplicates.append(i)
                continue
            raise IngestError(
                "conflicting_duplicates",
                f"{label}: {names[j]} and {names[i]} carry the same (0008,0018) SOP Instance UID "
                "but different images. Remove the wrong copy or re-export the series.",
            )
        by_sop[sop] = i
        keep.append(i)
    return keep, duplicates


def _common_plane(
    datasets: Sequence[Dataset], keep: Sequence[int], names: Sequence[str], label: str
) -> tuple[np.ndarray, np.ndarray]:
    """The image plane every kept slice shares.

    Reads (0020,0037) *Image Orientation (Patient)*, (0028,0030) *Pixel Spacing*,
    (0028,0010) *Rows* and (0028,0011) *Columns* of every slice in ``keep``.

    Returns
    -------
    tuple of numpy.ndarray
        ``(iop, pixel_spacing)`` of the first kept slice (that of the series' first file).

    Raises
    ------
    IngestError
        ``missing_geometry`` for an absent or malformed value, ``inconsistent_geometry``
        when a slice differs from the first in orientation, spacing or matrix size.
    """
    first = datasets[0]
    iop = _floats(first, "ImageOrientationPatient", 6, names[keep[0]])
    spacing = _floats(first, "PixelSpacing", 2, names[keep[0]])
    shape = (first.get("Rows"), first.get("Columns"))
    for i in keep:
        ds = datasets[i]
        if (
            not np.allclose(_floats(ds, "ImageOrientationPatient", 6, names[i]), iop, atol=1e-4)
            or not np.allclose(_floats(ds, "PixelSpacing", 2, names[i]), spacing, rtol=1e-4)
            or (ds.get("Rows"), ds.get("Columns")) != shape
        ):
            raise IngestError(
                "inconsistent_geometry",
                f"{label}: {names[i]} differs from {names[keep[0]]} in Image Orientation, Pixel "
                "Spacing or matrix size. Slices of several reconstructions were mixed under one "
                "Series Instance UID; re-export each reconstruction separately.",
            )
    return iop, spacing


def _slice_stack(
    datasets: Sequence[Dataset], keep: Sequence[int], names: Sequence[str], label: str
) -> _SliceStack:
    """Order the kept slices along the normal and check that they form one even stack.

    Reads the plane of :func:`_common_plane`, every slice's (0020,0032) *Image Position
    (Patient)* and the first file's (0054,0081) *Number of Slices*; the ordering and its
    checks are :func:`fedmi.client.ingest.geometry.order_slices`.

    Raises
    ------
    IngestError
        ``missing_geometry``, ``inconsistent_geometry``, ``conflicting_duplicates``,
        ``missing_slices`` or ``uneven_spacing``.
    """
    iop, spacing = _common_plane(datasets, keep, names, label)
    ipps = np.stack([_floats(datasets[i], "ImagePositionPatient", 3, names[i]) for i in keep])
    n_slices = datasets[0].get("NumberOfSlices")
    order, step = order_slices(
        ipps, iop, expected_slices=int(n_slices) if n_slices else None, series=label
    )
    return _SliceStack([keep[o] for o in order], iop, spacing, ipps[order[0]], step)


def _suv_volume(ordered: Sequence[Dataset], names: Sequence[str], factor: float) -> np.ndarray:
    """The SUVbw stack ``[slice, row, column]`` (float32) of slices in order.

    Each slice is ``stored · (0028,1053) Rescale Slope · factor + (0028,1052) Rescale
    Intercept · factor`` with its own slope and intercept; stored values come from
    (7FE0,0010) *Pixel Data* (:func:`fedmi.client.ingest.volume.stored_pixels`).

    Parameters
    ----------
    ordered
        The slices, in slice order.
    names
        How to name each slice's file in messages.
    factor
        The QIBA SUVbw factor (g/Bq).
    """
    stored = np.stack([stored_pixels(ds, name)[0] for ds, name in zip(ordered, names, strict=True)])
    coefficients = np.asarray([rescale(ds) for ds in ordered], dtype=np.float64)
    slope = (coefficients[:, 0] * factor).astype(np.float32)[:, None, None]
    icpt = (coefficients[:, 1] * factor).astype(np.float32)[:, None, None]
    vol = stored.astype(np.float32)
    vol *= slope
    if np.any(icpt):
        vol += icpt
    return vol


def load_pet_series(files: Sequence[Path], names: Sequence[str] | None = None) -> NativeSeries:
    """Read a classic PET series (one slice per file) into an SUVbw volume.

    Slices are sorted along the normal of (0020,0037) *Image Orientation (Patient)* by
    ``dot(normal, (0020,0032) Image Position (Patient))``; each slice gets its own
    (0028,1053) *Rescale Slope* and (0028,1052) *Rescale Intercept*; the result is
    multiplied by the QIBA SUVbw factor (see :mod:`fedmi.client.ingest.suv`).

    Parameters
    ----------
    files
        The series' files, in any order.
    names
        How to name each file in messages (default: its path).

    Returns
    -------
    NativeSeries
        ``volume`` in SUVbw, indexed [column, row, slice].

    Raises
    ------
    IngestError
        For anything that stops a faithful SUV volume (see :data:`~fedmi.client.ingest.errors.REASONS`).
    """
    files = [Path(f) for f in files]
    names = list(names) if names is not None else [str(f) for f in files]
    datasets = [read_dataset(f, n) for f, n in zip(files, names, strict=True)]
    first = datasets[0]
    label = f"PET series {text(first, 'SeriesInstanceUID')} ({len(files)} files, e.g. {names[0]})"
    keep, duplicates = _split_duplicates(datasets, names, label)
    stack = _slice_stack(datasets, keep, names, label)
    ordered = [datasets[i] for i in stack.indices]
    suv = suv_factor(ordered, label, [acquisition_datetime(d) for d in ordered])
    volume = _suv_volume(ordered, [names[i] for i in stack.indices], suv.factor)
    return native_series(
        first,
        modality="PT",
        volume=volume,
        affine=affine_lps(stack.iop, stack.pixel_spacing, stack.first_ipp, stack.step),
        suv_factor=float(suv.factor),
        files=[files[i] for i in stack.indices],
        duplicates=[files[i] for i in duplicates],
        notes=list(suv.notes),
    )
