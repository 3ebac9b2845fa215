"""SPECT series: one reconstructed NM Image Storage multi-frame object (PHANTOM_SPEC §4.3)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence as DicomSequence
from pydicom.uid import NuclearMedicineImageStorage

from fedmi.shared.tasks import TRACERS
from fedmi.simulations.dicom.header import (
    CommonMeta,
    apply_extra,
    ds,
    finish,
    geometry_from_affine,
    image_dataset,
    uid,
)

#: Photopeak energy (keV) per nuclide; 140 keV (Tc-99m) when not listed.
_NM_ENERGY_KEV = {"123I": 159.0}


@dataclass
class NmMeta(CommonMeta):
    """Everything the NM (SPECT) writer needs besides the counts; every field has a default.

    (0018,1074) *Radionuclide Total Dose* is written in **MBq** (NM convention, PS3.3
    C.8.4.10.1.7). Pixel values are counts; (0054,1001) *Units* is written as ``CNTS`` only
    when ``units_cnts`` is true, otherwise absent.
    """

    tracer: str = "fp-cit"
    injected_dose_mbq: float = 185.0
    uptake_s: float = 4.0 * 3600.0
    frame_duration_s: float = 30.0
    study_description: str = "DAT SPECT"
    series_description: str = "DaTSCAN Recon"
    manufacturer: str = "SIEMENS NM"
    model_name: str = "Symbia T2"
    software_versions: str = "VB10B"
    station_name: str = "NM01"
    convolution_kernel: str = "Butterworth 0.5"
    reconstruction_method: str = "FLASH3D 8i8s"
    corrected_image: tuple[str, ...] = ("DECY", "ATTN", "SCAT")
    collimator: str = "LEHR"
    n_projections: int = 120
    radial_position_mm: float = 140.0
    units_cnts: bool = False


def nm_sop_instance_uid(meta: NmMeta) -> str:
    """(0008,0018) *SOP Instance UID* that :func:`write_nm_series` gives ``meta``'s object.

    Deterministic when ``meta.uid_entropy`` is set (so a caller can name the file after
    it); a fresh random UID otherwise.
    """
    return uid(meta, "sop", str(meta.series_number))


def _energy_window(nuclide: str) -> Dataset:
    """An (0054,0012) *Energy Window Information Sequence* item: photopeak ± 10 %."""
    kev = _NM_ENERGY_KEV.get(nuclide, 140.0)
    win = Dataset()
    rng_item = Dataset()
    rng_item.EnergyWindowLowerLimit = ds(round(kev * 0.9, 1))
    rng_item.EnergyWindowUpperLimit = ds(round(kev * 1.1, 1))
    win.EnergyWindowRangeSequence = DicomSequence([rng_item])
    win.EnergyWindowName = f"{nuclide} {kev:g} keV"
    return win


def _detector(meta: NmMeta, affine: np.ndarray, geom: dict[str, object]) -> Dataset:
    """An (0054,0022) *Detector Information Sequence* item, holding the first frame's
    (0020,0032) *Image Position* and (0020,0037) *Image Orientation (Patient)*."""
    det = Dataset()
    det.CollimatorGridName = meta.collimator
    det.CollimatorType = "PARA"
    det.ImagePositionPatient = [ds(v) for v in affine[:3, 3]]
    det.ImageOrientationPatient = [ds(v) for v in geom["iop"]]
    det.RadialPosition = ds(meta.radial_position_mm)
    return det


def _rotation(meta: NmMeta) -> Dataset:
    """An (0054,0052) *Rotation Information Sequence* item: one 360° clockwise orbit."""
    rot = Dataset()
    rot.StartAngle = ds(0.0)
    rot.AngularStep = ds(360.0 / max(1, meta.n_projections))
    rot.RotationDirection = "CW"
    rot.ScanArc = ds(360.0)
    rot.ActualFrameDuration = int(round(meta.frame_duration_s * 1000))
    rot.NumberOfFramesInRotation = meta.n_projections
    return rot


def _nm_header(meta: NmMeta, geom: dict[str, object], affine: np.ndarray, nz: int) -> Dataset:
    """Common header plus the NM Image, Multi-frame, Detector, Rotation and Energy Window
    modules of an ``nz``-frame reconstruction, and, last, ``meta.extra``."""
    nuclide = TRACERS[meta.tracer].nuclide
    d = image_dataset(
        meta,
        "NM",
        NuclearMedicineImageStorage,
        geom,
        image_type=["ORIGINAL", "PRIMARY", "RECON TOMO", "EMISSION"],
        corrected_image=meta.corrected_image,
        frame_duration_ms=int(round(meta.frame_duration_s * 1000)),
        dose_text=ds(round(meta.injected_dose_mbq, 2)),
    )
    d.ImageID = "RECON"
    d.SpacingBetweenSlices = ds(geom["slice_step"])
    if meta.units_cnts:
        d.Units = "CNTS"
    d.NumberOfFrames = nz
    d.FrameIncrementPointer = pydicom.tag.Tag(0x0054, 0x0080)
    d.SliceVector = list(range(1, nz + 1))
    d.NumberOfSlices = nz
    d.NumberOfDetectors = 1
    d.NumberOfRotations = 1
    d.NumberOfEnergyWindows = 1
    d.EnergyWindowInformationSequence = DicomSequence([_energy_window(nuclide)])
    d.DetectorInformationSequence = DicomSequence([_detector(meta, affine, geom)])
    d.RotationInformationSequence = DicomSequence([_rotation(meta)])
    apply_extra(d, meta)
    return d


def write_nm_series(
    counts: np.ndarray,
    affine_lps: np.ndarray,
    meta: NmMeta,
    out_path: Path,
) -> Path:
    """Write a reconstructed SPECT volume as one NM Image Storage multi-frame object.

    Parameters
    ----------
    counts
        Non-negative counts indexed ``[i, j, k]``; frame ``k`` is slice ``k``. Stored as
        uint16 (values are rounded and clipped to 0…65535).
    affine_lps
        4×4 map from ``(i, j, k)`` to DICOM patient LPS mm.
    meta
        Patient, tracer, dose and camera fields (:class:`NmMeta`).
    out_path
        File to write (parent folders are created).

    Returns
    -------
    Path
        ``out_path``.

    Notes
    -----
    ImageType is ``ORIGINAL\\PRIMARY\\RECON TOMO\\EMISSION``; (0028,0008) *Number of
    Frames* = (0054,0081) *Number of Slices* = ``counts.shape[2]``; (0028,0009) *Frame
    Increment Pointer* = (0054,0080) *Slice Vector*. (0020,0032) *Image Position
    (Patient)* and (0020,0037) *Image Orientation (Patient)* of the first frame sit inside
    (0054,0022) *Detector Information Sequence*; frame ``k`` lies at
    ``IPP + k × SpacingBetweenSlices × (row_dir × col_dir)``. (0018,0088) *Spacing Between
    Slices* is negative when the slice axis is anti-parallel to that normal.
    """
    vol = np.asarray(counts)
    if vol.ndim != 3:
        raise ValueError(f"counts must be 3-D [i, j, k], got shape {vol.shape}")
    geom = geometry_from_affine(affine_lps)
    d = _nm_header(meta, geom, np.asarray(affine_lps, dtype=np.float64), vol.shape[2])
    # Multi-frame pixel data: [frames, rows, cols] = [k, j, i].
    frames = np.clip(np.rint(np.moveaxis(vol, 2, 0).transpose(0, 2, 1)), 0, 65535)
    d.set_pixel_data(np.ascontiguousarray(frames.astype(np.uint16)), "MONOCHROME2", 16)
    finish(d, nm_sop_instance_uid(meta))
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    d.save_as(out_path, enforce_file_format=True)
    return out_path
