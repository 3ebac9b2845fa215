"""The site's labelled dataset: ingested volumes in memory and a fixed site-local split;
and its unlabelled scans (:func:`load_unlabelled_volumes`), which never carry a label.

Volumes come from the ingest cache (:mod:`fedmi.client.ingest`); nothing here reads DICOM,
and nothing here ingests: ingest is an explicit step (``fedmi-site ingest``, or the
one-machine runner before a run). A site asked for its data before it has ingested gets
:class:`NotIngested`, which the ClientApp answers with the declared ``no-data`` status.
The train/test split is per patient, stratified by class and fixed by a seed, so every
method (local, pooled, federated) sees the same test scans at a site.

Nothing stale or damaged is trained on: every cached volume is checked against the checksum
ingest recorded (:func:`fedmi.client.ingest.cache.read_volume`), and the labels ingest copied
into its report are checked against labels.csv as it is now
(:func:`fedmi.client.ingest.labels.stale_labels`). Either problem raises :class:`NotIngested`
with the file and the fix (ingest again: it rebuilds damaged entries and applies the new
labels from the cache), which the ClientApp answers ``no-data``.

Series of patients that labels.csv does not list (a hospital's unlabelled archive) are
ingested into the report's ``unlabelled`` rows; :func:`load_unlabelled_volumes` reads them
as volumes alone, for label-free uses. They never enter :class:`SiteData` or its split.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from fedmi.client.ingest.cache import DamagedCache, read_volume
from fedmi.client.ingest.labels import read_labels, stale_labels
from fedmi.client.ingest.report import REPORT_FILE, IngestReport, load_accepted
from fedmi.client.site.settings import SiteSettings
from fedmi.shared.tasks import TaskSpec, get_task

log = logging.getLogger(__name__)

TEST_FRACTION = 0.3


@dataclass
class SiteData:
    """Labelled scans of one site, on the task grid.

    Attributes
    ----------
    x
        float32 tensor ``(n, 1, *grid.shape)``: reference-region-normalised volumes.
    y
        float32 tensor ``(n,)``: class index (1 = positive).
    patient_keys
        Opaque per-scan patient keys used only for the split (never sent).
    is_test
        bool array ``(n,)``: the site-local test split.
    """

    x: torch.Tensor
    y: torch.Tensor
    patient_keys: list[str]
    is_test: np.ndarray

    def __len__(self) -> int:
        return int(self.y.shape[0])

    def subset(self, which: str) -> tuple[torch.Tensor, torch.Tensor]:
        """``"train"``, ``"test"`` or ``"all"`` scans as ``(x, y)``."""
        if which == "all":
            return self.x, self.y
        mask = self.is_test if which == "test" else ~self.is_test
        idx = torch.from_numpy(np.flatnonzero(mask))
        return self.x[idx], self.y[idx]


def _unit_hash(seed: int, key: str) -> float:
    digest = hashlib.sha256(f"{seed}:{key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def split_patients(
    patient_keys: list[str], labels: np.ndarray, seed: int, test_fraction: float = TEST_FRACTION
) -> np.ndarray:
    """Per-patient, class-stratified test mask, fixed by ``seed``.

    Within each class the patients are ordered by a seeded hash and the first
    ``round(test_fraction × n)`` (at least one when the class has two or more
    patients) go to the test split. All scans of a patient stay on one side.
    """
    labels = np.asarray(labels)
    is_test = np.zeros(len(patient_keys), dtype=bool)
    for cls in np.unique(labels):
        patients = sorted({p for p, y in zip(patient_keys, labels, strict=True) if y == cls})
        n_test = int(round(test_fraction * len(patients)))
        if len(patients) >= 2:
            n_test = max(1, min(n_test, len(patients) - 1))
        else:
            n_test = 0
        chosen = set(sorted(patients, key=lambda p: _unit_hash(seed, p))[:n_test])
        for i, (p, y) in enumerate(zip(patient_keys, labels, strict=True)):
            if y == cls and p in chosen:
                is_test[i] = True
    return is_test


def load_site_data(rows: list[dict], task: TaskSpec, seed: int) -> SiteData:
    """Load accepted ingest rows (absolute ``cached_path``, ``label``) into memory.

    Rows whose label is not a training class of ``task`` (e.g. MCI) are skipped.

    Raises
    ------
    DamagedCache
        A volume is missing or fails the checksum ingest recorded (``volume_sha256``).
    """
    xs, ys, keys = [], [], []
    for row in rows:
        cls = task.class_index(str(row["label"]))
        if cls is None:
            continue
        vol = _volume_on_grid(row, task)
        if vol is None:
            continue
        xs.append(vol)
        ys.append(cls)
        keys.append(str(row["patient_id"]))
    x = _stack(xs, task)
    y = torch.tensor(ys, dtype=torch.float32)
    is_test = split_patients(keys, np.asarray(ys), seed)
    log.info(
        "site data: %d scans (%d train, %d test)",
        len(ys),
        int((~is_test).sum()),
        int(is_test.sum()),
    )
    return SiteData(x=x, y=y, patient_keys=keys, is_test=is_test)


def _volume_on_grid(row: dict, task: TaskSpec) -> np.ndarray | None:
    """The cached volume of an ingest ``row`` (checksum checked), or ``None`` (logged)
    when it is not on the task's grid.

    Raises
    ------
    DamagedCache
        The volume is missing or fails the checksum ingest recorded.
    """
    vol = read_volume(Path(row["cached_path"]), row.get("volume_sha256"))
    if vol.shape != task.grid.shape:
        log.warning(
            "skipping a cached volume with shape %s (expected %s)", vol.shape, task.grid.shape
        )
        return None
    return vol


def _stack(volumes: list[np.ndarray], task: TaskSpec) -> torch.Tensor:
    """float32 tensor ``(n, 1, *task.grid.shape)`` of ``volumes`` (``n`` may be 0)."""
    if volumes:
        return torch.from_numpy(np.stack(volumes)[:, None])
    return torch.zeros((0, 1, *task.grid.shape), dtype=torch.float32)


def load_unlabelled_volumes(state_dir: Path, task_name: str | None = None) -> torch.Tensor:
    """The site's unlabelled scans from its ingest cache, as volumes without labels.

    These are the report's ``unlabelled`` rows: series of patients that labels.csv did not
    list at the last ingest (a hospital's archive). They are never part of
    :class:`SiteData` or its train/test split; every role (training or holdout site) may
    load them, e.g. for label-free adaptation.

    Parameters
    ----------
    state_dir
        The folder holding ``ingest_report.json``: ``fedmi-site ingest --out`` itself, or
        ``STATE_DIR/ingest`` for ``--state-dir STATE_DIR`` (a site's
        :attr:`~fedmi.client.site.settings.SiteSettings.cache_dir`).
    task_name
        The task the volumes are for; ``None``: the task of the ingest report. A report of
        another task is refused.

    Returns
    -------
    torch.Tensor
        float32 ``(n, 1, *grid.shape)`` on the task's template grid, reference-region
        normalised like the labelled scans, in the report's order; ``n`` may be 0. Volumes
        not on the task grid are skipped (logged), as for the labelled scans.

    Raises
    ------
    NotIngested
        No readable ingest report in ``state_dir``, a report of another task, or a cached
        volume missing or damaged (the message names the fix: ingest again).
    """
    state_dir = Path(state_dir)
    fix = "run `fedmi-site ingest` for this state folder"
    if not (state_dir / REPORT_FILE).is_file():
        raise NotIngested(
            f"{state_dir} has no {REPORT_FILE}: {fix} first (a SuperNode's state folder "
            "keeps it in STATE_DIR/ingest)"
        )
    try:
        report = IngestReport.load(state_dir)
    except (OSError, ValueError, TypeError) as exc:
        raise NotIngested(
            f"{state_dir / REPORT_FILE} cannot be read ({type(exc).__name__}): {fix} again"
        ) from None
    if task_name is not None and task_name != report.task:
        raise NotIngested(
            f"{state_dir / REPORT_FILE} is an ingest for task {report.task!r}, not "
            f"{task_name!r}: {fix} with --task {task_name}"
        )
    task = get_task(report.task)
    root = state_dir.resolve()
    volumes = []
    for row in report.unlabelled:
        try:
            vol = _volume_on_grid({**row, "cached_path": root / row["cached_path"]}, task)
        except DamagedCache as exc:
            raise NotIngested(str(exc)) from None
        if vol is not None:
            volumes.append(vol)
    log.info("unlabelled site data: %d scans", len(volumes))
    return _stack(volumes, task)


def rows_fingerprint(state_dir: Path) -> str:
    """Cheap fingerprint of the ingest report, to know when in-memory data is stale."""
    report = state_dir / REPORT_FILE
    st = report.stat() if report.exists() else None
    return f"{report}:{st.st_mtime_ns if st else 0}:{st.st_size if st else 0}"


class NotIngested(RuntimeError):
    """The site has no ingest report for its cache folder: ``fedmi-site ingest`` first."""


_DATA_CACHE: dict[tuple[str, str, int, str, str], SiteData] = {}
_LOCK = threading.Lock()


def _labels_fingerprint(path: Path) -> str:
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:
        return "unreadable"


def _current_rows(site: SiteSettings, task: TaskSpec) -> list[dict]:
    """The report's accepted rows, refused when labels.csv changed since ingest.

    Raises
    ------
    NotIngested
        The report cannot be read, or labels.csv no longer gives some row's label.
    """
    try:
        rows = load_accepted(site.cache_dir)
    except (OSError, ValueError, TypeError) as exc:
        raise NotIngested(
            f"{site.cache_dir / REPORT_FILE} cannot be read ({type(exc).__name__}): run "
            "`fedmi-site ingest` for this state folder again"
        ) from None
    stale = stale_labels(rows, read_labels(site.data_dir / "labels.csv", task))
    if stale:
        raise NotIngested(
            f"{site.data_dir / 'labels.csv'} changed since the last ingest ({stale} ingested "
            "scan(s) would keep an old label): run `fedmi-site ingest` for this state folder "
            "again (it applies the new labels from the cache, without reading DICOM)"
        )
    return rows


def accepted_rows(site: SiteSettings, task_name: str) -> list[dict]:
    """Every accepted ingest row of the site (labelled or not), checked as :func:`site_data`.

    Rows carry an absolute ``cached_path``, ``label`` (``None``:
    unlabelled), ``age_years`` and ``sex`` (absent in caches older than ingest 2.1).

    Raises
    ------
    NotIngested
        No readable ingest report, or labels.csv changed since ingest.
    """
    if not (site.cache_dir / REPORT_FILE).is_file():
        raise NotIngested(
            f"site {site.site_id} has not ingested its DICOM for this state folder: run "
            "`fedmi-site ingest --site-dir SITE --task TASK --state-dir STATE` first"
        )
    return _current_rows(site, get_task(task_name))


def site_data(site: SiteSettings, task_name: str, split_seed: int) -> SiteData:
    """The site's labelled scans for ``task_name`` with the split of ``split_seed``.

    Read from the site's ingest cache and kept in memory until the ingest report or
    labels.csv changes.

    Raises
    ------
    NotIngested
        When the cache folder has no readable ingest report (the site has not run
        ``fedmi-site ingest`` for its state folder), labels.csv changed since, or a cached
        volume is damaged.
    """
    if not (site.cache_dir / REPORT_FILE).is_file():
        raise NotIngested(
            f"site {site.site_id} has not ingested its DICOM for this state folder: run "
            "`fedmi-site ingest --site-dir SITE --task TASK --state-dir STATE` first"
        )
    task = get_task(task_name)
    labels = _labels_fingerprint(site.data_dir / "labels.csv")
    with _LOCK:
        key = (
            str(site.cache_dir),
            task_name,
            split_seed,
            rows_fingerprint(site.cache_dir),
            labels,
        )
        if key not in _DATA_CACHE:
            rows = _current_rows(site, task)
            try:
                _DATA_CACHE[key] = load_site_data(rows, task, split_seed)
            except DamagedCache as exc:
                raise NotIngested(str(exc)) from None
        return _DATA_CACHE[key]
