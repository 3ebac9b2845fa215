"""Reconstructed SPECT (one multi-frame NM Image Storage object) → native counts volume.

In the NM Image IOD the geometry is not at the top level: (0020,0032) *Image Position
(Patient)* and (0020,0037) *Image Orientation (Patient)* sit inside the first item of
(0054,0022) *Detector Information Sequence*. Frame ``k`` (ordered by (0054,0080) *Slice
Vector* when present) lies at ``IPP + k · SpacingBetweenSlices · normal``; (0018,0088)
*Spacing Between Slices* may be negative (Siemens 3-D SPECT), which flips the stack.
Values are counts: no SUV (``suv_factor`` is ``None``); the task's reference region turns
them into a ratio later.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset
from pydicom.uid import NuclearMedicineImageStorage

from fedmi.client.ingest.errors import IngestError
from fedmi.client.ingest.geometry import affine_lps, direction_cosines
from fedmi.client.ingest.volume import (
    NativeSeries,
    native_series,
    read_dataset,
    rescale,
    stored_pixels,
    text,
)

#: (0008,0008) *Image Type* value 3 of reconstructed tomograms.
RECON_TYPES = ("RECON TOMO", "RECON GATED TOMO")
#: Value 3 of projection (unreconstructed) SPECT.
PROJECTION_TYPES = ("TOMO", "GATED TOMO")


def nm_image_kind(image_type: object) -> str:
    """``recon``, ``projections``, ``planar`` or ``unknown`` from (0008,0008) *Image Type*."""
    values = [str(v).strip().upper() for v in (image_type or [])]
    if any(v in RECON_TYPES for v in values):
        return "recon"
    if any(v in PROJECTION_TYPES for v in values):
        return "projections"
    if any(v in ("STATIC", "WHOLE BODY", "DYNAMIC", "GATED") for v in values):
        return "planar"
    return "unknown"


def nm_object_problem(
    label: str, kinds: set[str], image_type: str, sop_class: str
) -> IngestError | None:
    """Why an NM object is not a reconstructed SPECT volume ingest can read, if it is not.

    The same checks serve the header-only precheck (on discovery records) and the loader
    (on the data set).

    Parameters
    ----------
    label
        Series description that starts each message.
    kinds
        :func:`nm_image_kind` of the (0008,0008) *Image Type* of each object.
    image_type
        The (0008,0008) *Image Type* values joined with ``/``, for the message.
    sop_class
        (0008,0016) *SOP Class UID*.

    Returns
    -------
    IngestError or None
        ``planar_nm``, ``nm_projections`` or ``unsupported_sop_class`` (in that order of
        precedence), or ``None``.
    """
    if "planar" in kinds:
        return IngestError(
            "planar_nm",
            f"{label} is a planar/whole-body NM image ((0008,0008) Image Type "
            f"{image_type}); the task needs the reconstructed SPECT volume (RECON TOMO). "
            "Export the reconstruction instead.",
        )
    if "projections" in kinds:
        return IngestError(
            "nm_projections",
            f"{label} holds SPECT projections (Image Type TOMO), not a reconstruction. "
            "Reconstruct on the workstation and export the RECON TOMO object.",
        )
    if sop_class != NuclearMedicineImageStorage:
        return IngestError(
            "unsupported_sop_class",
            f"{label} has (0008,0016) SOP Class UID {sop_class}; reconstructed SPECT must be "
            "NM Image Storage (1.2.840.10008.5.1.4.1.1.20). Export it as such.",
        )
    return None


def _geometry_item(ds: Dataset) -> Dataset:
    """The data set holding (0020,0032)/(0020,0037) *Image Position/Orientation (Patient)*.

    That is the first item of (0054,0022) *Detector Information Sequence* that has both,
    else the top level.

    Raises
    ------
    IngestError
        ``missing_geometry`` when neither place has both attributes.
    """
    for item in ds.get("DetectorInformationSequence") or []:
        if "ImagePositionPatient" in item and "ImageOrientationPatient" in item:
            return item
    if "ImagePositionPatient" in ds and "ImageOrientationPatient" in ds:
        return ds
    raise IngestError(
        "missing_geometry",
        "no (0020,0032)/(0020,0037) Image Position/Orientation (Patient) in (0054,0022) "
        "Detector Information Sequence",
    )


def _plane(ds: Dataset, label: str) -> tuple[list[float], np.ndarray, list[float], np.ndarray]:
    """The image plane of the first frame.

    Reads (0020,0037) *Image Orientation (Patient)* and (0020,0032) *Image Position
    (Patient)* (see :func:`_geometry_item`) and (0028,0030) *Pixel Spacing*.

    Returns
    -------
    tuple
        ``(iop, first_ipp, pixel_spacing, normal)``; ``normal`` is the unit slice normal.

    Raises
    ------
    IngestError
        ``missing_geometry`` when any of them is absent or malformed.
    """
    try:
        geo = _geometry_item(ds)
        iop = [float(v) for v in geo.ImageOrientationPatient]
        ipp = np.asarray([float(v) for v in geo.ImagePositionPatient], dtype=np.float64)
        spacing = [float(v) for v in ds.PixelSpacing]
        _, _, normal = direction_cosines(iop)
    except (IngestError, AttributeError, TypeError, ValueError) as exc:
        msg = exc.message if isinstance(exc, IngestError) else f"{type(exc).__name__}: {exc}"
        raise IngestError(
            "missing_geometry",
            f"{label}: the volume cannot be placed in space ({msg}). Re-export the SPECT "
            "reconstruction with its geometry.",
        ) from None
    return iop, ipp, spacing, normal


def _slice_step(ds: Dataset, label: str, notes: list[str]) -> float:
    """Signed distance (mm) between frames along the normal.

    (0018,0088) *Spacing Between Slices*, else (0018,0050) *Slice Thickness* (noted as
    ``slice_step_from_slice_thickness``); a negative spacing (frames run against the
    normal) is noted as ``negative_slice_spacing``.

    Raises
    ------
    IngestError
        ``missing_geometry`` when both are missing or the step is zero.
    """
    step = ds.get("SpacingBetweenSlices")
    if step in (None, ""):
        step = ds.get("SliceThickness")
        notes.append("slice_step_from_slice_thickness")
    if step in (None, "") or float(step) == 0.0:
        raise IngestError(
            "missing_geometry",
            f"{label}: (0018,0088) Spacing Between Slices is missing or zero. Re-export the "
            "reconstruction with it.",
        )
    if float(step) < 0:
        notes.append("negative_slice_spacing")
    return float(step)


def _frames(ds: Dataset, name: str, label: str, notes: list[str]) -> np.ndarray:
    """Stored frames ``[frame, row, column]`` in slice order.

    Reads (7FE0,0010) *Pixel Data* (see :func:`fedmi.client.ingest.volume.stored_pixels`),
    checks the frame count against (0054,0081) *Number of Slices* and sorts the frames by
    (0054,0080) *Slice Vector* when it has one entry per frame (noted as
    ``frames_reordered_by_slice_vector`` when that changes the order).

    Raises
    ------
    IngestError
        ``missing_slices`` for fewer than two frames or a count that disagrees with
        Number of Slices; ``truncated`` / ``unsupported_pixels`` from the pixel data.
    """
    frames = stored_pixels(ds, name)
    n = frames.shape[0]
    if n < 2:
        raise IngestError(
            "missing_slices",
            f"{label} has {n} frame; a SPECT volume needs all its slices. Export the whole "
            "reconstruction.",
        )
    n_slices = ds.get("NumberOfSlices")
    if n_slices and int(n_slices) != n:
        raise IngestError(
            "missing_slices",
            f"{label}: (0054,0081) Number of Slices is {int(n_slices)} but the object has {n} "
            "frames. Re-export the complete reconstruction.",
        )
    vector = ds.get("SliceVector")
    if vector is not None and len(vector) == n:
        order = np.argsort(np.asarray([int(v) for v in vector]), kind="stable")
        if not np.array_equal(order, np.arange(n)):
            frames = frames[order]
            notes.append("frames_reordered_by_slice_vector")
    return frames


def _counts(ds: Dataset, frames: np.ndarray) -> np.ndarray:
    """float32 counts: frames times (0028,1053) *Rescale Slope* plus (0028,1052) *Rescale
    Intercept*, each applied only when it is not the identity (1 and 0)."""
    slope, icpt = rescale(ds)
    vol = frames.astype(np.float32)
    if slope != 1.0:
        vol *= np.float32(slope)
    if icpt != 0.0:
        vol += np.float32(icpt)
    return vol


def load_nm_series(path: Path, name: str | None = None) -> NativeSeries:
    """Read a reconstructed SPECT object into a counts volume.

    Parameters
    ----------
    path
        The NM multi-frame file.
    name
        How to name the file in messages (default: its path).

    Raises
    ------
    IngestError
        ``planar_nm`` / ``nm_projections`` for objects that are not reconstructed
        tomograms, ``missing_geometry``, ``missing_slices``, ``truncated``, ...
    """
    path = Path(path)
    name = name or str(path)
    ds = read_dataset(path, name)
    label = f"NM series {text(ds, 'SeriesInstanceUID')} ({name})"
    image_type = "/".join(map(str, ds.get("ImageType") or []))
    kind = nm_image_kind(ds.get("ImageType"))
    err = nm_object_problem(label, {kind}, image_type, text(ds, "SOPClassUID"))
    if err is not None:
        raise err
    iop, ipp, spacing, normal = _plane(ds, label)
    notes: list[str] = []
    step = _slice_step(ds, label, notes)
    frames = _frames(ds, name, label, notes)
    return native_series(
        ds,
        modality="NM",
        volume=_counts(ds, frames),
        affine=affine_lps(iop, spacing, ipp, step * normal),
        suv_factor=None,
        files=[path],
        notes=notes,
    )
