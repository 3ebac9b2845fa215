"""``labels.csv`` (columns ``PatientID,label``): one label per patient, checked against the task."""

from __future__ import annotations

import csv
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from fedmi.client.ingest.discovery import FileRecord
from fedmi.client.ingest.errors import IngestError
from fedmi.shared.tasks import TaskSpec


@dataclass
class Labels:
    """Labels of a site.

    Attributes
    ----------
    values
        PatientID → label, for valid rows only.
    invalid
        PatientID → message, for rows whose label is not valid for the task (or conflicts).
    error
        A message when the file is unreadable or has no PatientID,label header (then every
        series is refused until it is fixed).
    missing
        The site has no labels.csv at all: every series is ingested without a label.
    """

    values: dict[str, str] = field(default_factory=dict)
    invalid: dict[str, str] = field(default_factory=dict)
    error: str | None = None
    missing: bool = False


def read_labels(path: Path, task: TaskSpec) -> Labels:
    """Read and validate ``labels.csv`` against ``task.all_labels`` (never raises)."""
    out = Labels()
    valid = ", ".join(task.all_labels)
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            reader = csv.DictReader(fh)
            fields = [f.strip() for f in (reader.fieldnames or [])]
            if "PatientID" not in fields or "label" not in fields:
                out.error = (
                    f"{Path(path).name} needs the columns PatientID,label (found {fields}). "
                    "Fix its header row."
                )
                return out
            for lineno, row in enumerate(reader, start=2):
                row = {(k or "").strip(): (v or "").strip() for k, v in row.items()}
                pid, label = row.get("PatientID", ""), row.get("label", "")
                if not pid:
                    continue
                if label not in task.all_labels:
                    out.invalid[pid] = (
                        f"labels.csv line {lineno} gives patient {pid} the label {label!r}, which "
                        f"is not valid for task {task.name} (valid: {valid}). Correct labels.csv."
                    )
                elif pid in out.values and out.values[pid] != label:
                    out.invalid[pid] = (
                        f"labels.csv gives patient {pid} two labels ({out.values[pid]!r} and "
                        f"{label!r}). Keep one row per patient."
                    )
                elif pid not in out.invalid:
                    out.values[pid] = label
            for pid in out.invalid:
                out.values.pop(pid, None)
    except FileNotFoundError:
        out.missing = True
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        out.error = (
            f"labels.csv cannot be read ({type(exc).__name__}: {exc}). Save it as UTF-8 CSV."
        )
    return out


def label_problem(
    uid: str, recs: Sequence[FileRecord], labels: Labels, task: str
) -> IngestError | None:
    """Why a series cannot be matched to a valid label in labels.csv, if it cannot.

    Reads the (0010,0020) *Patient ID* of every file of the series (from discovery).

    Parameters
    ----------
    uid
        (0020,000E) *Series Instance UID* of the series.
    recs
        Its files' discovery records.
    labels
        The site's labels (:func:`read_labels`).
    task
        Task name, for the message.

    Returns
    -------
    IngestError or None
        ``unlabelled_patient`` (several or no Patient IDs, no usable labels.csv, patient
        not listed) or ``invalid_label``; ``None`` when the patient has a valid label.
    """
    pids = sorted({r.patient_id for r in recs})
    where = f"series {uid} ({recs[0].relpath})"
    if len(pids) > 1:
        return IngestError(
            "unlabelled_patient",
            f"{where} mixes (0010,0020) Patient IDs {pids}; a series belongs to one patient. "
            "Re-export it from the scanner or PACS.",
        )
    pid = pids[0]
    if not pid:
        return IngestError(
            "unlabelled_patient",
            f"{where} has no (0010,0020) Patient ID, so it cannot be matched to labels.csv. "
            "Fill the Patient ID (pseudonymised is fine) and re-export.",
        )
    if labels.error is not None:
        return IngestError("unlabelled_patient", f"{where}: {labels.error}")
    if pid in labels.invalid:
        return IngestError("invalid_label", f"{where}: {labels.invalid[pid]}")
    if pid not in labels.values:
        return IngestError(
            "unlabelled_patient",
            f"{where}: patient {pid} is not in labels.csv; add a row '{pid},<label>' for task "
            f"{task} or remove the series.",
        )
    return None


def is_unlabelled(recs: Sequence[FileRecord], labels: Labels) -> bool:
    """Whether a series is ingested without a label (kept apart from the labelled ones).

    True when the series has one non-empty (0010,0020) *Patient ID* that labels.csv does
    not list (or the site has no labels.csv at all). A patient with an invalid label, a
    damaged labels.csv or a series without one Patient ID stay rejected
    (:func:`label_problem`): those are mistakes to fix, not studies without a diagnosis.
    """
    pids = {r.patient_id for r in recs}
    if len(pids) != 1:
        return False
    pid = next(iter(pids))
    if not pid:
        return False
    if labels.missing:
        return True
    return labels.error is None and pid not in labels.values and pid not in labels.invalid


def stale_labels(rows: Sequence[dict], labels: Labels) -> int:
    """How many accepted report rows carry a label that labels.csv no longer gives.

    Ingest copies each patient's label into the report; a later edit of labels.csv (a
    label changed, a row removed or made invalid, the file gone) makes those copies stale.
    The caller refuses them (``fedmi-site ingest`` again applies the new labels to the
    cached volumes without re-reading DICOM).

    Parameters
    ----------
    rows
        Accepted rows of the ingest report (``patient_id``, ``label``).
    labels
        labels.csv read now (:func:`read_labels`).
    """
    return sum(1 for r in rows if labels.values.get(str(r["patient_id"])) != r["label"])
