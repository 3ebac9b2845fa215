"""``ingest_report.json`` and the counts-only data manifest, and reading them back.

Report schema::

    {"task", "site_id", "pipeline_version",
     "summary": {"files_found", "files_read", "files_accepted", "files_rejected",
                 "series_found", "series_accepted", "series_rejected", "series_from_cache",
                 "series_flagged", "by_reason": {reason: rows}, "by_flag": {flag: series}},
     "accepted": [{"series_uid", "patient_id", "modality", "tracer", "manufacturer", "model",
                   "reconstruction" ((0054,1103); absent in older caches),
                   "voxel_size_mm": [3 floats], "suv_factor": g/Bq or null,
                   "age_years" ((0010,1010), else birth date; null: unknown),
                   "sex" ((0010,0040) F/M/O, or ""),
                   "cached_path": relative to STATE_DIR, "volume_sha256": of that file,
                   "label" (labels.csv at ingest time), "class_index",
                   "n_files", "from_cache", "notes": [...],
                   "qc": {"head_shift_mm", "brain_coverage", "reference_value",
                          "flags": [flag codes, errors.FLAGS],
                          # after spatial normalisation (quality.Quality):
                          "similarity", "reference_coverage", "scales", "rotation_deg",
                          "anisotropy", "template_to_scan": 3×4 RAS mm, "nonlinear",
                          "registration_seconds", "registration_iterations"}}],
     "rejected": [{"files": [relative to the site folder], "series_uid": str or null,
                   "reason": code, "message": sentence}],
     "unlabelled": [rows like "accepted", with "label" and "class_index" null]}

Series of patients that labels.csv does not list (or every series, when the site has no
labels.csv) are ingested all the same but kept apart in ``unlabelled``: training and
evaluation read ``accepted`` only; prediction (``fedmi-site predict``) may use both.
``summary.series_unlabelled`` counts them.

Every file under ``dicom/`` is counted once: in an accepted row's ``n_files`` or in a
rejected row's ``files`` (exact duplicates of accepted images are rejected rows with reason
``duplicate_instance``).
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

from fedmi.client.private_files import private_dir, write_private

REPORT_FILE = "ingest_report.json"
MANIFEST_FILE = "data_manifest.json"


@dataclass
class IngestReport:
    """The outcome of one ingest run (see the module docstring for the JSON schema)."""

    task: str
    site_id: str
    pipeline_version: str
    summary: dict = field(default_factory=dict)
    accepted: list[dict] = field(default_factory=list)
    rejected: list[dict] = field(default_factory=list)
    unlabelled: list[dict] = field(default_factory=list)

    def to_dict(self) -> dict:
        """JSON-ready dict."""
        return asdict(self)

    def manifest(self) -> dict:
        """Counts of accepted series per tracer, manufacturer and model (no identifiers)."""
        return {
            "task": self.task,
            "site_id": self.site_id,
            "pipeline_version": self.pipeline_version,
            "n_series": len(self.accepted),
            "by_tracer": dict(sorted(Counter(r["tracer"] for r in self.accepted).items())),
            "by_manufacturer": dict(
                sorted(Counter(r["manufacturer"] or "unknown" for r in self.accepted).items())
            ),
            "by_model": dict(
                sorted(Counter(r["model"] or "unknown" for r in self.accepted).items())
            ),
        }

    def write(self, state_dir: Path) -> Path:
        """Write ``ingest_report.json`` and ``data_manifest.json`` into ``state_dir`` (0600,
        atomically; the folder is created 0700)."""
        state_dir = private_dir(Path(state_dir))
        for name, data in ((REPORT_FILE, self.to_dict()), (MANIFEST_FILE, self.manifest())):
            write_private(state_dir / name, json.dumps(data, indent=1) + "\n")
        return state_dir / REPORT_FILE

    @classmethod
    def load(cls, state_dir: Path) -> IngestReport:
        """Read ``ingest_report.json`` from ``state_dir``."""
        data = json.loads((Path(state_dir) / REPORT_FILE).read_text(encoding="utf-8"))
        return cls(**data)


def _absolute(state_dir: Path, rows: list[dict]) -> list[dict]:
    out = []
    for row in rows:
        row = dict(row)
        row["cached_path"] = str(state_dir / row["cached_path"])
        out.append(row)
    return out


def load_unlabelled(state_dir: Path) -> list[dict]:
    """Series ingested without a label (absolute ``cached_path``); never for training."""
    state_dir = Path(state_dir).resolve()
    return _absolute(state_dir, IngestReport.load(state_dir).unlabelled)


def load_accepted(state_dir: Path) -> list[dict]:
    """Accepted series of the last ingest, with absolute ``cached_path``.

    Parameters
    ----------
    state_dir
        The ``--out`` folder of ``fedmi-site ingest``.

    Returns
    -------
    list of dict
        Copies of the report's accepted rows; ``cached_path`` is an absolute path string and
        ``label``/``class_index`` come from labels.csv at ingest time.
    """
    state_dir = Path(state_dir).resolve()
    return _absolute(state_dir, IngestReport.load(state_dir).accepted)
