"""Write a synthetic multi-site federation to disk (the ``fedmi-sim generate`` backend).

Layout (the contract with ingest, see notes/CONTEXT.md)::

    ROOT/federation.json            manifest: task, preset, seed, sites and roles
    ROOT/_truth/<site-id>.csv       per-subject generator truth (never read by the pipeline)
    ROOT/<site-id>/site.toml        [site] site-id, role, task; [truth] scanner & protocol
    ROOT/<site-id>/labels.csv       PatientID,label
    ROOT/<site-id>/dicom/...        one folder per study; PET one file per slice, SPECT one
                                    NM multi-frame file

Everything is deterministic from ``seed``: site profiles use
``SeedSequence([seed, 1_000_003, site])``, site-level IDs
``SeedSequence([seed, 1_000_005, site])`` and each subject
``SeedSequence([seed, site, subject])``; the memory-clinic cohort appended to each fdg-ad
site (ageing normals, bvFTD, DLB: :data:`fedmi.simulations.sites.presets.MEMORY_CLINIC`,
effect sizes in ``docs/phantom-disorders.md``) uses ``SeedSequence([seed, 1_000_009,
site, k])`` and identifiers from ``SeedSequence([seed, 1_000_007, site])``, so it leaves
every other subject unchanged; the unlabelled archive after it (``unlabelled_archive``)
uses ``SeedSequence([seed, 1_000_013, site, k])`` and identifiers from
``SeedSequence([seed, 1_000_011, site])``, so it leaves every labelled file unchanged;
DICOM UIDs come from ``generate_uid(entropy_srcs=["fedmi-sim", seed, task, site, subject,
...])`` (``..., site, "archive", k, ...`` for the archive). Subjects are
rendered in worker processes (fork) when ``workers > 1``; the output does not depend on
the number of workers.

This module orchestrates: the sites come from :mod:`fedmi.simulations.sites`, each
subject is drawn, rendered and written by :mod:`fedmi.simulations.subjects` (with
:mod:`fedmi.simulations.phantom` and :mod:`fedmi.simulations.dicom`), identifiers from
:mod:`fedmi.simulations.identities` and the text files by
:mod:`fedmi.simulations.site_files`.
"""

from __future__ import annotations

import json
import logging
import multiprocessing as mp
import os
import time
from pathlib import Path

from fedmi.shared.grid import Grid
from fedmi.shared.tasks import TaskSpec, get_task
from fedmi.simulations.identities import (
    ARCHIVE_ID_STREAM,
    cohort_identifiers,
    site_identifiers,
)
from fedmi.simulations.phantom.basis import Basis
from fedmi.simulations.phantom.poses import DEFAULT_POSES
from fedmi.simulations.phantom.tasks import build_basis
from fedmi.simulations.site_files import write_csv, write_site_toml
from fedmi.simulations.sites.presets import (
    PRESETS,
    archive_size,
    check_archive_factor,
    memory_clinic_cohort,
)
from fedmi.simulations.sites.profiles import SiteProfile, make_sites
from fedmi.simulations.subjects import SiteJob, write_subject

logger = logging.getLogger(__name__)

FORMAT_VERSION = 1

_ALLOWED_OVERRIDES = {
    "n_sites",
    "sites",
    "subjects_scale",
    "workers",
    "poses",
    "memory_clinic",
    "unlabelled_archive",
}

_JOB: SiteJob | None = None  # inherited by forked workers


def _render_subject(j: int) -> dict[str, object]:
    """Worker entry point: subject ``j`` of the site in :data:`_JOB`."""
    assert _JOB is not None
    return write_subject(_JOB, j)


def generate_federation(
    out: Path,
    task: str = "fdg-ad",
    preset: str = "tiny",
    seed: int = 0,
    **overrides: object,
) -> dict:
    """Generate a synthetic federation under ``out`` and return its manifest.

    Parameters
    ----------
    out
        Root folder; must not exist or be empty.
    task
        ``fdg-ad``, ``amyloid`` or ``dat-pd``.
    preset
        ``tiny`` (3 sites × 8–12 subjects, small matrices; for tests) or ``default``
        (5 sites, ~300–450 subjects).
    seed
        Everything (images, labels, UIDs, file names) is a function of the seed.
    **overrides
        ``n_sites`` (or ``sites``): total sites including the holdout; ``subjects_scale``:
        multiplies site sizes; ``workers``: processes used to render subjects (default
        ``min(2, cpu count)``; the output does not depend on it); ``poses``: head poses,
        sizes, cut fields of view and atrophy (:data:`fedmi.simulations.phantom.poses.POSES`,
        default ``realistic``; ``legacy`` gives the poses of earlier versions);
        ``memory_clinic``: append the memory-clinic cohort to each site (default ``True``;
        fdg-ad only: ageing normals 50–90 years labelled ``CN``, and bvFTD/DLB scans,
        labelled ``FTD``/``DLB`` at holdouts and unlabelled at the first training site;
        :data:`fedmi.simulations.sites.presets.MEMORY_CLINIC`);
        ``unlabelled_archive``: every site (holdouts included) gets
        ``round(factor × its labelled scans)`` more scans of its own population, scanner
        and protocol whose patients are not in labels.csv (a finite number ≥ 0; default
        the preset's :attr:`~fedmi.simulations.sites.presets.Preset.unlabelled_archive`,
        0 for every preset: no archive). The other files do not depend on it.

    Returns
    -------
    dict
        The manifest also written to ``out/federation.json``. A site's ``n_subjects``
        counts its labels.csv rows (cohort included); ``n_unlabelled`` its scans that are
        not in labels.csv (unlabelled cohort and archive); ``n_archive`` its archive scans;
        ``memory_clinic`` its cohort scans per group.

    Raises
    ------
    ValueError
        An unknown option or a bad value (the message names it).
    FileExistsError
        ``out`` is not empty.
    """
    spec, out, n_sites, scale, workers = _arguments(out, task, preset, overrides)
    factor = check_archive_factor(
        overrides.get("unlabelled_archive", PRESETS[preset].unlabelled_archive)
    )
    t0 = time.perf_counter()
    poses = str(overrides.get("poses") or DEFAULT_POSES)
    mc = overrides.get("memory_clinic", True)
    if not isinstance(mc, bool):
        raise ValueError(f"memory_clinic must be True or False, not {mc!r}")
    sites = make_sites(task, preset, seed, n_sites, scale, poses=poses)
    first_train = next((s.index for s in sites if s.role != "holdout"), None)
    cohorts = {
        s.index: memory_clinic_cohort(task, preset, s.role, s.index == first_train) if mc else []
        for s in sites
    }
    archives = {
        s.index: archive_size(factor, s.n_subjects + sum(lab for _, lab in cohorts[s.index]))
        for s in sites
    }
    grid = PRESETS[preset].working_grid
    base = build_basis(task, grid)
    n_scans = sum(s.n_subjects + len(cohorts[s.index]) + archives[s.index] for s in sites)
    logger.info(
        "generating %s federation: preset %s, %d sites, %d subjects",
        task,
        preset,
        len(sites),
        n_scans,
    )
    (out / "_truth").mkdir(parents=True, exist_ok=True)
    manifest_sites = [
        _generate_site(
            site,
            len(sites),
            base,
            seed,
            task,
            out,
            workers,
            cohorts[site.index],
            archives[site.index],
        )
        for site in sites
    ]
    n_subjects = sum(int(s["n_subjects"]) for s in manifest_sites)
    manifest = {
        "generator": "fedmi-sim",
        "format_version": FORMAT_VERSION,
        "task": task,
        "modality": spec.modality,
        "preset": preset,
        "seed": seed,
        "options": {
            "n_sites": len(sites),
            "subjects_scale": scale,
            "poses": poses,
            "memory_clinic": mc,
            "unlabelled_archive": factor,
        },
        "working_grid": _grid_entry(grid),
        "n_subjects": n_subjects,
        "n_unlabelled": sum(int(s["n_unlabelled"]) for s in manifest_sites),
        "n_archive": sum(int(s["n_archive"]) for s in manifest_sites),
        "sites": manifest_sites,
    }
    (out / "federation.json").write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    logger.info(
        "federation done: %d subjects in %.1f s", manifest["n_subjects"], time.perf_counter() - t0
    )
    return manifest


def _grid_entry(grid: Grid) -> dict[str, list]:
    """The working grid as the manifest records it."""
    return {"shape": list(grid.shape), "spacing": list(grid.spacing), "origin": list(grid.origin)}


def _arguments(
    out: Path, task: str, preset: str, overrides: dict[str, object]
) -> tuple[TaskSpec, Path, int | None, float, int]:
    """Check the arguments (errors name the bad one); returns the task, ``out`` as a Path,
    ``n_sites`` (or None), ``subjects_scale`` and ``workers``."""
    unknown = set(overrides) - _ALLOWED_OVERRIDES
    if unknown:
        raise ValueError(
            f"unknown options {sorted(unknown)}; allowed: {sorted(_ALLOWED_OVERRIDES)}"
        )
    spec = get_task(task)
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}")
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise FileExistsError(f"{out} is not empty: choose a new --out folder or empty this one")
    n_sites = overrides.get("n_sites", overrides.get("sites"))
    scale = float(overrides.get("subjects_scale", 1.0) or 1.0)
    workers = int(overrides.get("workers") or min(2, os.cpu_count() or 1))
    return spec, out, None if n_sites is None else int(n_sites), scale, workers


def _generate_site(
    site: SiteProfile,
    n_sites: int,
    base: Basis,
    seed: int,
    task: str,
    out: Path,
    workers: int,
    cohort: list[tuple[str, bool]] | None = None,
    n_archive: int = 0,
) -> dict[str, object]:
    """Write every subject (the site's own, its memory-clinic ``cohort``, then its
    ``n_archive`` unlabelled archive scans), labels.csv (labelled subjects only), site.toml
    and the truth CSV of ``site``; returns its manifest entry."""
    global _JOB
    ts = time.perf_counter()
    cohort = list(cohort or [])
    site_dir = out / site.site_id
    (site_dir / "dicom").mkdir(parents=True, exist_ok=True)
    ids, acc, folders = site_identifiers(site, seed)
    if cohort:
        more = cohort_identifiers(site, seed, len(cohort), ids, acc)
        ids, acc, folders = ids + more[0], acc + more[1], folders + more[2]
    if n_archive:
        more = cohort_identifiers(site, seed, n_archive, ids, acc, stream=ARCHIVE_ID_STREAM)
        ids, acc, folders = ids + more[0], acc + more[1], folders + more[2]
    _JOB = SiteJob(
        site, base.blurred(site.fwhm_mm), seed, task, out, ids, acc, folders, cohort, n_archive
    )
    n_total = _JOB.n_total
    if workers > 1 and n_total > 4 and "fork" in mp.get_all_start_methods():
        with mp.get_context("fork").Pool(workers) as pool:
            rows = pool.map(_render_subject, range(n_total), chunksize=2)
    else:
        rows = [_render_subject(j) for j in range(n_total)]
    _JOB = None
    labelled = [r for r in rows if r["labelled"]]
    write_csv(
        site_dir / "labels.csv",
        [{"PatientID": r["PatientID"], "label": r["label"]} for r in labelled],
    )
    write_csv(out / "_truth" / f"{site.site_id}.csv", rows)
    write_site_toml(site_dir / "site.toml", site)
    counts: dict[str, int] = {}
    for r in labelled:
        counts[str(r["label"])] = counts.get(str(r["label"]), 0) + 1
    mc: dict[str, int] = {}
    for group, _ in cohort:
        mc[group] = mc.get(group, 0) + 1
    logger.info(
        "site %d/%d (%s, %s): %d subjects in %.1f s",
        site.index + 1,
        n_sites,
        site.role,
        site.site_id,
        n_total,
        time.perf_counter() - ts,
    )
    return {
        "site_id": site.site_id,
        "role": site.role,
        "n_subjects": len(labelled),
        "n_unlabelled": len(rows) - len(labelled),
        "n_archive": n_archive,
        "memory_clinic": mc,
        "labels": dict(sorted(counts.items())),
        "tracer": site.tracer,
        "n_files": int(sum(int(r["n_files"]) for r in rows)),
        "n_bytes": int(sum(int(r["n_bytes"]) for r in rows)),
    }
