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
from fedmi.client.ingest.tracer import tracer_of
from fedmi.client.ingest.volume import NativeSeries, read_dataset, stored_pixels, text

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


def _geometry_item(ds: Dataset) -> Dataset:
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
    uid = text(ds, "SeriesInstanceUID")
    label = f"NM series {uid} ({name})"
    kind = nm_image_kind(ds.get("ImageType"))
    if kind == "planar":
        raise IngestError(
            "planar_nm",
            f"{label} is a planar/whole-body NM image ((0008,0008) Image Type "
            f"{'/'.join(map(str, ds.get('ImageType') or []))}); the task needs the reconstructed "
            "SPECT volume (RECON TOMO). Export the reconstruction instead.",
        )
    if kind == "projections":
        raise IngestError(
            "nm_projections",
            f"{label} holds SPECT projections (Image Type TOMO), not a reconstruction. "
            "Reconstruct on the workstation and export the RECON TOMO object.",
        )
    if text(ds, "SOPClassUID") != NuclearMedicineImageStorage:
        raise IngestError(
            "unsupported_sop_class",
            f"{label} has (0008,0016) SOP Class UID {text(ds, 'SOPClassUID')}; reconstructed "
            "SPECT must be NM Image Storage (1.2.840.10008.5.1.4.1.1.20). Export it as such.",
        )
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
    notes: list[str] = []
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
    slope = ds.get("RescaleSlope")
    icpt = ds.get("RescaleIntercept")
    vol = frames.astype(np.float32)
    if slope not in (None, "") and float(slope) != 1.0:
        vol *= np.float32(float(slope))
    if icpt not in (None, "") and float(icpt) != 0.0:
        vol += np.float32(float(icpt))
    tracer, tracer_text = tracer_of(ds)
    return NativeSeries(
        volume=vol.transpose(2, 1, 0),
        affine_lps=affine_lps(iop, spacing, ipp, float(step) * normal),
        suv_factor=None,
        modality="NM",
        tracer=tracer,
        tracer_text=tracer_text,
        series_uid=uid,
        patient_id=text(ds, "PatientID"),
        manufacturer=text(ds, "Manufacturer"),
        model=text(ds, "ManufacturerModelName"),
        reconstruction=text(ds, "ReconstructionMethod"),
        files=[path],
        notes=notes,
    )
