"""The ingest cache under ``STATE_DIR/cache/``.

* ``file_index.json``: per file (relative path) its size, modification time and the header
  fields discovery read, so an unchanged folder is grouped without opening files.
* ``<key>.nii.gz``: a series on the task grid (float32, grid affine).
* ``<key>.json``: the series' report row (or its rejection), so a re-run needs no DICOM read.
  It carries ``sha256``, the SHA-256 of its own canonical JSON, and an accepted row carries
  ``volume_sha256``, the SHA-256 of its ``.nii.gz`` file.

The key hashes the pipeline version, the task, the (0020,000E) *Series Instance UID* and every
file's relative path, size and modification time: touching, adding or removing one file of
a series re-does that series only.

Damage: an entry that cannot be parsed, fails its own checksum, or whose volume is missing or
fails ``volume_sha256`` (a truncated or overwritten file) is not used: ingest re-does that
series and rewrites both files; entries of older fedmi versions, without checksums, are
re-done once. At training time :func:`read_volume` checks the same checksum, so a volume
damaged after ingest is refused (the site answers ``no-data`` and names the fix) instead of
being trained on. Files are 0600 in 0700 folders (:mod:`fedmi.client.private_files`).
"""

from __future__ import annotations

import gzip
import hashlib
import json
import logging
from collections.abc import Sequence
from pathlib import Path

import nibabel as nib
import numpy as np

from fedmi.client.ingest.discovery import FileRecord
from fedmi.client.ingest.version import PIPELINE_VERSION
from fedmi.client.private_files import private_dir, write_private
from fedmi.shared.grid import Grid

log = logging.getLogger(__name__)

CACHE_DIR = "cache"
INDEX_FILE = "file_index.json"


class DamagedCache(ValueError):
    """A cached volume is missing or fails its checksum; the message names it and the fix."""


def cache_dir(state_dir: Path) -> Path:
    """``STATE_DIR/cache`` (created 0700, with ``STATE_DIR`` when missing)."""
    return private_dir(Path(state_dir) / CACHE_DIR)


def _atomic_write_text(path: Path, text: str) -> None:
    write_private(path, text)


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _entry_digest(entry: dict) -> str:
    """Checksum of an entry without its own ``sha256`` field."""
    rest = {k: v for k, v in entry.items() if k != "sha256"}
    return _sha256(json.dumps(rest, sort_keys=True, separators=(",", ":")).encode())


def load_index(state_dir: Path) -> dict[str, dict]:
    """The previous run's file index (empty when absent, unreadable or of another version)."""
    path = Path(state_dir) / CACHE_DIR / INDEX_FILE
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    if data.get("pipeline_version") != PIPELINE_VERSION:
        return {}
    return data.get("files", {})


def save_index(state_dir: Path, records: Sequence[FileRecord]) -> None:
    """Write the file index for the next run."""
    data = {
        "pipeline_version": PIPELINE_VERSION,
        "files": {r.relpath: r.to_json() for r in records},
    }
    _atomic_write_text(cache_dir(state_dir) / INDEX_FILE, json.dumps(data))


def series_key(
    series_uid: str, records: Sequence[FileRecord], task: str, settings: str = ""
) -> str:
    """Cache key of a series: hash of version, task, UID, each file's path/size/mtime and
    ``settings`` (the spatial normalisation: template recipe, registration, QC levels)."""
    files = sorted((r.relpath, r.size, r.mtime_ns) for r in records)
    blob = json.dumps([PIPELINE_VERSION, task, series_uid, files, settings]).encode()
    return hashlib.sha256(blob).hexdigest()[:32]


def volume_relpath(key: str) -> str:
    """Path of a cached volume relative to ``STATE_DIR``."""
    return f"{CACHE_DIR}/{key}.nii.gz"


def load_entry(state_dir: Path, key: str) -> dict | None:
    """The cached result of a series, or ``None`` when absent or damaged (then re-done).

    Damaged: not JSON, no or a wrong ``sha256``, or an accepted entry whose volume is
    missing or does not match ``volume_sha256``.
    """
    path = Path(state_dir) / CACHE_DIR / f"{key}.json"
    try:
        entry = json.loads(path.read_text("utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        entry = None
    problem = _entry_problem(state_dir, key, entry)
    if problem:
        log.warning("cache entry %s is damaged (%s): ingesting that series again", path, problem)
        return None
    return entry


def _entry_problem(state_dir: Path, key: str, entry: object) -> str | None:
    """Why a cache entry cannot be used, or ``None``."""
    if not isinstance(entry, dict):
        return "not a JSON object"
    if entry.get("sha256") != _entry_digest(entry):
        return "its checksum does not match"
    if entry.get("status") != "accepted":
        return None
    volume = Path(state_dir) / volume_relpath(key)
    try:
        data = volume.read_bytes()
    except OSError:
        return "its volume is missing"
    if _sha256(data) != entry.get("row", {}).get("volume_sha256"):
        return "its volume does not match its checksum"
    return None


def save_entry(state_dir: Path, key: str, entry: dict) -> None:
    """Store the result of a series (after its volume, so a crash never leaves an entry
    pointing at a missing volume). Adds the checksums to ``entry`` itself, so the report
    row of a series ingested now carries ``volume_sha256`` too."""
    if entry.get("status") == "accepted":
        volume = (Path(state_dir) / volume_relpath(key)).read_bytes()
        entry["row"]["volume_sha256"] = _sha256(volume)
    entry["sha256"] = _entry_digest(entry)
    _atomic_write_text(cache_dir(state_dir) / f"{key}.json", json.dumps(entry))


def save_volume(state_dir: Path, key: str, volume: np.ndarray, grid: Grid) -> str:
    """Write a grid volume as float32 NIfTI (gzip) with the grid affine, 0600; returns its
    path relative to ``state_dir``."""
    rel = volume_relpath(key)
    img = nib.Nifti1Image(np.asarray(volume, dtype=np.float32), grid.affine)
    img.header.set_xyzt_units("mm")
    cache_dir(state_dir)
    write_private(Path(state_dir) / rel, gzip.compress(img.to_bytes(), compresslevel=1, mtime=0))
    return rel


def read_volume(path: Path, sha256: str | None) -> np.ndarray:
    """A cached volume (float32), after checking it against the ``sha256`` ingest recorded.

    Raises
    ------
    DamagedCache
        The file is missing, has no recorded checksum (an ingest of an older fedmi) or does
        not match it.
    """
    path = Path(path)
    fix = "run `fedmi-site ingest` for this state folder again: it rebuilds damaged entries"
    try:
        data = path.read_bytes()
    except OSError:
        raise DamagedCache(f"cached volume {path} is missing: {fix}") from None
    if not sha256:
        raise DamagedCache(f"cached volume {path} has no checksum (older ingest): {fix}")
    if _sha256(data) != sha256:
        raise DamagedCache(f"cached volume {path} is damaged (checksum mismatch): {fix}")
    img = nib.Nifti1Image.from_bytes(gzip.decompress(data))
    return np.asarray(img.dataobj, dtype=np.float32)


def prune(state_dir: Path, task: str, keep: set[str]) -> int:
    """Delete cached series of ``task`` that this run no longer refers to; returns how many."""
    n = 0
    for path in (Path(state_dir) / CACHE_DIR).glob("*.json"):
        key = path.stem
        if key in keep or path.name == INDEX_FILE:
            continue
        try:
            if json.loads(path.read_text("utf-8")).get("task") != task:
                continue
        except (OSError, ValueError):
            continue
        (Path(state_dir) / volume_relpath(key)).unlink(missing_ok=True)
        path.unlink(missing_ok=True)
        n += 1
    return n
