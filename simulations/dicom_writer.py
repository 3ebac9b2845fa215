"""Write synthetic PET (one file per slice) and SPECT (NM multi-frame) series as DICOM.

This is a reusable API: the generator uses it for the whole federation, and the ingest
tests use it to write small series that they then corrupt.

Frame conventions
-----------------
Volumes are NumPy arrays indexed ``[i, j, k]``:

* ``i`` = column index of a DICOM image (moves along the *row direction*, the first
  three values of (0020,0037) *Image Orientation (Patient)*),
* ``j`` = row index (moves along the *column direction*, the last three IOP values),
* ``k`` = slice (PET: file; NM: frame).

``affine_lps`` is a 4×4 matrix mapping ``(i, j, k, 1)`` to DICOM patient coordinates
(LPS, mm). Therefore

* IOP row direction    = ``affine_lps[:3, 0] / |affine_lps[:3, 0]|``,
* IOP column direction = ``affine_lps[:3, 1] / |affine_lps[:3, 1]|``,
* (0028,0030) *Pixel Spacing* = ``[|affine[:3, 1]|, |affine[:3, 0]|]`` (row spacing first,
  i.e. the distance between rows, then between columns),
* (0020,0032) *Image Position (Patient)* of slice ``k`` = ``affine_lps @ (0, 0, k, 1)``,
* the stored pixel matrix of slice ``k`` is ``volume[:, :, k].T`` (shape ``[rows, cols]``
  = ``[j, i]``), because DICOM pixel data is row-major ``[row, column]``.

The third column of ``affine_lps`` must be parallel or anti-parallel to the slice normal
``row_dir × col_dir`` (no gantry tilt). Anti-parallel is allowed: PET slices then run
head→feet, and for NM the (0018,0088) *Spacing Between Slices* is written negative, as
some Siemens cameras do.

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
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence as DicomSequence
from pydicom.uid import (
    ExplicitVRLittleEndian,
    NuclearMedicineImageStorage,
    PositronEmissionTomographyImageStorage,
    generate_uid,
)
from pydicom.valuerep import format_number_as_ds

from fedmi.shared.tasks import NUCLIDE_CODES, TRACERS

__all__ = [
    "PetMeta",
    "NmMeta",
    "write_pet_series",
    "write_nm_series",
    "ds",
    "geometry_from_affine",
    "suv_factor",
    "nm_sop_instance_uid",
    "read_pet_suv",
]

#: Code scheme of each radiopharmaceutical code value in :data:`fedmi.shared.tasks.TRACERS`
#: (PS3.16: all SCT except PiB, which has only a DCM code).
_CODE_SCHEME = {"126500": "DCM"}
_NUCLIDE_MEANING = {
    "18F": "^18^Fluorine",
    "11C": "^11^Carbon",
    "123I": "^123^Iodine",
}
_POSITRON_FRACTION = {"18F": 0.967, "11C": 0.998, "123I": 0.0}
_NM_ENERGY_KEV = {"123I": 159.0}


def ds(value: float) -> str:
    """A number as a conformant DS string (≤ 16 characters).

    Uses :func:`pydicom.valuerep.format_number_as_ds`; assigning a bare Python float to a DS
    element would write ``repr(float)``, which can exceed 16 characters.
    """
    return format_number_as_ds(float(value))


def _ds_float(value: float) -> float:
    """The float that a DS string of ``value`` reads back as."""
    return float(ds(value))


@dataclass
class _CommonMeta:
    """Fields shared by :class:`PetMeta` and :class:`NmMeta` (see there)."""

    patient_id: str = "SITEA-0001"
    patient_name: str = "Doe^Jane"
    patient_birth_date: str = "19560312"
    patient_sex: str = "F"
    patient_age_years: int = 68
    patient_weight_kg: float = 70.0
    patient_size_m: float = 1.68
    tracer: str = "fdg"
    injected_dose_mbq: float = 185.0
    injection_datetime: _dt.datetime = _dt.datetime(2025, 3, 14, 9, 30, 0)
    uptake_s: float = 2700.0
    frame_duration_s: float = 600.0
    study_description: str = "PET BRAIN"
    series_description: str = "Brain AC"
    series_number: int = 3
    accession_number: str = "A0000001"
    study_id: str = "1"
    referring_physician: str = "Smith^John"
    institution_name: str = "Example University Hospital"
    station_name: str = "PETCT01"
    manufacturer: str = "SIEMENS"
    model_name: str = "Biograph mCT"
    software_versions: str = "VG60A"
    device_serial_number: str = "10001"
    convolution_kernel: str = "XYZ Gauss5.00"
    reconstruction_diameter_mm: float | None = None
    #: Deterministic UIDs: ``None`` gives fresh random UIDs, a tuple of strings seeds
    #: :func:`pydicom.uid.generate_uid` (``entropy_srcs``) for every UID of the series.
    uid_entropy: tuple[str, ...] | None = None
    study_uid: str | None = None
    series_uid: str | None = None
    frame_of_reference_uid: str | None = None
    #: Extra top-level attributes (keyword → value) applied last.
    extra: dict[str, object] = field(default_factory=dict)

    @property
    def scan_datetime(self) -> _dt.datetime:
        """Scan (series) start = injection + uptake, to whole seconds."""
        return self.injection_datetime + _dt.timedelta(seconds=round(self.uptake_s))


@dataclass
class PetMeta(_CommonMeta):
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


@dataclass
class NmMeta(_CommonMeta):
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


def geometry_from_affine(affine_lps: np.ndarray) -> dict[str, object]:
    """Split a voxel→LPS affine into DICOM image-plane attributes.

    Returns
    -------
    dict
        ``iop`` (6 floats, rounded to 6 decimals), ``pixel_spacing`` ([row, col] mm),
        ``slice_step`` (signed mm along the normal ``row × col``), ``normal`` (3,).

    Raises
    ------
    ValueError
        If the slice axis is not parallel to the normal of the image plane.
    """
    a = np.asarray(affine_lps, dtype=np.float64)
    if a.shape != (4, 4):
        raise ValueError(f"affine_lps must be 4×4, got {a.shape}")
    col_step = np.linalg.norm(a[:3, 0])
    row_step = np.linalg.norm(a[:3, 1])
    if col_step == 0 or row_step == 0:
        raise ValueError("affine_lps has a zero-length in-plane axis")
    rdir = a[:3, 0] / col_step
    cdir = a[:3, 1] / row_step
    normal = np.cross(rdir, cdir)
    kvec = a[:3, 2]
    step = float(np.dot(kvec, normal))
    if abs(step) == 0 or np.linalg.norm(kvec - step * normal) > 1e-4 * max(1.0, abs(step)):
        raise ValueError(
            "affine_lps: the slice axis (third column) must be parallel to the normal of the "
            "image plane (no gantry tilt / shear)"
        )
    return {
        "iop": [round(float(v), 6) + 0.0 for v in (*rdir, *cdir)],
        "pixel_spacing": [row_step, col_step],
        "slice_step": step,
        "normal": normal,
    }


def suv_factor(meta: PetMeta) -> float:
    """SUVbw factor in g/Bq (QIBA): ``weight × 1000 / (dose × 2^(−Δt/T½))``.

    Uses the values exactly as they are written to DICOM (DS strings, whole seconds).
    """
    tracer = TRACERS[meta.tracer]
    weight = _ds_float(meta.patient_weight_kg)
    dose_bq = _ds_float(_dose_bq(meta))
    half = _ds_float(tracer.half_life_s)
    dt = (meta.scan_datetime - meta.injection_datetime.replace(microsecond=0)).total_seconds()
    return weight * 1000.0 / (dose_bq * 2.0 ** (-dt / half))


def _dose_bq(meta: _CommonMeta) -> float:
    return float(round(meta.injected_dose_mbq * 1e6, -3))


def _date(d: _dt.datetime) -> str:
    return d.strftime("%Y%m%d")


def _time(d: _dt.datetime) -> str:
    return d.strftime("%H%M%S")


def _code_item(value: str, scheme: str, meaning: str) -> Dataset:
    item = Dataset()
    item.CodeValue = value
    item.CodingSchemeDesignator = scheme
    item.CodeMeaning = meaning
    return item


def _uid(meta: _CommonMeta, *parts: str) -> str:
    if meta.uid_entropy is None:
        return generate_uid()
    return generate_uid(entropy_srcs=[*meta.uid_entropy, *parts])


def _series_uids(meta: _CommonMeta) -> tuple[str, str, str]:
    study = meta.study_uid or _uid(meta, "study")
    series = meta.series_uid or _uid(meta, "series", str(meta.series_number))
    frame = meta.frame_of_reference_uid or _uid(meta, "frame-of-reference")
    return study, series, frame


def _radiopharmaceutical_item(meta: _CommonMeta, dose_text: str) -> Dataset:
    tracer = TRACERS[meta.tracer]
    inj = meta.injection_datetime.replace(microsecond=0)
    item = Dataset()
    item.Radiopharmaceutical = tracer.display.replace("^", "")
    item.RadiopharmaceuticalRoute = "Intravenous"
    item.RadiopharmaceuticalStartTime = _time(inj)
    item.RadiopharmaceuticalStartDateTime = inj.strftime("%Y%m%d%H%M%S")
    item.RadionuclideTotalDose = dose_text
    item.RadionuclideHalfLife = ds(tracer.half_life_s)
    if _POSITRON_FRACTION.get(tracer.nuclide, 0.0) > 0:
        item.RadionuclidePositronFraction = ds(_POSITRON_FRACTION[tracer.nuclide])
    item.RadionuclideCodeSequence = DicomSequence(
        [_code_item(NUCLIDE_CODES[tracer.nuclide], "SCT", _NUCLIDE_MEANING[tracer.nuclide])]
    )
    item.RadiopharmaceuticalCodeSequence = DicomSequence(
        [_code_item(tracer.code, _CODE_SCHEME.get(tracer.code, "SCT"), tracer.display)]
    )
    item.AdministrationRouteCodeSequence = DicomSequence(
        [_code_item("47625008", "SCT", "Intravenous route")]
    )
    return item


def _base_dataset(meta: _CommonMeta, modality: str, sop_class: str) -> Dataset:
    """Patient, study, series, frame-of-reference and equipment modules."""
    study_uid, series_uid, frame_uid = _series_uids(meta)
    scan = meta.scan_datetime
    d = Dataset()
    d.SpecificCharacterSet = "ISO_IR 100"
    d.SOPClassUID = sop_class
    d.StudyDate = _date(scan)
    d.SeriesDate = _date(scan)
    d.AcquisitionDate = _date(scan)
    d.ContentDate = _date(scan)
    d.StudyTime = _time(scan)
    d.SeriesTime = _time(scan)
    d.AcquisitionTime = _time(scan)
    d.ContentTime = _time(scan)
    d.AccessionNumber = meta.accession_number
    d.Modality = modality
    d.Manufacturer = meta.manufacturer
    d.InstitutionName = meta.institution_name
    d.ReferringPhysicianName = meta.referring_physician
    d.StationName = meta.station_name
    d.StudyDescription = meta.study_description
    d.SeriesDescription = meta.series_description
    d.ManufacturerModelName = meta.model_name
    d.PatientName = meta.patient_name
    d.PatientID = meta.patient_id
    d.PatientBirthDate = meta.patient_birth_date
    d.PatientSex = meta.patient_sex
    d.PatientAge = f"{int(meta.patient_age_years):03d}Y"
    d.PatientSize = ds(meta.patient_size_m)
    d.PatientWeight = ds(meta.patient_weight_kg)
    d.DeviceSerialNumber = meta.device_serial_number
    d.SoftwareVersions = meta.software_versions
    d.PatientPosition = "HFS"
    d.StudyInstanceUID = study_uid
    d.SeriesInstanceUID = series_uid
    d.StudyID = meta.study_id
    d.SeriesNumber = meta.series_number
    d.FrameOfReferenceUID = frame_uid
    d.PositionReferenceIndicator = ""
    if len(meta.convolution_kernel) > 16:
        raise ValueError("convolution_kernel must be at most 16 characters (SH)")
    d.ConvolutionKernel = meta.convolution_kernel
    return d


def _finish(d: Dataset, sop_uid: str) -> None:
    d.SOPInstanceUID = sop_uid
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = d.SOPClassUID
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = pydicom.uid.PYDICOM_IMPLEMENTATION_UID
    d.file_meta = meta


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
        True SUVbw volume indexed ``[i, j, k]`` (column, row, slice); see the module
        docstring for the frame conventions.
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
    tracer = TRACERS[meta.tracer]
    bqml = vol * (meta.calibration_factor / suv_factor(meta))
    nx, ny, nz = vol.shape
    aff = np.asarray(affine_lps, dtype=np.float64)
    scan = meta.scan_datetime
    half = _ds_float(tracer.half_life_s)
    lam = np.log(2.0) / half
    dur = float(round(meta.frame_duration_s))
    # Frame reference time: when the activity equals the decay-weighted frame average.
    t_ref = np.log(lam * dur / (1.0 - np.exp(-lam * dur))) / lam if dur > 0 else 0.0

    base = _base_dataset(meta, "PT", PositronEmissionTomographyImageStorage)
    base.ImageType = ["ORIGINAL", "PRIMARY"]
    base.SliceThickness = ds(abs(geom["slice_step"]))
    base.ImageOrientationPatient = [ds(v) for v in geom["iop"]]
    base.PixelSpacing = [ds(v) for v in geom["pixel_spacing"]]
    if meta.reconstruction_diameter_mm is not None:
        base.ReconstructionDiameter = ds(meta.reconstruction_diameter_mm)
    base.ActualFrameDuration = int(dur * 1000)
    base.FrameReferenceTime = ds(round(t_ref * 1000.0, 1))
    base.DecayFactor = ds(float(np.exp(lam * t_ref)))
    base.DoseCalibrationFactor = ds(1.0)
    base.SeriesType = ["STATIC", "IMAGE"]
    base.Units = "BQML"
    base.CountsSource = "EMISSION"
    base.NumberOfSlices = nz
    base.NumberOfTimeSlices = 1
    base.CorrectedImage = list(meta.corrected_image)
    base.RandomsCorrectionMethod = meta.randoms_correction_method
    base.AttenuationCorrectionMethod = meta.attenuation_correction_method
    base.ScatterCorrectionMethod = meta.scatter_correction_method
    base.DecayCorrection = "START"
    base.ReconstructionMethod = meta.reconstruction_method
    base.RadiopharmaceuticalInformationSequence = DicomSequence(
        [_radiopharmaceutical_item(meta, ds(_dose_bq(meta)))]
    )
    base.RescaleIntercept = "0"
    base.RescaleType = "BQML"
    base.SamplesPerPixel = 1
    for key, value in meta.extra.items():
        setattr(base, key, value)
    if meta.gems_private_scan_datetime:
        block = base.private_block(0x0009, "GEMS_PETD_01", create=True)
        block.add_new(0x0D, "DT", scan.strftime("%Y%m%d%H%M%S.00"))

    if rng is None:
        seed_text = base.SeriesInstanceUID.replace(".", "")[-18:]
        rng = np.random.default_rng(int(seed_text))
    paths: list[Path] = []
    used: set[str] = set()
    for k in range(nz):
        plane = bqml[:, :, k].T  # [rows = j, cols = i]
        peak = float(np.max(np.abs(plane)))
        slope = _ds_float(peak / 32767.0) if peak > 0 else 1.0
        stored = np.clip(np.rint(plane / slope), -32768, 32767).astype(np.int16)
        d = Dataset()
        d.update(base)
        ipp = aff @ np.array([0.0, 0.0, float(k), 1.0])
        d.ImagePositionPatient = [ds(v) for v in ipp[:3]]
        d.SliceLocation = ds(float(np.dot(geom["normal"], ipp[:3])))
        d.InstanceNumber = k + 1
        d.ImageIndex = k + 1
        d.RescaleSlope = ds(slope)
        d.set_pixel_data(np.ascontiguousarray(stored), "MONOCHROME2", 16)
        d.SmallestImagePixelValue = int(stored.min())
        d.LargestImagePixelValue = int(stored.max())
        sop = _uid(meta, "sop", str(meta.series_number), str(k))
        _finish(d, sop)
        name = _file_name(meta, k + 1, sop, rng)
        while name in used:
            name = _file_name(meta, k + 1, sop, rng)
        used.add(name)
        path = out_dir / name
        d.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


def nm_sop_instance_uid(meta: NmMeta) -> str:
    """(0008,0018) *SOP Instance UID* that :func:`write_nm_series` gives ``meta``'s object.

    Deterministic when ``meta.uid_entropy`` is set (so a caller can name the file after
    it); a fresh random UID otherwise.
    """
    return _uid(meta, "sop", str(meta.series_number))


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
    tracer = TRACERS[meta.tracer]
    nx, ny, nz = vol.shape
    aff = np.asarray(affine_lps, dtype=np.float64)
    d = _base_dataset(meta, "NM", NuclearMedicineImageStorage)
    d.ImageType = ["ORIGINAL", "PRIMARY", "RECON TOMO", "EMISSION"]
    d.ImageID = "RECON"
    d.SliceThickness = ds(abs(geom["slice_step"]))
    d.SpacingBetweenSlices = ds(geom["slice_step"])
    d.PixelSpacing = [ds(v) for v in geom["pixel_spacing"]]
    if meta.reconstruction_diameter_mm is not None:
        d.ReconstructionDiameter = ds(meta.reconstruction_diameter_mm)
    d.ActualFrameDuration = int(round(meta.frame_duration_s * 1000))
    d.CorrectedImage = list(meta.corrected_image)
    if meta.units_cnts:
        d.Units = "CNTS"
    d.NumberOfFrames = nz
    d.FrameIncrementPointer = pydicom.tag.Tag(0x0054, 0x0080)
    d.SliceVector = list(range(1, nz + 1))
    d.NumberOfSlices = nz
    d.NumberOfDetectors = 1
    d.NumberOfRotations = 1
    d.NumberOfEnergyWindows = 1
    e = tracer.nuclide
    kev = _NM_ENERGY_KEV.get(e, 140.0)
    win = Dataset()
    rng_item = Dataset()
    rng_item.EnergyWindowLowerLimit = ds(round(kev * 0.9, 1))
    rng_item.EnergyWindowUpperLimit = ds(round(kev * 1.1, 1))
    win.EnergyWindowRangeSequence = DicomSequence([rng_item])
    win.EnergyWindowName = f"{e} {kev:g} keV"
    d.EnergyWindowInformationSequence = DicomSequence([win])
    d.RadiopharmaceuticalInformationSequence = DicomSequence(
        [_radiopharmaceutical_item(meta, ds(round(meta.injected_dose_mbq, 2)))]
    )
    det = Dataset()
    det.CollimatorGridName = meta.collimator
    det.CollimatorType = "PARA"
    det.ImagePositionPatient = [ds(v) for v in aff[:3, 3]]
    det.ImageOrientationPatient = [ds(v) for v in geom["iop"]]
    det.RadialPosition = ds(meta.radial_position_mm)
    d.DetectorInformationSequence = DicomSequence([det])
    rot = Dataset()
    rot.StartAngle = ds(0.0)
    rot.AngularStep = ds(360.0 / max(1, meta.n_projections))
    rot.RotationDirection = "CW"
    rot.ScanArc = ds(360.0)
    rot.ActualFrameDuration = int(round(meta.frame_duration_s * 1000))
    rot.NumberOfFramesInRotation = meta.n_projections
    d.RotationInformationSequence = DicomSequence([rot])
    d.SamplesPerPixel = 1
    for key, value in meta.extra.items():
        setattr(d, key, value)
    # Multi-frame pixel data: [frames, rows, cols] = [k, j, i].
    frames = np.clip(np.rint(np.moveaxis(vol, 2, 0).transpose(0, 2, 1)), 0, 65535)
    d.set_pixel_data(np.ascontiguousarray(frames.astype(np.uint16)), "MONOCHROME2", 16)
    _finish(d, nm_sop_instance_uid(meta))
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    d.save_as(out_path, enforce_file_format=True)
    return out_path


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
