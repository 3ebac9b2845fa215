"""What the PET and NM writers share: DS values, UIDs, geometry and the common header.

:func:`image_dataset` writes the patient, study, series, frame-of-reference and equipment
modules plus the image-plane, reconstruction and (0054,0016) *Radiopharmaceutical
Information Sequence* attributes both modalities carry; :mod:`~fedmi.simulations.dicom.pet`
and :mod:`~fedmi.simulations.dicom.nm` add their own modules to it. The frame conventions
are in the package docstring (:mod:`fedmi.simulations.dicom`).
"""

from __future__ import annotations

import datetime as _dt
from dataclasses import dataclass, field

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence as DicomSequence
from pydicom.uid import ExplicitVRLittleEndian, generate_uid
from pydicom.valuerep import format_number_as_ds

from fedmi.shared.tasks import NUCLIDE_CODES, TRACERS

#: Code scheme of each radiopharmaceutical code value in :data:`fedmi.shared.tasks.TRACERS`
#: (PS3.16: all SCT except PiB, which has only a DCM code).
_CODE_SCHEME = {"126500": "DCM"}
_NUCLIDE_MEANING = {
    "18F": "^18^Fluorine",
    "11C": "^11^Carbon",
    "123I": "^123^Iodine",
}
_POSITRON_FRACTION = {"18F": 0.967, "11C": 0.998, "123I": 0.0}


def ds(value: float) -> str:
    """A number as a conformant DS string (≤ 16 characters).

    Uses :func:`pydicom.valuerep.format_number_as_ds`; assigning a bare Python float to a DS
    element would write ``repr(float)``, which can exceed 16 characters.
    """
    return format_number_as_ds(float(value))


def ds_float(value: float) -> float:
    """The float that a DS string of ``value`` reads back as."""
    return float(ds(value))


@dataclass
class CommonMeta:
    """Fields shared by :class:`~fedmi.simulations.dicom.pet.PetMeta` and
    :class:`~fedmi.simulations.dicom.nm.NmMeta` (see there)."""

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


def dose_bq(meta: CommonMeta) -> float:
    """The injected dose in Bq, to whole kBq."""
    return float(round(meta.injected_dose_mbq * 1e6, -3))


def dicom_date(d: _dt.datetime) -> str:
    """DA string ``YYYYMMDD``."""
    return d.strftime("%Y%m%d")


def dicom_time(d: _dt.datetime) -> str:
    """TM string ``HHMMSS``."""
    return d.strftime("%H%M%S")


def _code_item(value: str, scheme: str, meaning: str) -> Dataset:
    item = Dataset()
    item.CodeValue = value
    item.CodingSchemeDesignator = scheme
    item.CodeMeaning = meaning
    return item


def uid(meta: CommonMeta, *parts: str) -> str:
    """A fresh UID, or one seeded by ``meta.uid_entropy`` and ``parts`` (deterministic)."""
    if meta.uid_entropy is None:
        return generate_uid()
    return generate_uid(entropy_srcs=[*meta.uid_entropy, *parts])


def _series_uids(meta: CommonMeta) -> tuple[str, str, str]:
    study = meta.study_uid or uid(meta, "study")
    series = meta.series_uid or uid(meta, "series", str(meta.series_number))
    frame = meta.frame_of_reference_uid or uid(meta, "frame-of-reference")
    return study, series, frame


def _radiopharmaceutical_item(meta: CommonMeta, dose_text: str) -> Dataset:
    """The one item of (0054,0016) *Radiopharmaceutical Information Sequence*."""
    tracer = TRACERS[meta.tracer]
    inj = meta.injection_datetime.replace(microsecond=0)
    item = Dataset()
    item.Radiopharmaceutical = tracer.display.replace("^", "")
    item.RadiopharmaceuticalRoute = "Intravenous"
    item.RadiopharmaceuticalStartTime = dicom_time(inj)
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


def _base_dataset(meta: CommonMeta, modality: str, sop_class: str) -> Dataset:
    """Patient, study, series, frame-of-reference and equipment modules."""
    study_uid, series_uid, frame_uid = _series_uids(meta)
    scan = meta.scan_datetime
    d = Dataset()
    d.SpecificCharacterSet = "ISO_IR 100"
    d.SOPClassUID = sop_class
    d.StudyDate = dicom_date(scan)
    d.SeriesDate = dicom_date(scan)
    d.AcquisitionDate = dicom_date(scan)
    d.ContentDate = dicom_date(scan)
    d.StudyTime = dicom_time(scan)
    d.SeriesTime = dicom_time(scan)
    d.AcquisitionTime = dicom_time(scan)
    d.ContentTime = dicom_time(scan)
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


def image_dataset(
    meta: CommonMeta,
    modality: str,
    sop_class: str,
    geom: dict[str, object],
    *,
    image_type: list[str],
    corrected_image: tuple[str, ...],
    frame_duration_ms: int,
    dose_text: str,
) -> Dataset:
    """The header both writers start from (without ``meta.extra``, applied last).

    Besides :func:`_base_dataset`'s modules: (0008,0008) *Image Type*, (0018,0050) *Slice
    Thickness* = ``|slice_step|``, (0028,0030) *Pixel Spacing*, (0018,1100) *Reconstruction
    Diameter* (when set), (0018,1242) *Actual Frame Duration*, (0028,0051) *Corrected
    Image*, (0028,0002) *Samples per Pixel* and (0054,0016) *Radiopharmaceutical Information
    Sequence* with (0018,1074) *Radionuclide Total Dose* written as ``dose_text`` (Bq for
    PT, MBq for NM).
    """
    d = _base_dataset(meta, modality, sop_class)
    d.ImageType = image_type
    d.SliceThickness = ds(abs(geom["slice_step"]))
    d.PixelSpacing = [ds(v) for v in geom["pixel_spacing"]]
    if meta.reconstruction_diameter_mm is not None:
        d.ReconstructionDiameter = ds(meta.reconstruction_diameter_mm)
    d.ActualFrameDuration = frame_duration_ms
    d.CorrectedImage = list(corrected_image)
    d.RadiopharmaceuticalInformationSequence = DicomSequence(
        [_radiopharmaceutical_item(meta, dose_text)]
    )
    d.SamplesPerPixel = 1
    return d


def apply_extra(d: Dataset, meta: CommonMeta) -> None:
    """Set ``meta.extra``'s attributes on ``d`` (after everything else, so they win)."""
    for key, value in meta.extra.items():
        setattr(d, key, value)


def finish(d: Dataset, sop_uid: str) -> None:
    """Set (0008,0018) *SOP Instance UID* and the file meta (Explicit VR Little Endian)."""
    d.SOPInstanceUID = sop_uid
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = d.SOPClassUID
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = pydicom.uid.PYDICOM_IMPLEMENTATION_UID
    d.file_meta = meta
