"""PET (one file per slice, PET Image Storage) → native SUVbw volume."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset

from fedmi.client.ingest.errors import IngestError
from fedmi.client.ingest.geometry import affine_lps, order_slices
from fedmi.client.ingest.suv import acquisition_datetime, suv_factor
from fedmi.client.ingest.tracer import tracer_of
from fedmi.client.ingest.volume import NativeSeries, read_dataset, stored_pixels, text


def _floats(ds: Dataset, keyword: str, n: int, name: str) -> np.ndarray:
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


def _rescale(ds: Dataset) -> tuple[float, float]:
    slope = ds.get("RescaleSlope")
    icpt = ds.get("RescaleIntercept")
    return (
        1.0 if slope in (None, "") else float(slope),
        0.0 if icpt in (None, "") else float(icpt),
    )


def _same_image(a: Dataset, b: Dataset) -> bool:
    keys = ("ImagePositionPatient", "RescaleSlope", "RescaleIntercept")
    return all(str(a.get(k)) == str(b.get(k)) for k in keys) and a.get("PixelData") == b.get(
        "PixelData"
    )


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
    uid = text(first, "SeriesInstanceUID")
    label = f"PET series {uid} ({len(files)} files, e.g. {names[0]})"

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

    kept = [datasets[i] for i in keep]
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
    ipps = np.stack(
        [_floats(ds, "ImagePositionPatient", 3, names[i]) for i, ds in zip(keep, kept, strict=True)]
    )
    n_slices = first.get("NumberOfSlices")
    order, step = order_slices(
        ipps, iop, expected_slices=int(n_slices) if n_slices else None, series=label
    )
    ordered = [kept[o] for o in order]
    ordered_idx = [keep[o] for o in order]

    suv = suv_factor(ordered, label, [acquisition_datetime(d) for d in ordered])
    stored = np.stack(
        [stored_pixels(ds, names[i])[0] for i, ds in zip(ordered_idx, ordered, strict=True)]
    )
    rescale = np.asarray([_rescale(ds) for ds in ordered], dtype=np.float64)
    slope = (rescale[:, 0] * suv.factor).astype(np.float32)[:, None, None]
    icpt = (rescale[:, 1] * suv.factor).astype(np.float32)[:, None, None]
    vol = stored.astype(np.float32)
    vol *= slope
    if np.any(icpt):
        vol += icpt
    tracer, tracer_text = tracer_of(first)
    return NativeSeries(
        volume=vol.transpose(2, 1, 0),
        affine_lps=affine_lps(iop, spacing, ipps[order[0]], step),
        suv_factor=float(suv.factor),
        modality="PT",
        tracer=tracer,
        tracer_text=tracer_text,
        series_uid=uid,
        patient_id=text(first, "PatientID"),
        manufacturer=text(first, "Manufacturer"),
        model=text(first, "ManufacturerModelName"),
        reconstruction=text(first, "ReconstructionMethod"),
        files=[files[i] for i in ordered_idx],
        duplicates=[files[i] for i in duplicates],
        notes=list(suv.notes),
    )
