"""Which radiopharmaceutical a series shows.

Read from (0054,0016) *Radiopharmaceutical Information Sequence*.
"""

from __future__ import annotations

from pydicom.dataset import Dataset

from fedmi.shared.tasks import identify_tracer


def tracer_of(ds: Dataset) -> tuple[str | None, str]:
    """Canonical tracer key (see :data:`fedmi.shared.tasks.TRACERS`) and the text it came from.

    Looks, in each item of (0054,0016), at (0018,0031) *Radiopharmaceutical* (free text),
    then the code value of (0054,0304) *Radiopharmaceutical Code Sequence* and its code
    meaning.

    Returns
    -------
    tuple
        ``(key or None, what the header said)``; the text is for messages only.
    """
    seen: list[str] = []
    for item in ds.get("RadiopharmaceuticalInformationSequence") or []:
        candidates = [str(item.get("Radiopharmaceutical", "") or "")]
        for code in item.get("RadiopharmaceuticalCodeSequence") or []:
            candidates.append(str(code.get("CodeValue", "") or ""))
            candidates.append(str(code.get("CodeMeaning", "") or ""))
        for text in candidates:
            if not text.strip():
                continue
            seen.append(text.strip())
            key = identify_tracer(text)
            if key is not None:
                return key, text.strip()
    return None, "; ".join(seen)
