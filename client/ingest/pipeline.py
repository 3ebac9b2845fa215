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
from dataclasses import dataclass, field
from pathlib import Path

from fedmi.client.ingest import cache
from fedmi.client.ingest.discovery import FileRecord, discover, group_series
from fedmi.client.ingest.errors import IngestError
from fedmi.client.ingest.labels import Labels, is_unlabelled, label_problem, read_labels
from fedmi.client.ingest.quality import QcThresholds
from fedmi.client.ingest.registration import RegistrationSettings
from fedmi.client.ingest.report import IngestReport
from fedmi.client.ingest.series import check_tracer, load_series, precheck
from fedmi.client.ingest.template import TemplateResult, to_template
from fedmi.client.ingest.version import PIPELINE_VERSION
from fedmi.client.ingest.volume import NativeSeries
from fedmi.client.site.config import SiteConfig, SiteConfigError, load_site_config
from fedmi.shared.tasks import TaskSpec, get_task
from fedmi.shared.templates import template_recipe

log = logging.getLogger(__name__)


def process_series(
    task: str,
    site_dir: str,
    relpaths: Sequence[str],
    state_dir: str,
    key: str,
    registration: RegistrationSettings | None = None,
) -> dict:
    """Load one series, normalise it onto the task grid and cache it; never raises.

    Returns
    -------
    dict
        The cache entry: ``{"status": "accepted", "task", "row": {...}, "used", "duplicates"}``
        or ``{"status": "rejected", "task", "reason", "message"}``.
    """
    spec = get_task(task)
    files = [Path(site_dir) / r for r in relpaths]
    try:
        native, result = _native_on_grid(files, relpaths, spec, registration)
        cache.save_volume(Path(state_dir), key, result.volume, spec.grid)
    except IngestError as exc:
        return _rejected_entry(task, exc.reason, exc.message)
    except Exception as exc:  # noqa: BLE001 - one bad series must never stop the site
        return _rejected_entry(
            task,
            "read_error",
            f"Series with {relpaths[0]} could not be ingested ({type(exc).__name__}: {exc}). "
            "Please report this with the file to the fedmi maintainers.",
        )
    rel = {str(f): r for f, r in zip(files, relpaths, strict=True)}
    entry = _accepted_entry(task, key, native, result, rel)
    cache.save_entry(Path(state_dir), key, entry)
    return entry


def _native_on_grid(
    files: Sequence[Path],
    relpaths: Sequence[str],
    spec: TaskSpec,
    registration: RegistrationSettings | None = None,
) -> tuple[NativeSeries, TemplateResult]:
    """Files of one series → native volume → the task's template grid.

    The series' (0054,0016) radiopharmaceutical must fit the task
    (:func:`~fedmi.client.ingest.series.check_tracer`) before it is resampled.

    Raises
    ------
    IngestError
        Whatever makes the series unusable.
    """
    native = load_series(files, relpaths)
    name = f"{native.modality} series {native.series_uid} ({relpaths[0]})"
    check_tracer(native, spec, name)
    result = to_template(native.volume, native.affine_ras, spec, name=name, settings=registration)
    return native, result


def _rejected_entry(task: str, reason: str, message: str) -> dict:
    """The cache entry of a series that was read and rejected."""
    return {"status": "rejected", "task": task, "reason": reason, "message": message}


def _accepted_entry(
    task: str, key: str, native: NativeSeries, result: TemplateResult, rel: dict[str, str]
) -> dict:
    """The cache entry of an accepted series: its report row and the files it used.

    The row carries what the loader read from the header ((0020,000E) *Series Instance
    UID*, (0010,0020) *Patient ID*, (0008,0060) *Modality*, the (0054,0016) tracer,
    (0008,0070) *Manufacturer*, (0008,1090) *Manufacturer's Model Name*, (0054,1103)
    *Reconstruction Method*, the age from (0010,1010) *Patient's Age* and (0010,0040)
    *Patient's Sex*: private to the site, for the normative model), the voxel size, the
    SUV factor, the cached volume's path,
    notes and the template QC figures.

    Parameters
    ----------
    rel
        Absolute file path (as a string) → path relative to the site folder.
    """
    return {
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
            "age_years": native.age_years,
            "sex": native.sex,
            "cached_path": cache.volume_relpath(key),
            "notes": list(native.notes),
            "qc": _qc(result),
        },
    }


def _qc(result: TemplateResult) -> dict:
    """The report row's ``qc``: head shift, coverage, reference value and, after spatial
    normalisation, its figures (:class:`~fedmi.client.ingest.quality.Quality`), the
    template → scan transform (RAS mm) and the registration time."""
    qc: dict = {
        "head_shift_mm": [round(v, 2) for v in result.shift_mm],
        "brain_coverage": round(result.coverage, 4),
        "reference_value": result.reference_value,
        "flags": [],
    }
    if result.quality is not None and result.registration is not None:
        qc.update(result.quality.to_json())
        reg = result.registration
        qc["template_to_scan"] = [[round(float(v), 5) for v in row] for row in reg.matrix[:3]]
        qc["nonlinear"] = reg.warp is not None
        qc["registration_seconds"] = round(result.seconds, 3)
        qc["registration_iterations"] = reg.iterations
    return qc


def _reject(files: Sequence[FileRecord], uid: str | None, err: IngestError) -> dict:
    """A rejected row of the report: the files, the series and why."""
    return {
        "files": [r.relpath for r in files],
        "series_uid": uid,
        "reason": err.reason,
        "message": err.message,
    }


@dataclass
class _Plan:
    """What ingest does with each series of a site, decided from headers and the cache.

    Attributes
    ----------
    early
        Series UID → rejection found before any pixel is read (headers, labels).
    keys
        Series UID → cache key, for every series worth reading.
    outcome
        Series UID → ``(cache entry, from_cache)``; filled from the cache, then by processing.
    todo
        Series UID → ``(relative paths, cache key)`` of the series still to process.
    """

    early: dict[str, IngestError] = field(default_factory=dict)
    keys: dict[str, str] = field(default_factory=dict)
    outcome: dict[str, tuple[dict, bool]] = field(default_factory=dict)
    todo: dict[str, tuple[list[str], str]] = field(default_factory=dict)


def ingest_site(
    site_dir: Path,
    task: str,
    state_dir: Path,
    workers: int = 1,
    registration: RegistrationSettings | None = None,
) -> IngestReport:
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
    registration
        Spatial normalisation settings (default: affine,
        :class:`~fedmi.client.ingest.registration.RegistrationSettings`); they and the
        task's template are part of every cache key.

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
    config = _site_config(site_dir, spec)
    cache.cache_dir(state_dir)
    records, n_read = discover(site_dir, cache.load_index(state_dir))
    cache.save_index(state_dir, records)
    labels = read_labels(site_dir / "labels.csv", spec)
    groups = group_series(records)
    log.info("found %d files in %d series (%d headers read)", len(records), len(groups), n_read)

    file_rows = _file_rows(records)
    registration = registration or RegistrationSettings()
    plan = _plan(groups, labels, spec, state_dir, normalisation_key(spec, registration))
    _process(plan, spec.name, site_dir, state_dir, workers, len(groups), registration)
    accepted, series_rows = _series_rows(groups, plan, labels, spec)
    # series of patients without a label: ingested, kept apart (never trained on)
    unlabelled = [r for r in accepted if r["label"] is None]
    accepted = [r for r in accepted if r["label"] is not None]
    rejected = [*file_rows, *series_rows]
    cache.prune(state_dir, spec.name, set(plan.keys.values()))
    report = IngestReport(
        task=spec.name,
        site_id=config.site_id,
        pipeline_version=PIPELINE_VERSION,
        summary=_summary(records, n_read, groups, accepted, rejected, unlabelled),
        accepted=accepted,
        rejected=rejected,
        unlabelled=unlabelled,
    )
    report.write(state_dir)
    log.info(
        "ingest done: %d series accepted, %d without a label, %d rejected, %d files not used",
        report.summary["series_accepted"],
        report.summary["series_unlabelled"],
        report.summary["series_rejected"],
        report.summary["files_rejected"],
    )
    return report


def _site_config(site_dir: Path, spec: TaskSpec) -> SiteConfig:
    """The site's site.toml, checked against the folder layout and the task.

    Raises
    ------
    SiteConfigError
        No ``dicom/`` folder, or a site.toml whose ``task`` is not ``spec.name``.
    """
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
    return config


def normalisation_key(spec: TaskSpec, settings: RegistrationSettings) -> str:
    """What the spatial normalisation depends on, as text for the cache key: the template
    recipe, the registration settings and the QC thresholds."""
    return f"{template_recipe(spec)} | {settings.fingerprint()} | {QcThresholds()!r}"


def _plan(
    groups: dict[str, list[FileRecord]],
    labels: Labels,
    spec: TaskSpec,
    state_dir: Path,
    normalisation: str = "",
) -> _Plan:
    """Reject series on their headers and labels, take the rest from the cache or queue them.

    Uses the discovery headers ((0008,0060) *Modality*, (0008,0016) *SOP Class UID*,
    (0008,0008) *Image Type*, (0010,0020) *Patient ID*; see
    :func:`~fedmi.client.ingest.series.precheck` and
    :func:`~fedmi.client.ingest.labels.label_problem`).
    """
    plan = _Plan()
    for uid, recs in groups.items():
        err = precheck(recs, spec)
        if err is None and not is_unlabelled(recs, labels):
            err = label_problem(uid, recs, labels, spec.name)
        if err is not None:
            plan.early[uid] = err
            continue
        key = cache.series_key(uid, recs, spec.name, normalisation)
        plan.keys[uid] = key
        entry = cache.load_entry(state_dir, key)
        if entry is not None:
            plan.outcome[uid] = (entry, True)
        else:
            plan.todo[uid] = ([r.relpath for r in recs], key)
    return plan


def _process(
    plan: _Plan,
    task: str,
    site_dir: Path,
    state_dir: Path,
    workers: int,
    n_total: int,
    registration: RegistrationSettings | None = None,
) -> None:
    """Process the plan's queued series into ``plan.outcome``, logging progress."""
    done = len(plan.early) + len(plan.outcome)
    if done:
        log.info("ingested %d/%d series (%d from cache)", done, n_total, len(plan.outcome))
    for uid, entry in _run(task, site_dir, state_dir, plan.todo, workers, registration):
        plan.outcome[uid] = (entry, False)
        done += 1
        step = max(1, n_total // 10)
        if done % step == 0 or done == n_total or entry.get("reason"):
            log.info("ingested %d/%d series (%s)", done, n_total, entry.get("reason", "accepted"))


def _file_rows(records: Sequence[FileRecord]) -> list[dict]:
    """Rejected rows of the files discovery could not use (not DICOM, DICOMDIR, ...)."""
    return [
        _reject([r], r.series_uid or None, IngestError(r.reason, r.message or r.reason))
        for r in records
        if r.reason is not None
    ]


def _series_rows(
    groups: dict[str, list[FileRecord]],
    plan: _Plan,
    labels: Labels,
    spec: TaskSpec,
) -> tuple[list[dict], list[dict]]:
    """The report's accepted rows and the rejected rows of series.

    Series are taken in discovery order; an accepted series with exact copies is followed
    by a ``duplicate_instance`` row. Accepted rows get the label of their (0010,0020)
    *Patient ID*, and the note ``patient_has_several_series`` when that patient has more
    than one accepted series.
    """
    accepted: list[dict] = []
    rejected: list[dict] = []
    for uid, recs in groups.items():
        if uid in plan.early:
            rejected.append(_reject(recs, uid, plan.early[uid]))
            continue
        entry, from_cache = plan.outcome[uid]
        if entry["status"] != "accepted":
            rejected.append(_reject(recs, uid, IngestError(entry["reason"], entry["message"])))
            continue
        row = dict(entry["row"])
        label = labels.values.get(recs[0].patient_id)  # None: unlabelled (see _plan)
        row.update(
            label=label,
            class_index=None if label is None else spec.class_index(label),
            n_files=len(entry["used"]),
            from_cache=from_cache,
        )
        accepted.append(row)
        if entry["duplicates"]:
            rejected.append(_duplicates_row(uid, entry["duplicates"]))
    patients = Counter(row["patient_id"] for row in accepted)
    for row in accepted:
        if patients[row["patient_id"]] > 1:
            row["notes"] = [*row["notes"], "patient_has_several_series"]
    return accepted, rejected


def _duplicates_row(uid: str, duplicates: list[str]) -> dict:
    """The ``duplicate_instance`` row for exact copies (same (0008,0018) *SOP Instance UID*
    and pixels) of images of an accepted series."""
    return {
        "files": list(duplicates),
        "series_uid": uid,
        "reason": "duplicate_instance",
        "message": (
            f"{', '.join(duplicates)}: exact copies of images already read "
            f"for series {uid} (same (0008,0018) SOP Instance UID and pixels); "
            "ignored, the series itself was ingested. Delete the copies."
        ),
    }


def _summary(
    records: Sequence[FileRecord],
    n_read: int,
    groups: dict[str, list[FileRecord]],
    accepted: list[dict],
    rejected: list[dict],
    unlabelled: list[dict] = (),
) -> dict:
    """The report's ``summary``: file and series counts and rejected rows per reason.

    ``series_accepted`` counts labelled series; ``series_unlabelled`` those ingested
    without a label; ``files_accepted`` the files of both.
    """
    rejected_series = {r["series_uid"] for r in rejected if r["reason"] != "duplicate_instance"}
    return {
        "files_found": len(records),
        "files_read": n_read,
        "files_accepted": sum(r["n_files"] for r in [*accepted, *unlabelled]),
        "files_rejected": sum(len(r["files"]) for r in rejected),
        "series_found": len(groups),
        "series_accepted": len(accepted),
        "series_unlabelled": len(unlabelled),
        "series_rejected": len(rejected_series & set(groups)),
        "series_from_cache": sum(1 for r in accepted if r["from_cache"]),
        "series_flagged": sum(1 for r in accepted if r["qc"].get("flags")),
        "by_flag": dict(
            sorted(Counter(f for r in accepted for f in r["qc"].get("flags", [])).items())
        ),
        "by_reason": dict(sorted(Counter(r["reason"] for r in rejected).items())),
    }


def _run(
    task: str,
    site_dir: Path,
    state_dir: Path,
    todo: dict[str, tuple[list[str], str]],
    workers: int,
    registration: RegistrationSettings | None = None,
) -> Iterator[tuple[str, dict]]:
    """Yield ``(series_uid, entry)`` for every series to process, serially or in processes."""
    if not todo:
        return
    if workers <= 1 or len(todo) == 1:
        for uid, (rels, key) in todo.items():
            yield uid, process_series(task, str(site_dir), rels, str(state_dir), key, registration)
        return
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=min(workers, len(todo)), mp_context=ctx) as pool:
        futures = {
            pool.submit(
                process_series, task, str(site_dir), rels, str(state_dir), key, registration
            ): uid
            for uid, (rels, key) in todo.items()
        }
        for fut in as_completed(futures):
            yield futures[fut], fut.result()
