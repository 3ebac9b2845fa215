"""Reason codes for everything ingest refuses, and the exception that carries them.

Every rejected row of ``ingest_report.json`` has a machine ``reason`` (one of
:data:`REASONS`) and a ``message`` for the site physicist that names the file or
series and says how to fix it.
"""

from __future__ import annotations

#: Machine reason code → what it means (shown in ``fedmi-site ingest --help`` and the docs).
REASONS: dict[str, str] = {
    "not_dicom": "the file is not a DICOM Part 10 file or raw DICOM data set",
    "dicomdir": "a DICOMDIR media index; ignored (the images are read directly)",
    "truncated": "the file ends before its pixel data or header is complete",
    "missing_uid": "no (0020,000E) Series Instance UID or (0008,0018) SOP Instance UID",
    "wrong_modality": "(0008,0060) Modality does not fit the task (e.g. CT, MR, NM for a PET task)",
    "planar_nm": "NM object that is not a reconstructed tomogram (planar, whole-body, dynamic)",
    "nm_projections": "NM SPECT projections (TOMO) instead of the reconstructed volume",
    "enhanced_multiframe": "Enhanced or Legacy Converted Enhanced PET multi-frame object",
    "unsupported_sop_class": "(0008,0016) SOP Class UID that ingest cannot read for this modality",
    "unsupported_pixels": "pixel data that cannot be decoded (compression, colour, bit depth)",
    "missing_slices": "gaps in the slice positions, or fewer slices than (0054,0081) says",
    "uneven_spacing": "slice positions that are not evenly spaced along the slice normal",
    "inconsistent_geometry": "slices of one series disagree in orientation, matrix or spacing",
    "missing_geometry": "no (0020,0032) Image Position / (0020,0037) Image Orientation (Patient)",
    "duplicate_instance": "an exact second copy of an image already read (the copy is ignored)",
    "conflicting_duplicates": "two different images at the same slice position or with one SOP UID",
    "not_corrected": "(0028,0051) Corrected Image lacks ATTN or DECY, so no SUV can be computed",
    "unsupported_decay_correction": "(0054,1102) Decay Correction other than START or ADMIN",
    "unsupported_units": "(0054,1001) Units other than BQML, GML or CNTS with a Philips factor",
    "missing_suv_tags": "dose, half-life, weight or a time that SUVbw needs is absent",
    "implausible_suv_tags": "dose, weight or injection-to-scan time outside a plausible range",
    "unknown_tracer": "no radiopharmaceutical in (0054,0016) that fedmi recognises",
    "wrong_tracer": "a tracer that the task does not use",
    "unlabelled_patient": "(0010,0020) Patient ID absent from the header or from labels.csv",
    "invalid_label": "labels.csv gives a label value that is not valid for the task",
    "incomplete_coverage": "the field of view misses too much of the brain or reference region",
    "not_brain": "the scan does not look like a brain scan of the task after registration",
    "registration_failed": "spatial normalisation to the template failed (low correlation)",
    "implausible_registration": "the registration is no plausible head pose (mirror, size)",
    "empty_reference_region": "the reference region has no positive activity after resampling",
    "read_error": "the file could not be read for another reason (see message)",
}


#: Flag code → what it means: an accepted series that a physicist should look at
#: (``qc.flags`` of its report row; ``fedmi-site check`` lists them and shows a montage).
FLAGS: dict[str, str] = {
    "low_similarity": "the normalised scan correlates less with the template than brain scans do",
    "partial_coverage": "the field of view cuts part of the brain (the cut is filled, see docs)",
    "unusual_head_size": "head size differs from the template by more than 15 % along an axis",
    "large_tilt": "the head was rotated by more than 25 degrees from the template",
}


class IngestError(Exception):
    """A series (or file) that ingest rejects, with a reason code and a message.

    Parameters
    ----------
    reason
        One of :data:`REASONS`.
    message
        A sentence for the site physicist naming the file/series and the fix.
    """

    def __init__(self, reason: str, message: str) -> None:
        if reason not in REASONS:
            raise ValueError(f"unknown ingest reason code {reason!r}")
        super().__init__(message)
        self.reason = reason
        self.message = message
