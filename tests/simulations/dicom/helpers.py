"""Shared helpers of the DICOM writer tests."""

from __future__ import annotations

import pydicom


def all_ds_values(d: pydicom.Dataset):
    """(keyword, text) of every DS value in ``d``, nested sequences included."""
    for elem in d.iterall():
        if elem.VR == "DS" and elem.value is not None:
            values = elem.value if elem.VM > 1 else [elem.value]
            for v in values:
                yield elem.keyword, str(v.original_string if hasattr(v, "original_string") else v)
