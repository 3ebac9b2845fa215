"""Find every file under ``<site>/dicom/`` and read just enough of its header to group it.

Any nesting and any file names (no extension, DICOMDIR, mixed series and modalities in
one folder). Each file is read once here with ``stop_before_pixels`` and
``specific_tags`` (fast); files already seen with the same size and modification time
reuse the header fields stored in the file index (see :mod:`fedmi.client.ingest.cache`), so an
unchanged folder is grouped without opening a single file.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import pydicom
from pydicom.errors import InvalidDicomError
from pydicom.uid import MediaStorageDirectoryStorage

#: Header elements read during discovery.
DISCOVERY_TAGS = [
    "SOPClassUID",
    "SOPInstanceUID",
    "SeriesInstanceUID",
    "Modality",
    "PatientID",
    "ImageType",
    "DirectoryRecordSequence",
]


@dataclass
class FileRecord:
    """One file under the DICOM folder and its grouping attributes.

    Attributes
    ----------
    relpath
        POSIX path relative to the site folder (e.g. ``dicom/a/IM0001``).
    size, mtime_ns
        ``os.stat`` size and modification time (cache validity).
    series_uid, sop_uid, sop_class, modality, patient_id, image_type
        (0020,000E), (0008,0018), (0008,0016), (0008,0060), (0010,0020), (0008,0008).
    reason, message
        Set when the file itself is unusable (``not_dicom``, ``dicomdir``, ...).
    """

    relpath: str
    size: int
    mtime_ns: int
    series_uid: str = ""
    sop_uid: str = ""
    sop_class: str = ""
    modality: str = ""
    patient_id: str = ""
    image_type: list[str] = field(default_factory=list)
    reason: str | None = None
    message: str | None = None

    def to_json(self) -> dict:
        """A JSON-ready dict (for the file index)."""
        return asdict(self)


def _walk(root: Path) -> Iterable[Path]:
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for f in sorted(filenames):
            yield Path(dirpath) / f


def _cut_short(path: Path) -> bool:
    """Whether a full read of ``path`` fails or finds no (7FE0,0010) *Pixel Data*."""
    try:
        return "PixelData" not in pydicom.dcmread(path, force=True)
    except Exception:  # noqa: BLE001 - any failure here means the file is cut short
        return True


def read_header(path: Path, relpath: str, size: int, mtime_ns: int) -> FileRecord:
    """Read the grouping attributes of one file (never raises).

    Reads the :data:`DISCOVERY_TAGS` (no pixels): (0008,0016) *SOP Class UID*, (0008,0018)
    *SOP Instance UID*, (0020,000E) *Series Instance UID*, (0008,0060) *Modality*,
    (0010,0020) *Patient ID* and (0008,0008) *Image Type*; a file that is empty, a
    DICOMDIR, unreadable, not DICOM, cut short or without UIDs gets a ``reason``.
    """
    rec = FileRecord(relpath, size, mtime_ns)
    if size == 0:
        rec.reason, rec.message = "not_dicom", f"{relpath} is empty (0 bytes); delete it."
        return rec
    try:
        ds, raw = _read_discovery_tags(path)
        if _is_dicomdir(ds):
            rec.reason = "dicomdir"
            rec.message = (
                f"{relpath} is a DICOMDIR media index; it is ignored and the image files "
                "it lists are read directly."
            )
            return rec
        _fill_grouping(rec, ds)
    except EOFError:
        rec.reason = "truncated"
        rec.message = f"{relpath} ends inside its DICOM header; re-copy it from the scanner/PACS."
        return rec
    except Exception as exc:  # noqa: BLE001 - any read failure means "not usable DICOM"
        rec.reason = "not_dicom"
        rec.message = (
            f"{relpath} is not a readable DICOM file ({type(exc).__name__}). Remove it from the "
            "DICOM folder if it is not an image."
        )
        return rec
    _check_identifiers(rec, path, raw)
    return rec


def _read_discovery_tags(path: Path) -> tuple[pydicom.Dataset, bool]:
    """The :data:`DISCOVERY_TAGS` of a file, without pixels.

    A file without the 128-byte preamble and ``DICM`` prefix (a raw data set, as some old
    PACS export) is read again with ``force=True``.

    Returns
    -------
    tuple
        ``(dataset, raw)`` with ``raw`` true for the forced read.
    """
    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=DISCOVERY_TAGS)
        return ds, False
    except InvalidDicomError:
        # No 128-byte preamble + 'DICM': maybe a raw data set (old PACS exports).
        ds = pydicom.dcmread(
            path, stop_before_pixels=True, specific_tags=DISCOVERY_TAGS, force=True
        )
        return ds, True


def _is_dicomdir(ds: pydicom.Dataset) -> bool:
    """Whether (0002,0002) *Media Storage SOP Class UID* is Media Storage Directory Storage
    or the data set has a (0004,1220) *Directory Record Sequence*."""
    meta = getattr(ds, "file_meta", None)
    media_class = str(meta.get("MediaStorageSOPClassUID", "")) if meta is not None else ""
    return media_class == MediaStorageDirectoryStorage or "DirectoryRecordSequence" in ds


def _fill_grouping(rec: FileRecord, ds: pydicom.Dataset) -> None:
    """Copy the grouping attributes of ``ds`` into ``rec`` (stripped; modality and
    image-type values upper-cased): (0008,0016) *SOP Class UID*, (0008,0018) *SOP Instance
    UID*, (0020,000E) *Series Instance UID*, (0008,0060) *Modality*, (0010,0020) *Patient
    ID* and (0008,0008) *Image Type*."""
    rec.sop_class = str(ds.get("SOPClassUID", "") or "").strip()
    rec.sop_uid = str(ds.get("SOPInstanceUID", "") or "").strip()
    rec.series_uid = str(ds.get("SeriesInstanceUID", "") or "").strip()
    rec.modality = str(ds.get("Modality", "") or "").strip().upper()
    rec.patient_id = str(ds.get("PatientID", "") or "").strip()
    image_type = ds.get("ImageType") or []
    if isinstance(image_type, str):
        image_type = [image_type]
    rec.image_type = [str(v).strip().upper() for v in image_type]


def _check_identifiers(rec: FileRecord, path: Path, raw: bool) -> None:
    """Set ``rec.reason`` when the file cannot be grouped into a series.

    ``not_dicom`` for a raw read without (0008,0016) *SOP Class UID* or (0020,000E)
    *Series Instance UID*; ``truncated`` when (0020,000E) or (0008,0018) *SOP Instance
    UID* is missing and a full read finds no (7FE0,0010) *Pixel Data*; ``missing_uid``
    when either UID is missing otherwise.
    """
    if raw and not (rec.sop_class and rec.series_uid):
        rec.reason = "not_dicom"
        rec.message = (
            f"{rec.relpath} is not a DICOM file (no 'DICM' prefix and no DICOM identifiers). "
            "Remove it from the DICOM folder if it is not an image."
        )
    elif (not rec.series_uid or not rec.sop_uid) and _cut_short(path):
        rec.reason = "truncated"
        rec.message = (
            f"{rec.relpath} ends inside its DICOM header (no Series/SOP Instance UID and no "
            "pixel data); re-copy it from the scanner/PACS."
        )
    elif not rec.series_uid or not rec.sop_uid:
        rec.reason = "missing_uid"
        rec.message = (
            f"{rec.relpath} has no (0020,000E) Series Instance UID or (0008,0018) SOP Instance "
            "UID, so it cannot be grouped into a series. Re-export it from the scanner/PACS."
        )


def discover(site_dir: Path, index: dict[str, dict] | None = None) -> tuple[list[FileRecord], int]:
    """Every file under ``site_dir/dicom`` with its header attributes.

    Parameters
    ----------
    site_dir
        The site folder (``<root>/<site-id>``).
    index
        Previous file index (``relpath`` → :meth:`FileRecord.to_json`); entries whose size and
        modification time are unchanged are reused without reading the file.

    Returns
    -------
    tuple
        ``(records, n_read)``: one record per file (sorted by path) and how many files were
        actually opened.
    """
    site_dir = Path(site_dir)
    root = site_dir / "dicom"
    index = index or {}
    records: list[FileRecord] = []
    n_read = 0
    if not root.is_dir():
        return records, 0
    for path in _walk(root):
        try:
            st = path.stat()
        except OSError:
            continue
        if not path.is_file():
            continue
        rel = path.relative_to(site_dir).as_posix()
        old = index.get(rel)
        if (
            old is not None
            and old.get("size") == st.st_size
            and old.get("mtime_ns") == st.st_mtime_ns
        ):
            records.append(FileRecord(**old))
            continue
        records.append(read_header(path, rel, st.st_size, st.st_mtime_ns))
        n_read += 1
    return records, n_read


def group_series(records: Iterable[FileRecord]) -> dict[str, list[FileRecord]]:
    """Usable records grouped by (0020,000E) *Series Instance UID* (insertion ordered)."""
    out: dict[str, list[FileRecord]] = {}
    for rec in records:
        if rec.reason is None:
            out.setdefault(rec.series_uid, []).append(rec)
    return out
