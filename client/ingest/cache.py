"""The ingest cache under ``STATE_DIR/cache/``.

* ``file_index.json``: per file (relative path) its size, modification time and the header
  fields discovery read, so an unchanged folder is grouped without opening files.
* ``<key>.nii.gz``: a series on the task grid (float32, grid affine).
* ``<key>.json``: the series' report row (or its rejection), so a re-run needs no DICOM read.

The key hashes the pipeline version, the task, the (0020,000E) *Series Instance UID* and every
file's relative path, size and modification time: touching, adding or removing one file of
a series re-does that series only.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from pathlib import Path

import nibabel as nib
import numpy as np

from fedmi.client.ingest.discovery import FileRecord
from fedmi.client.ingest.version import PIPELINE_VERSION
from fedmi.shared.grid import Grid

CACHE_DIR = "cache"
INDEX_FILE = "file_index.json"


def cache_dir(state_dir: Path) -> Path:
    """``STATE_DIR/cache`` (created)."""
    d = Path(state_dir) / CACHE_DIR
    d.mkdir(parents=True, exist_ok=True)
    return d


def _atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


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
    """The cached result of a series, or ``None`` (also when its volume went missing)."""
    try:
        entry = json.loads((Path(state_dir) / CACHE_DIR / f"{key}.json").read_text("utf-8"))
    except (OSError, ValueError):
        return None
    if entry.get("status") == "accepted" and not (Path(state_dir) / volume_relpath(key)).is_file():
        return None
    return entry


def save_entry(state_dir: Path, key: str, entry: dict) -> None:
    """Store the result of a series (after its volume, so a crash never leaves a bad entry)."""
    _atomic_write_text(cache_dir(state_dir) / f"{key}.json", json.dumps(entry))


def save_volume(state_dir: Path, key: str, volume: np.ndarray, grid: Grid) -> str:
    """Write a grid volume as float32 NIfTI with the grid affine; returns its relative path."""
    rel = volume_relpath(key)
    final = Path(state_dir) / rel
    tmp = final.with_name(f".{key}.{os.getpid()}.tmp.nii.gz")
    img = nib.Nifti1Image(np.asarray(volume, dtype=np.float32), grid.affine)
    img.header.set_xyzt_units("mm")
    cache_dir(state_dir)
    nib.save(img, tmp)
    os.replace(tmp, final)
    return rel


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
