"""The native volume of one series, and reading DICOM files and pixel data for it."""

from __future__ import annotations

import datetime as _dt
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian

from fedmi.client.ingest.errors import IngestError
from fedmi.client.ingest.geometry import lps_to_ras, voxel_sizes
from fedmi.client.ingest.tracer import tracer_of

#: Transfer syntaxes whose pixel data is raw little-endian bytes, read with ``np.frombuffer``
#: (about 20× faster than pydicom's decoder dispatch for many small slices).
_RAW_LE = {ImplicitVRLittleEndian, ExplicitVRLittleEndian}


@dataclass
class NativeSeries:
    """One series read from DICOM, before any resampling.

    Attributes
    ----------
    volume
        float32 ``[i, j, k]`` = [column, row, slice]; SUVbw for PET, counts for NM.
    affine_lps
        4×4 voxel → DICOM patient (LPS) mm affine.
    suv_factor
        g/Bq factor applied (``SUV = (stored·slope + intercept)·suv_factor``); ``None`` for NM.
    modality, tracer, series_uid, patient_id, manufacturer, model
        From (0008,0060), (0054,0016), (0020,000E), (0010,0020), (0008,0070), (0008,1090).
    files
        Files used, in slice order.
    duplicates
        Exact duplicate files ignored (same (0008,0018) SOP Instance UID and pixels).
    notes
        Non-fatal remarks for the report (machine words).
    """

    volume: np.ndarray
    affine_lps: np.ndarray
    suv_factor: float | None
    modality: str
    tracer: str | None
    series_uid: str
    patient_id: str
    manufacturer: str
    model: str
    files: list[Path] = field(default_factory=list)
    duplicates: list[Path] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    tracer_text: str = ""
    #: (0054,1103) *Reconstruction Method* (a harmonization-group fact; "" when absent)
    reconstruction: str = ""
    #: age in years at the scan (:func:`patient_age_years`); ``None`` when unknown
    age_years: float | None = None
    #: (0010,0040) *Patient's Sex*: ``F``, ``M``, ``O`` or ``""`` when absent
    sex: str = ""

    @property
    def affine_ras(self) -> np.ndarray:
        """4×4 voxel → RAS mm affine (NIfTI convention)."""
        return lps_to_ras(self.affine_lps)

    @property
    def voxel_size_mm(self) -> list[float]:
        """Voxel edge lengths (mm) along ``i, j, k``."""
        return [round(v, 4) for v in voxel_sizes(self.affine_lps)]


def read_dataset(path: Path, name: str) -> Dataset:
    """Read a whole DICOM file, turning read failures into :class:`IngestError`.

    Parameters
    ----------
    path
        File to read.
    name
        How to name the file in messages (its path relative to the site folder).
    """
    try:
        try:
            return pydicom.dcmread(path)
        except InvalidDicomError:
            return pydicom.dcmread(path, force=True)
    except (EOFError, OSError, ValueError, KeyError, TypeError, IndexError) as exc:
        raise IngestError(
            "truncated" if isinstance(exc, EOFError) else "read_error",
            f"{name} could not be read ({type(exc).__name__}: {exc}). Re-copy the file from the "
            "scanner or PACS.",
        ) from None


def stored_pixels(ds: Dataset, name: str) -> np.ndarray:
    """Stored pixel values, shape ``(frames, rows, columns)``, without any rescale.

    Uses (7FE0,0010) *Pixel Data* directly for uncompressed little-endian data and
    ``Dataset.pixel_array`` otherwise.

    Raises
    ------
    IngestError
        ``truncated`` when the pixel data is absent or shorter than (0028,0010) *Rows* ×
        (0028,0011) *Columns* × frames needs; ``unsupported_pixels`` when it cannot be decoded.
    """
    if "PixelData" not in ds:
        raise IngestError(
            "truncated",
            f"{name} has no (7FE0,0010) Pixel Data (header only or cut short). "
            "Re-copy the file from the scanner or PACS.",
        )
    rows, cols, frames, bits, signed = _pixel_layout(ds, name)
    if _is_raw_little_endian(ds) and bits in (8, 16, 32):
        return _raw_pixels(ds, name, (frames, rows, cols), bits, signed)
    return _decoded_pixels(ds, name, (frames, rows, cols))


def _pixel_layout(ds: Dataset, name: str) -> tuple[int, int, int, int, bool]:
    """The pixel matrix of a greyscale image.

    Reads (0028,0010) *Rows*, (0028,0011) *Columns*, (0028,0008) *Number of Frames*
    (default 1), (0028,0100) *Bits Allocated*, (0028,0002) *Samples per Pixel* (default 1)
    and (0028,0103) *Pixel Representation* (default 0, unsigned).

    Returns
    -------
    tuple
        ``(rows, columns, frames, bits_allocated, signed)``.

    Raises
    ------
    IngestError
        ``unsupported_pixels`` when Rows, Columns or Bits Allocated is missing or not a
        number, or when there is more than one sample per pixel (colour).
    """
    try:
        rows, cols = int(ds.Rows), int(ds.Columns)
        frames = int(ds.get("NumberOfFrames") or 1)
        bits = int(ds.BitsAllocated)
        spp = int(ds.get("SamplesPerPixel") or 1)
        signed = int(ds.get("PixelRepresentation") or 0) == 1
    except (AttributeError, TypeError, ValueError):
        raise IngestError(
            "unsupported_pixels",
            f"{name} lacks (0028,0010/0011/0100) Rows/Columns/Bits Allocated.",
        ) from None
    if spp != 1:
        raise IngestError(
            "unsupported_pixels",
            f"{name} has {spp} samples per pixel (colour); quantitative images are greyscale.",
        )
    return rows, cols, frames, bits, signed


def _is_raw_little_endian(ds: Dataset) -> bool:
    """Whether (0002,0010) *Transfer Syntax UID* is uncompressed little endian (or absent)."""
    meta = getattr(ds, "file_meta", None)
    tsyntax = meta.get("TransferSyntaxUID") if meta is not None else None
    return tsyntax in _RAW_LE or tsyntax is None


def _raw_pixels(
    ds: Dataset, name: str, shape: tuple[int, int, int], bits: int, signed: bool
) -> np.ndarray:
    """(7FE0,0010) *Pixel Data* of uncompressed little-endian data, read with ``np.frombuffer``.

    Parameters
    ----------
    ds
        The data set.
    name
        How to name the file in messages.
    shape
        ``(frames, rows, columns)`` from (0028,0008), (0028,0010) and (0028,0011).
    bits
        (0028,0100) *Bits Allocated*: 8, 16 or 32.
    signed
        (0028,0103) *Pixel Representation* is 1 (two's complement).

    Raises
    ------
    IngestError
        ``truncated`` when the pixel data holds fewer bytes than ``shape`` needs.
    """
    frames, rows, cols = shape
    data = ds.PixelData
    need = rows * cols * frames * bits // 8
    if len(data) < need:
        raise IngestError(
            "truncated",
            f"{name}: (7FE0,0010) Pixel Data holds {len(data)} bytes but "
            f"{rows}×{cols}×{frames} {bits}-bit pixels need {need}; the file is cut short. "
            "Re-copy it.",
        )
    dtype = np.dtype(f"<{'i' if signed else 'u'}{bits // 8}")
    return np.frombuffer(data, dtype=dtype, count=rows * cols * frames).reshape(frames, rows, cols)


def _decoded_pixels(ds: Dataset, name: str, shape: tuple[int, int, int]) -> np.ndarray:
    """(7FE0,0010) *Pixel Data* decoded by pydicom (compressed or big-endian data).

    Parameters
    ----------
    ds
        The data set.
    name
        How to name the file in messages.
    shape
        ``(frames, rows, columns)`` from (0028,0008), (0028,0010) and (0028,0011).

    Raises
    ------
    IngestError
        ``unsupported_pixels`` when pydicom cannot decode the data.
    """
    try:
        arr = ds.pixel_array
    except Exception as exc:  # pydicom raises many kinds for undecodable data
        raise IngestError(
            "unsupported_pixels",
            f"{name}: pixel data cannot be decoded ({type(exc).__name__}: {exc}). Export it "
            "uncompressed (Explicit VR Little Endian).",
        ) from None
    return np.asarray(arr).reshape(shape)


def rescale(ds: Dataset) -> tuple[float, float]:
    """(0028,1053) *Rescale Slope* and (0028,1052) *Rescale Intercept* (defaults 1 and 0).

    Returns
    -------
    tuple of float
        ``(slope, intercept)``; an absent or empty value gives the identity default.
    """
    slope = ds.get("RescaleSlope")
    icpt = ds.get("RescaleIntercept")
    return (
        1.0 if slope in (None, "") else float(slope),
        0.0 if icpt in (None, "") else float(icpt),
    )


def native_series(
    ds: Dataset,
    *,
    modality: str,
    volume: np.ndarray,
    affine: np.ndarray,
    suv_factor: float | None,
    files: list[Path],
    duplicates: list[Path] | None = None,
    notes: list[str],
) -> NativeSeries:
    """A :class:`NativeSeries` whose descriptive fields come from the header of ``ds``.

    Reads (0020,000E) *Series Instance UID*, (0010,0020) *Patient ID*, (0008,0070)
    *Manufacturer*, (0008,1090) *Manufacturer's Model Name*, (0054,1103) *Reconstruction
    Method* and the radiopharmaceutical of (0054,0016) *Radiopharmaceutical Information
    Sequence* (see :func:`fedmi.client.ingest.tracer.tracer_of`).

    Parameters
    ----------
    ds
        The (first) data set of the series.
    modality
        ``PT`` or ``NM`` (the loader that read the series).
    volume
        float32 ``[slice, row, column]`` stack; stored transposed to ``[i, j, k]``.
    affine
        Voxel ``[i, j, k]`` → LPS mm affine.
    suv_factor
        The SUVbw factor applied (PET) or ``None`` (NM counts).
    files, duplicates, notes
        See :class:`NativeSeries`.
    """
    tracer, tracer_text = tracer_of(ds)
    return NativeSeries(
        volume=volume.transpose(2, 1, 0),
        affine_lps=affine,
        suv_factor=suv_factor,
        modality=modality,
        tracer=tracer,
        tracer_text=tracer_text,
        series_uid=text(ds, "SeriesInstanceUID"),
        patient_id=text(ds, "PatientID"),
        manufacturer=text(ds, "Manufacturer"),
        model=text(ds, "ManufacturerModelName"),
        reconstruction=text(ds, "ReconstructionMethod"),
        age_years=patient_age_years(ds),
        sex=patient_sex(ds),
        files=files,
        duplicates=[] if duplicates is None else duplicates,
        notes=notes,
    )


#: (0010,1010) *Patient's Age* units (PS3.5 §6.2, VR AS): days, weeks, months, years
_AGE_UNITS = {"D": 1.0 / 365.25, "W": 7.0 / 365.25, "M": 1.0 / 12.0, "Y": 1.0}


def patient_age_years(ds: Dataset) -> float | None:
    """The patient's age at the scan in years, or ``None`` when the header does not say.

    (0010,1010) *Patient's Age* (VR AS, ``nnnD|W|M|Y``) when present and well-formed;
    otherwise (0010,0030) *Patient's Birth Date* against (0008,0022) *Acquisition Date*,
    (0008,0021) *Series Date* or (0008,0020) *Study Date* (the first present). Ages outside
    0–130 years are treated as unknown.
    """
    raw = text(ds, "PatientAge").upper()
    match = re.fullmatch(r"(\d{1,3})\s*([DWMY])", raw)
    age: float | None = None
    if match:
        age = int(match.group(1)) * _AGE_UNITS[match.group(2)]
    else:
        birth = _date(text(ds, "PatientBirthDate"))
        scan = next(
            (
                d
                for d in (
                    _date(text(ds, k)) for k in ("AcquisitionDate", "SeriesDate", "StudyDate")
                )
                if d is not None
            ),
            None,
        )
        if birth is not None and scan is not None:
            age = (scan - birth).days / 365.25
    if age is None or not 0.0 <= age <= 130.0:
        return None
    return round(age, 2)


def patient_sex(ds: Dataset) -> str:
    """(0010,0040) *Patient's Sex* as ``F``, ``M`` or ``O``; ``""`` when absent or invalid."""
    value = text(ds, "PatientSex").upper()
    return value if value in ("F", "M", "O") else ""


def _date(value: str) -> _dt.date | None:
    """A DICOM DA (``YYYYMMDD``) as a date, or ``None``."""
    try:
        return _dt.datetime.strptime(value[:8], "%Y%m%d").date() if len(value) >= 8 else None
    except ValueError:
        return None


def text(ds: Dataset, keyword: str) -> str:
    """A header string, stripped; empty when absent."""
    value = ds.get(keyword)
    return "" if value is None else str(value).strip()
