"""One series: header checks against the task, then files → native volume (the pure step).

:func:`load_series` is the per-series pure function (files in, :class:`NativeSeries` out,
:class:`IngestError` for anything unusable); caching and reporting live in
:mod:`fedmi.client.ingest.pipeline`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from pydicom.uid import (
    EnhancedPETImageStorage,
    LegacyConvertedEnhancedPETImageStorage,
    PositronEmissionTomographyImageStorage,
)

from fedmi.client.ingest.discovery import FileRecord
from fedmi.client.ingest.errors import IngestError
from fedmi.client.ingest.nm import load_nm_series, nm_image_kind, nm_object_problem
from fedmi.client.ingest.pet import load_pet_series
from fedmi.client.ingest.volume import NativeSeries, read_dataset
from fedmi.shared.tasks import TRACERS, TaskSpec

ENHANCED_PET = {EnhancedPETImageStorage, LegacyConvertedEnhancedPETImageStorage}


def precheck(records: Sequence[FileRecord], task: TaskSpec) -> IngestError | None:
    """Header-only checks that reject a series before any pixel is read.

    Uses (0008,0060) *Modality*, (0008,0016) *SOP Class UID*, (0008,0018) *SOP Instance
    UID* and (0008,0008) *Image Type* from discovery.

    Returns
    -------
    IngestError or None
        The rejection, or ``None`` when the series is worth reading.
    """
    uid = records[0].series_uid
    names = f"{records[0].relpath}" + (f" and {len(records) - 1} more" if len(records) > 1 else "")
    modalities = sorted({r.modality for r in records})
    classes = sorted({r.sop_class for r in records})
    if len(modalities) > 1 or len(classes) > 1:
        return IngestError(
            "inconsistent_geometry",
            f"Series {uid} ({names}) mixes modalities {modalities} / SOP classes {classes} under "
            "one Series Instance UID. Re-export the series from the scanner or PACS.",
        )
    modality, sop_class = modalities[0], classes[0]
    label = f"{modality or 'unknown-modality'} series {uid} ({names})"
    if modality != task.modality:
        return _wrong_modality(label, modality, task)
    if modality == "PT":
        return _pet_class_problem(label, sop_class)
    return _nm_problem(label, records, sop_class)


def _wrong_modality(label: str, modality: str, task: TaskSpec) -> IngestError:
    """The rejection of a series whose (0008,0060) *Modality* is not the task's."""
    want = "PET (PT)" if task.modality == "PT" else "reconstructed SPECT (NM)"
    return IngestError(
        "wrong_modality",
        f"{label}: task {task.name} uses {want} images; this is {modality or 'no modality'}. "
        "Nothing to fix if it is e.g. the attenuation CT; otherwise export the "
        f"{want} series.",
    )


def _pet_class_problem(label: str, sop_class: str) -> IngestError | None:
    """Reject a PET series whose (0008,0016) *SOP Class UID* is not classic PET Image Storage.

    Returns
    -------
    IngestError or None
        ``enhanced_multiframe`` for (Legacy Converted) Enhanced PET, ``unsupported_sop_class``
        for any other class, ``None`` for PET Image Storage.
    """
    if sop_class in ENHANCED_PET:
        return IngestError(
            "enhanced_multiframe",
            f"{label} is an Enhanced/Legacy Converted Enhanced PET object ({sop_class}); "
            "ingest reads classic PET Image Storage (one slice per file). Export the series "
            "as classic PET images (1.2.840.10008.5.1.4.1.1.128).",
        )
    if sop_class != PositronEmissionTomographyImageStorage:
        return IngestError(
            "unsupported_sop_class",
            f"{label} has (0008,0016) SOP Class UID {sop_class}; ingest reads PET Image "
            "Storage (1.2.840.10008.5.1.4.1.1.128). Export the original PET reconstruction.",
        )
    return None


def _nm_problem(label: str, records: Sequence[FileRecord], sop_class: str) -> IngestError | None:
    """Reject an NM series that is not one reconstructed SPECT object.

    Checks (0008,0008) *Image Type* and (0008,0016) *SOP Class UID* (see
    :func:`fedmi.client.ingest.nm.nm_object_problem`), then that all files share one
    (0008,0018) *SOP Instance UID*.

    Returns
    -------
    IngestError or None
        ``planar_nm``, ``nm_projections``, ``unsupported_sop_class`` or
        ``conflicting_duplicates``; ``None`` when the series is worth reading.
    """
    kinds = {nm_image_kind(r.image_type) for r in records}
    err = nm_object_problem(label, kinds, "/".join(records[0].image_type), sop_class)
    if err is not None:
        return err
    if len({r.sop_uid for r in records}) > 1:
        return IngestError(
            "conflicting_duplicates",
            f"{label} holds {len({r.sop_uid for r in records})} different NM objects under one "
            "Series Instance UID; ingest expects one reconstruction per series. Export "
            "each reconstruction as its own series.",
        )
    return None


def load_series(files: Sequence[Path], names: Sequence[str] | None = None) -> NativeSeries:
    """Files of one series → :class:`NativeSeries` (SUVbw for PT, counts for NM).

    The modality is taken from the first file. For NM, exact copies of the one object are
    listed as duplicates.

    Raises
    ------
    IngestError
        Whatever makes the series unusable.
    """
    import pydicom

    files = [Path(f) for f in files]
    names = list(names) if names is not None else [str(f) for f in files]
    try:
        head = pydicom.dcmread(files[0], stop_before_pixels=True, specific_tags=["Modality"])
        modality = str(head.get("Modality", "")).upper()
    except Exception:  # noqa: BLE001 - the loaders below report the read error properly
        modality = "PT"
    if modality == "NM":
        native = load_nm_series(files[0], names[0])
        if len(files) > 1:
            _check_nm_copies(files, names, native.series_uid)
            native.duplicates = files[1:]
        return native
    return load_pet_series(files, names)


def _check_nm_copies(files: Sequence[Path], names: Sequence[str], series_uid: str) -> None:
    """Check that every further file of an NM series is an exact copy of the first.

    The files share one (0008,0018) *SOP Instance UID* (see :func:`precheck`); their
    (7FE0,0010) *Pixel Data* must be identical.

    Raises
    ------
    IngestError
        ``conflicting_duplicates`` for the first copy whose pixels differ.
    """
    pixels = read_dataset(files[0], names[0]).get("PixelData")
    for f, n in zip(files[1:], names[1:], strict=True):
        if read_dataset(f, n).get("PixelData") != pixels:
            raise IngestError(
                "conflicting_duplicates",
                f"NM series {series_uid}: {names[0]} and {n} carry the same "
                "(0008,0018) SOP Instance UID but different images. Remove the wrong "
                "copy or re-export the series.",
            )


def check_tracer(native: NativeSeries, task: TaskSpec, name: str) -> None:
    """Reject a series whose (0054,0016) radiopharmaceutical does not fit ``task``."""
    if native.tracer is None:
        said = f" (header says {native.tracer_text!r})" if native.tracer_text else ""
        raise IngestError(
            "unknown_tracer",
            f"{name}: no recognised radiopharmaceutical in (0054,0016) Radiopharmaceutical "
            f"Information Sequence{said}. Fill (0018,0031) Radiopharmaceutical or the "
            f"(0054,0304) code; task {task.name} accepts "
            f"{', '.join(TRACERS[t].display for t in task.tracers)}.",
        )
    if native.tracer not in task.tracers:
        raise IngestError(
            "wrong_tracer",
            f"{name} shows {TRACERS[native.tracer].display}; task {task.name} accepts "
            f"{', '.join(TRACERS[t].display for t in task.tracers)}. Leave this series out or "
            "ingest it for the matching task.",
        )
