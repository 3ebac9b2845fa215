"""Ingest a whole site folder: discovery → per-series loading → template grid → cache → report.

The per-series maths is in :func:`fedmi.client.ingest.series.load_series` (files → native volume)
and :func:`fedmi.client.ingest.template.to_template` (native → task grid); this module adds the
parts that touch the site: labels, the cache, worker processes and the report.
"""

from __future__ import annotations

import logging
import multiprocessing
from collections import Counter
from collections.abc import Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

from fedmi.client.ingest import cache
from fedmi.client.ingest.discovery import FileRecord, discover, group_series
from fedmi.client.ingest.errors import IngestError
from fedmi.client.ingest.labels import Labels, read_labels
from fedmi.client.ingest.report import IngestReport
from fedmi.client.ingest.series import check_tracer, load_series, precheck
from fedmi.client.ingest.template import to_template
from fedmi.client.ingest.version import PIPELINE_VERSION
from fedmi.client.site.config import SiteConfigError, load_site_config
from fedmi.shared.tasks import get_task

log = logging.getLogger(__name__)


def process_series(
    task: str, site_dir: str, relpaths: Sequence[str], state_dir: str, key: str
) -> dict:
    """Load one series, put it on the task grid and cache it; never raises.

    Returns
    -------
    dict
        The cache entry: ``{"status": "accepted", "task", "row": {...}, "used", "duplicates"}``
        or ``{"status": "rejected", "task", "reason", "message"}``.
    """
    spec = get_task(task)
    files = [Path(site_dir) / r for r in relpaths]
    try:
        native = load_series(files, relpaths)
        name = f"{native.modality} series {native.series_uid} ({relpaths[0]})"
        check_tracer(native, spec, name)
        result = to_template(native.volume, native.affine_ras, spec, name=name)
        cache.save_volume(Path(state_dir), key, result.volume, spec.grid)
    except IngestError as exc:
        return {"status": "rejected", "task": task, "reason": exc.reason, "message": exc.message}
    except Exception as exc:  # noqa: BLE001 - one bad series must never stop the site
        return {
            "status": "rejected",
            "task": task,
            "reason": "read_error",
            "message": (
                f"Series with {relpaths[0]} could not be ingested ({type(exc).__name__}: {exc}). "
                "Please report this with the file to the fedmi maintainers."
            ),
        }
    rel = {str(f): r for f, r in zip(files, relpaths, strict=True)}
    entry = {
        "status": "accepted",
        "task": task,
        "used": [rel[str(f)] for f in native.files],
        "duplicates": [rel[str(f)] for f in native.duplicates],
        "row": {
            "series_uid": native.series_uid,
            "patient_id": native.patient_id,
            "modality": native.modality,
            "tracer": native.tracer,
            "manufacturer": native.manufacturer,
            "model": native.model,
            "reconstruction": native.reconstruction,
            "voxel_size_mm": native.voxel_size_mm,
            "suv_factor": native.suv_factor,
            "cached_path": cache.volume_relpath(key),
            "notes": list(native.notes),
            "qc": {
                "head_shift_mm": [round(v, 2) for v in result.shift_mm],
                "brain_coverage": round(result.coverage, 4),
                "reference_value": result.reference_value,
            },
        },
    }
    cache.save_entry(Path(state_dir), key, entry)
    return entry


def _reject(files: Sequence[FileRecord], uid: str | None, err: IngestError) -> dict:
    return {
        "files": [r.relpath for r in files],
        "series_uid": uid,
        "reason": err.reason,
        "message": err.message,
    }


def ingest_site(site_dir: Path, task: str, state_dir: Path, workers: int = 1) -> IngestReport:
    """Ingest every DICOM file under ``site_dir/dicom`` for ``task`` into ``state_dir``.

    Parameters
    ----------
    site_dir
        The site folder (``dicom/``, ``labels.csv``, ``site.toml``).
    task
        Task name (see :data:`fedmi.shared.tasks.TASKS`).
    state_dir
        Where the cache, ``ingest_report.json`` and ``data_manifest.json`` go.
    workers
        Worker processes for series that are not cached (1: in this process).

    Returns
    -------
    IngestReport
        Also written to ``state_dir``.

    Raises
    ------
    ValueError
        Unknown task, no ``dicom/`` folder, or a site.toml whose task differs from ``task``
        (:class:`SiteConfigError`).
    """
    spec = get_task(task)
    site_dir, state_dir = Path(site_dir), Path(state_dir)
    if not (site_dir / "dicom").is_dir():
        raise SiteConfigError(
            f"{site_dir / 'dicom'} is not a folder: put the site's DICOM export under "
            f"SITE/dicom/ and give --site-dir SITE"
        )
    config = load_site_config(site_dir)
    if config.task is not None and config.task != spec.name:
        raise SiteConfigError(
            f"site.toml says this site's data is for task {config.task!r}, not {spec.name!r}"
        )
    cache.cache_dir(state_dir)
    records, n_read = discover(site_dir, cache.load_index(state_dir))
    cache.save_index(state_dir, records)
    labels = read_labels(site_dir / "labels.csv", spec)
    groups = group_series(records)
    log.info("found %d files in %d series (%d headers read)", len(records), len(groups), n_read)

    rejected: list[dict] = [
        _reject([r], r.series_uid or None, IngestError(r.reason, r.message or r.reason))
        for r in records
        if r.reason is not None
    ]
    outcome: dict[str, tuple[dict, bool]] = {}
    todo: dict[str, tuple[list[str], str]] = {}
    keys: dict[str, str] = {}
    early: dict[str, IngestError] = {}
    for uid, recs in groups.items():
        err = precheck(recs, spec)
        if err is None:
            err = _label_problem(uid, recs, labels, spec.name)
        if err is not None:
            early[uid] = err
            continue
        key = cache.series_key(uid, recs, spec.name)
        keys[uid] = key
        entry = cache.load_entry(state_dir, key)
        if entry is not None:
            outcome[uid] = (entry, True)
        else:
            todo[uid] = ([r.relpath for r in recs], key)

    n_total, done = len(groups), len(early) + len(outcome)
    if done:
        log.info("ingested %d/%d series (%d from cache)", done, n_total, len(outcome))
    for uid, entry in _run(spec.name, site_dir, state_dir, todo, workers):
        outcome[uid] = (entry, False)
        done += 1
        step = max(1, n_total // 10)
        if done % step == 0 or done == n_total or entry.get("reason"):
            log.info("ingested %d/%d series (%s)", done, n_total, entry.get("reason", "accepted"))

    accepted: list[dict] = []
    patients: Counter[str] = Counter()
    for uid, recs in groups.items():
        if uid in early:
            rejected.append(_reject(recs, uid, early[uid]))
            continue
        entry, from_cache = outcome[uid]
        if entry["status"] != "accepted":
            rejected.append(_reject(recs, uid, IngestError(entry["reason"], entry["message"])))
            continue
        row = dict(entry["row"])
        label = labels.values[recs[0].patient_id]
        row.update(
            label=label,
            class_index=spec.class_index(label),
            n_files=len(entry["used"]),
            from_cache=from_cache,
        )
        accepted.append(row)
        patients[row["patient_id"]] += 1
        if entry["duplicates"]:
            rejected.append(
                {
                    "files": list(entry["duplicates"]),
                    "series_uid": uid,
                    "reason": "duplicate_instance",
                    "message": (
                        f"{', '.join(entry['duplicates'])}: exact copies of images already read "
                        f"for series {uid} (same (0008,0018) SOP Instance UID and pixels); "
                        "ignored, the series itself was ingested. Delete the copies."
                    ),
                }
            )
    for row in accepted:
        if patients[row["patient_id"]] > 1:
            row["notes"] = [*row["notes"], "patient_has_several_series"]
    cache.prune(state_dir, spec.name, set(keys.values()))

    files_accepted = sum(r["n_files"] for r in accepted)
    rejected_series = {r["series_uid"] for r in rejected if r["reason"] != "duplicate_instance"}
    summary = {
        "files_found": len(records),
        "files_read": n_read,
        "files_accepted": files_accepted,
        "files_rejected": sum(len(r["files"]) for r in rejected),
        "series_found": len(groups),
        "series_accepted": len(accepted),
        "series_rejected": len(rejected_series & set(groups)),
        "series_from_cache": sum(1 for r in accepted if r["from_cache"]),
        "by_reason": dict(sorted(Counter(r["reason"] for r in rejected).items())),
    }
    report = IngestReport(
        task=spec.name,
        site_id=config.site_id,
        pipeline_version=PIPELINE_VERSION,
        summary=summary,
        accepted=accepted,
        rejected=rejected,
    )
    report.write(state_dir)
    log.info(
        "ingest done: %d series accepted, %d rejected, %d files not used",
        summary["series_accepted"],
        summary["series_rejected"],
        summary["files_rejected"],
    )
    return report


def _label_problem(
    uid: str, recs: Sequence[FileRecord], labels: Labels, task: str
) -> IngestError | None:
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


def _run(
    task: str, site_dir: Path, state_dir: Path, todo: dict[str, tuple[list[str], str]], workers: int
) -> Iterator[tuple[str, dict]]:
    """Yield ``(series_uid, entry)`` for every series to process, serially or in processes."""
    if not todo:
        return
    if workers <= 1 or len(todo) == 1:
        for uid, (rels, key) in todo.items():
            yield uid, process_series(task, str(site_dir), rels, str(state_dir), key)
        return
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=min(workers, len(todo)), mp_context=ctx) as pool:
        futures = {
            pool.submit(process_series, task, str(site_dir), rels, str(state_dir), key): uid
            for uid, (rels, key) in todo.items()
        }
        for fut in as_completed(futures):
            yield futures[fut], fut.result()
