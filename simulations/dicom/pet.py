"""PET series: one classic PET Image Storage file per slice, and a minimal QIBA reader.

PET quantities
--------------
The PET writer receives the *true* SUVbw volume and stores activity concentration in
Bq/mL, decay-corrected to the scan start ((0054,1102) *Decay Correction* = ``START``,
(0054,1001) *Units* = ``BQML``)::

    Bq/mL = SUVbw × calibration_factor × decayed_dose[Bq] / (PatientWeight[kg] × 1000)
    decayed_dose = RadionuclideTotalDose[Bq] × 2^(−Δt / RadionuclideHalfLife)
    Δt = SeriesDateTime − RadiopharmaceuticalStartDateTime

so a QIBA SUVbw computation on the tags gives back ``SUVbw × calibration_factor``. The
dose, weight and times are rounded to what the DS/TM strings can carry *before* the
conversion, so the round trip is exact up to the int16 quantisation (each slice is
stored as int16 with its own (0028,1053) *Rescale Slope*, intercept 0).
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.uid import PositronEmissionTomographyImageStorage

from fedmi.shared.tasks import TRACERS
from fedmi.simulations.dicom.header import (
    CommonMeta,
    apply_extra,
    dose_bq,
    ds,
    ds_float,
    finish,
    geometry_from_affine,
    image_dataset,
    uid,
)


@dataclass
class PetMeta(CommonMeta):
    """Everything the PET writer needs besides the pixels; every field has a default.

    Attributes
    ----------
    tracer
        Key of :data:`fedmi.shared.tasks.TRACERS` (``fdg``, ``pib``, ``florbetapir``, ...).
    injected_dose_mbq
        Written as (0018,1074) *Radionuclide Total Dose* in **Bq** (PET convention).
    injection_datetime, uptake_s
        (0018,1078) *Radiopharmaceutical Start DateTime* and the delay to the scan start,
        which is (0008,0021/0031) *Series Date/Time* and every slice's (0008,0022/0032)
        *Acquisition Date/Time*.
    calibration_factor
        Scanner calibration error: the stored Bq/mL is ``SUV × calibration_factor × ...``.
    file_naming
        ``"instance"`` (``IM000001.dcm`` by instance number), ``"im"`` (``IM`` + six random
        digits, no extension), ``"uid"`` (``<SOPInstanceUID>.dcm``) or ``"slice"``
        (``slice_0001.dcm``).
    gems_private_scan_datetime
        Add GE's private (0009,100D) scan datetime under creator ``GEMS_PETD_01``.
    """

    calibration_factor: float = 1.0
    reconstruction_method: str = "OSEM3D 4i24s"
    corrected_image: tuple[str, ...] = ("NORM", "DTIM", "ATTN", "SCAT", "DECY", "RAN")
    attenuation_correction_method: str = "CTAC"
    scatter_correction_method: str = "Model-based"
    randoms_correction_method: str = "DLYD"
    file_naming: str = "instance"
    gems_private_scan_datetime: bool = False


def suv_factor(meta: PetMeta) -> float:
    """SUVbw factor in g/Bq (QIBA): ``weight × 1000 / (dose × 2^(−Δt/T½))``.

    Uses the values exactly as they are written to DICOM (DS strings, whole seconds).
    """
    tracer = TRACERS[meta.tracer]
    weight = ds_float(meta.patient_weight_kg)
    dose = ds_float(dose_bq(meta))
    half = ds_float(tracer.half_life_s)
    dt = (meta.scan_datetime - meta.injection_datetime.replace(microsecond=0)).total_seconds()
    return weight * 1000.0 / (dose * 2.0 ** (-dt / half))


def _file_name(meta: PetMeta, index: int, sop_uid: str, rng: np.random.Generator) -> str:
    if meta.file_naming == "instance":
        return f"IM{index:06d}.dcm"
    if meta.file_naming == "im":
        return f"IM{int(rng.integers(0, 1_000_000)):06d}"
    if meta.file_naming == "uid":
        return f"{sop_uid}.dcm"
    if meta.file_naming == "slice":
        return f"slice_{index:04d}.dcm"
    raise ValueError(f"unknown file_naming {meta.file_naming!r}: use instance, im, uid or slice")


def _series_rng(base: Dataset) -> np.random.Generator:
    """A generator seeded from the series UID (deterministic random file names)."""
    return np.random.default_rng(int(base.SeriesInstanceUID.replace(".", "")[-18:]))


def _unique_file_name(
    meta: PetMeta, index: int, sop_uid: str, rng: np.random.Generator, used: set[str]
) -> str:
    """:func:`_file_name`, drawn again while it is one of ``used``."""
    name = _file_name(meta, index, sop_uid, rng)
    while name in used:
        name = _file_name(meta, index, sop_uid, rng)
    return name


def _pet_header(meta: PetMeta, geom: dict[str, object], n_slices: int) -> Dataset:
    """The attributes every slice shares: common header plus the PET Image and PET Series
    modules ((0054,1001) *Units* ``BQML``, (0054,1102) *Decay Correction* ``START``, frame
    timing, corrections) and, last, ``meta.extra`` and GE's private scan datetime."""
    half = ds_float(TRACERS[meta.tracer].half_life_s)
    lam = np.log(2.0) / half
    dur = float(round(meta.frame_duration_s))
    # Frame reference time: when the activity equals the decay-weighted frame average.
    t_ref = np.log(lam * dur / (1.0 - np.exp(-lam * dur))) / lam if dur > 0 else 0.0
    base = image_dataset(
        meta,
        "PT",
        PositronEmissionTomographyImageStorage,
        geom,
        image_type=["ORIGINAL", "PRIMARY"],
        corrected_image=meta.corrected_image,
        frame_duration_ms=int(dur * 1000),
        dose_text=ds(dose_bq(meta)),
    )
    base.ImageOrientationPatient = [ds(v) for v in geom["iop"]]
    base.FrameReferenceTime = ds(round(t_ref * 1000.0, 1))
    base.DecayFactor = ds(float(np.exp(lam * t_ref)))
    base.DoseCalibrationFactor = ds(1.0)
    base.SeriesType = ["STATIC", "IMAGE"]
    base.Units = "BQML"
    base.CountsSource = "EMISSION"
    base.NumberOfSlices = n_slices
    base.NumberOfTimeSlices = 1
    base.RandomsCorrectionMethod = meta.randoms_correction_method
    base.AttenuationCorrectionMethod = meta.attenuation_correction_method
    base.ScatterCorrectionMethod = meta.scatter_correction_method
    base.DecayCorrection = "START"
    base.ReconstructionMethod = meta.reconstruction_method
    base.RescaleIntercept = "0"
    base.RescaleType = "BQML"
    apply_extra(base, meta)
    if meta.gems_private_scan_datetime:
        block = base.private_block(0x0009, "GEMS_PETD_01", create=True)
        block.add_new(0x0D, "DT", meta.scan_datetime.strftime("%Y%m%d%H%M%S.00"))
    return base


def _slice_dataset(
    base: Dataset, plane: np.ndarray, k: int, affine: np.ndarray, normal: np.ndarray
) -> Dataset:
    """Slice ``k``: ``base`` plus its position, (0028,1053) *Rescale Slope* and int16 pixels.

    ``plane`` is Bq/mL ``[rows, cols]``; the slope is the slice's max |value| / 32767.
    """
    peak = float(np.max(np.abs(plane)))
    slope = ds_float(peak / 32767.0) if peak > 0 else 1.0
    stored = np.clip(np.rint(plane / slope), -32768, 32767).astype(np.int16)
    d = Dataset()
    d.update(base)
    ipp = affine @ np.array([0.0, 0.0, float(k), 1.0])
    d.ImagePositionPatient = [ds(v) for v in ipp[:3]]
    d.SliceLocation = ds(float(np.dot(normal, ipp[:3])))
    d.InstanceNumber = k + 1
    d.ImageIndex = k + 1
    d.RescaleSlope = ds(slope)
    d.set_pixel_data(np.ascontiguousarray(stored), "MONOCHROME2", 16)
    d.SmallestImagePixelValue = int(stored.min())
    d.LargestImagePixelValue = int(stored.max())
    return d


def write_pet_series(
    suv: np.ndarray,
    affine_lps: np.ndarray,
    meta: PetMeta,
    out_dir: Path,
    rng: np.random.Generator | None = None,
) -> list[Path]:
    """Write a PET volume as a classic PET Image Storage series, one file per slice.

    Parameters
    ----------
    suv
        True SUVbw volume indexed ``[i, j, k]`` (column, row, slice); see the package
        docstring (:mod:`fedmi.simulations.dicom`) for the frame conventions.
    affine_lps
        4×4 map from ``(i, j, k)`` to DICOM patient LPS mm; (0020,0032) *Image Position
        (Patient)* of slice ``k`` is ``affine_lps @ (0, 0, k, 1)``.
    meta
        Patient, tracer, dose, timing and scanner fields (:class:`PetMeta`).
    out_dir
        Folder for the slice files (created).
    rng
        Only used for random file names (``meta.file_naming == "im"``); defaults to a
        generator seeded from the series UID, so output stays deterministic.

    Returns
    -------
    list of Path
        The files written, in slice order ``k = 0, 1, ...``.

    Notes
    -----
    Each slice is stored as int16 with its own (0028,1053) *Rescale Slope* (max of the
    slice / 32767) and (0028,1052) *Rescale Intercept* 0, (0054,1001) *Units* ``BQML``.
    Negative values are kept (int16 is signed). SUVbw recomputed from the tags equals
    ``suv × meta.calibration_factor`` to int16 precision.
    """
    vol = np.asarray(suv, dtype=np.float64)
    if vol.ndim != 3:
        raise ValueError(f"suv must be 3-D [i, j, k], got shape {vol.shape}")
    if meta.tracer not in TRACERS or TRACERS[meta.tracer].nuclide == "123I":
        raise ValueError(f"tracer {meta.tracer!r} is not a PET tracer")
    geom = geometry_from_affine(affine_lps)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    bqml = vol * (meta.calibration_factor / suv_factor(meta))
    aff = np.asarray(affine_lps, dtype=np.float64)
    base = _pet_header(meta, geom, vol.shape[2])
    rng = _series_rng(base) if rng is None else rng
    paths: list[Path] = []
    used: set[str] = set()
    for k in range(vol.shape[2]):
        d = _slice_dataset(base, bqml[:, :, k].T, k, aff, geom["normal"])  # [rows=j, cols=i]
        sop = uid(meta, "sop", str(meta.series_number), str(k))
        finish(d, sop)
        name = _unique_file_name(meta, k + 1, sop, rng, used)
        used.add(name)
        path = out_dir / name
        d.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


def read_pet_suv(paths: Sequence[Path]) -> tuple[np.ndarray, np.ndarray]:
    """Read a PET series written here back to SUVbw ``[i, j, k]`` and its LPS affine.

    A minimal QIBA reader for tests (BQML, DecayCorrection START, SeriesDateTime as the
    scan time): slices sorted by IPP·normal, slope and intercept applied per slice.
    """
    dsets = [pydicom.dcmread(p) for p in paths]
    iop = np.array([float(v) for v in dsets[0].ImageOrientationPatient])
    normal = np.cross(iop[:3], iop[3:])
    dsets.sort(key=lambda x: float(np.dot(normal, [float(v) for v in x.ImagePositionPatient])))
    first = dsets[0]
    rp = first.RadiopharmaceuticalInformationSequence[0]
    inj = _dt.datetime.strptime(str(rp.RadiopharmaceuticalStartDateTime)[:14], "%Y%m%d%H%M%S")
    scan = _dt.datetime.strptime(f"{first.SeriesDate}{first.SeriesTime}"[:14], "%Y%m%d%H%M%S")
    decayed = float(rp.RadionuclideTotalDose) * 2.0 ** (
        -(scan - inj).total_seconds() / float(rp.RadionuclideHalfLife)
    )
    factor = float(first.PatientWeight) * 1000.0 / decayed
    planes = [
        (x.pixel_array.astype(np.float64) * float(x.RescaleSlope) + float(x.RescaleIntercept)).T
        for x in dsets
    ]
    vol = np.stack(planes, axis=2) * factor
    ps = [float(v) for v in first.PixelSpacing]
    p0 = np.array([float(v) for v in first.ImagePositionPatient])
    aff = np.eye(4)
    aff[:3, 0] = iop[:3] * ps[1]
    aff[:3, 1] = iop[3:] * ps[0]
    if len(dsets) > 1:
        p1 = np.array([float(v) for v in dsets[-1].ImagePositionPatient])
        aff[:3, 2] = (p1 - p0) / (len(dsets) - 1)
    else:
        aff[:3, 2] = normal * float(first.SliceThickness)
    aff[:3, 3] = p0
    return vol, aff
