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
``SeedSequence([seed, site, subject])``; DICOM UIDs come from
``generate_uid(entropy_srcs=["fedmi-sim", seed, task, site, subject, ...])``. Subjects are
rendered in worker processes (fork) when ``workers > 1``; the output does not depend on
the number of workers.
"""

from __future__ import annotations

import csv
import datetime as _dt
import json
import logging
import multiprocessing as mp
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fedmi.shared.tasks import get_task
from fedmi.simulations import phantom
from fedmi.simulations.dicom import (
    NmMeta,
    PetMeta,
    nm_sop_instance_uid,
    write_nm_series,
    write_pet_series,
)
from fedmi.simulations.sites import PRESETS, SITE_STREAM, SiteProfile, make_sites

logger = logging.getLogger(__name__)

FORMAT_VERSION = 1

_GIVEN_F = (
    "Anna",
    "Maria",
    "Elena",
    "Sofia",
    "Ingrid",
    "Claire",
    "Joan",
    "Ruth",
    "Aiko",
    "Fatima",
    "Grace",
    "Helen",
    "Irene",
    "Lucia",
    "Marta",
    "Nora",
)
_GIVEN_M = (
    "John",
    "Peter",
    "Luca",
    "Karl",
    "Omar",
    "David",
    "Henri",
    "Jorge",
    "Kenji",
    "Liam",
    "Marco",
    "Nils",
    "Paul",
    "Samuel",
    "Tomas",
    "Victor",
)
_FAMILY = (
    "Smith",
    "Novak",
    "Rossi",
    "Muller",
    "Garcia",
    "Dubois",
    "Jansen",
    "Kowalski",
    "Silva",
    "Tanaka",
    "Okafor",
    "Larsen",
    "Moreau",
    "Bianchi",
    "Fischer",
    "Walsh",
    "Haddad",
    "Petrov",
    "Lindqvist",
    "Costa",
)
_PHYSICIANS = ("Brown^Alice^^Dr", "Keller^Max^^Dr", "Ferri^Paola^^Dr", "Ahmed^Sara^^Dr")

_ALLOWED_OVERRIDES = {"n_sites", "sites", "subjects_scale", "workers"}


@dataclass
class _SiteJob:
    site: SiteProfile
    basis: phantom.Basis
    seed: int
    task: str
    root: Path
    ids: list[str]
    accessions: list[str]
    folders: list[str]


_JOB: _SiteJob | None = None  # inherited by forked workers


def _subject_rng(seed: int, site: int, subject: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([seed, site, subject]))


def _site_identifiers(site: SiteProfile, seed: int) -> tuple[list[str], list[str], list[str]]:
    """Unique PatientIDs, accession numbers and study folder names of a site."""
    rng = np.random.default_rng(np.random.SeedSequence([seed, SITE_STREAM, site.index]))
    n = site.n_subjects
    if site.id_style == "prefix":
        ids = [f"{site.id_prefix}-{j + 1:04d}" for j in range(n)]
    else:
        digits = 8 if site.id_style == "mrn" else 7
        pool = rng.choice(10**digits - 10 ** (digits - 1), size=n, replace=False) + 10 ** (
            digits - 1
        )
        ids = [str(int(v)) if site.id_style == "mrn" else f"H{int(v)}" for v in pool]
    acc = rng.choice(9 * 10**9, size=n, replace=False) + 10**9
    accessions = [str(int(a)) for a in acc]
    folders = []
    for j in range(n):
        if site.folder_style == "patient":
            folders.append(f"{ids[j]}/{accessions[j]}")
        elif site.folder_style == "opaque":
            folders.append(f"{int(rng.integers(16**8)):08X}/{int(rng.integers(16**8)):08X}")
        else:
            folders.append(f"study_{j + 1:04d}")
    return ids, accessions, folders


def _birth_date(scan: _dt.datetime, age: float, rng: np.random.Generator) -> str:
    days = int(round(age * 365.25)) + int(rng.integers(0, 365))
    return (scan.date() - _dt.timedelta(days=days)).strftime("%Y%m%d")


def _render_subject(j: int) -> dict[str, object]:
    """Draw, render and write subject ``j`` of the current site; returns its truth row."""
    job = _JOB
    assert job is not None
    site = job.site
    rng = _subject_rng(job.seed, site.index, j)
    truth = phantom.draw_subject(
        job.task,
        rng,
        group_probs=site.group_probs,
        label_noise=site.label_noise,
        age_shift=site.age_shift,
        female_frac=site.female_frac,
        tracer=site.tracer if job.task == "amyloid" else None,
        max_rotation_deg=site.max_rotation_deg,
        max_shift_mm=site.max_shift_mm,
    )
    coefs = phantom.subject_coefficients(truth, job.basis)
    if not site.is_pet:
        # Camera/correction-dependent loss of striatal contrast (NC < AC < ACSC).
        for name in phantom.DAT_SUBREGIONS:
            coefs[job.basis.index(name)] *= site.sbr_recovery
    vol = job.basis.combine(coefs)
    shape = (site.matrix, site.matrix, site.n_slices)
    spacing = (site.pixel_mm, site.pixel_mm, site.slice_mm)
    affine = phantom.scanner_affine(shape, spacing, site.table_offset_lps, site.slice_direction)
    xf = phantom.mni_to_scanner_lps(
        truth.scale, truth.rotation_deg, truth.shift_mm, site.table_offset_lps
    )
    img = phantom.render_on_scanner(vol, job.basis.grid, xf, shape, affine)

    day = site.first_study_day + int(rng.integers(0, 330))
    inj_min = int(rng.integers(7 * 60 + 30, 14 * 60 + 30))
    injection = _dt.datetime(2024, 3, 1) + _dt.timedelta(
        days=day, minutes=inj_min, seconds=int(rng.integers(60))
    )
    uptake_s = float(round(rng.uniform(*site.uptake_min) * 60.0))
    dose = round(site.dose_mbq * float(np.clip(rng.normal(1.0, site.dose_rel_sd), 0.8, 1.2)), 1)
    given = _GIVEN_F if truth.sex == "F" else _GIVEN_M
    name = f"{_FAMILY[int(rng.integers(len(_FAMILY)))]}^{given[int(rng.integers(len(given)))]}"
    scan_dt = injection + _dt.timedelta(seconds=uptake_s)
    common = dict(
        patient_id=job.ids[j],
        patient_name=name,
        patient_birth_date=_birth_date(scan_dt, truth.age, rng),
        patient_sex=truth.sex,
        patient_age_years=int(truth.age),
        patient_weight_kg=truth.weight_kg,
        patient_size_m=truth.height_m,
        tracer=site.tracer,
        injected_dose_mbq=dose,
        injection_datetime=injection,
        uptake_s=uptake_s,
        frame_duration_s=site.frame_duration_s,
        series_number=site.series_number,
        accession_number=job.accessions[j],
        study_id=str(int(rng.integers(1, 99999))),
        referring_physician=_PHYSICIANS[int(rng.integers(len(_PHYSICIANS)))],
        institution_name=site.institution,
        station_name=site.station_name,
        manufacturer=site.manufacturer,
        model_name=site.model,
        software_versions=site.software_version,
        device_serial_number=site.device_serial,
        convolution_kernel=site.convolution_kernel,
        reconstruction_diameter_mm=round(site.matrix * site.pixel_mm, 2),
        uid_entropy=("fedmi-sim", str(job.seed), job.task, site.site_id, str(j)),
    )
    study_dir = job.root / site.site_id / "dicom" / job.folders[j]
    if site.is_pet:
        img = phantom.add_pet_noise(img, site.noise_cov, rng)
        meta = PetMeta(
            **common,
            study_description=f"PET BRAIN {site.tracer.upper()}",
            series_description="Brain 3D AC" if site.scanner_class != "pet-mr" else "Brain MRAC",
            calibration_factor=site.calibration,
            reconstruction_method=site.reconstruction_method,
            attenuation_correction_method="MRAC" if site.scanner_class == "pet-mr" else "CTAC",
            file_naming=site.file_naming,
            gems_private_scan_datetime=site.manufacturer.startswith("GE"),
        )
        series_dir = study_dir / f"PT_{site.series_number:04d}"
        files = write_pet_series(img, affine, meta, series_dir, rng=rng)
        rel = series_dir.relative_to(job.root / site.site_id)
    else:
        counts = phantom.spect_counts(img, site.total_counts, rng)
        meta = NmMeta(
            **common,
            study_description="DAT SPECT",
            series_description=f"DaTSCAN {site.correction}",
            reconstruction_method=site.reconstruction_method,
            corrected_image={
                "NC": ("DECY",),
                "AC": ("DECY", "ATTN"),
                "ACSC": ("DECY", "ATTN", "SCAT"),
            }[site.correction],
            units_cnts=site.manufacturer.startswith("SIEMENS"),
        )
        name_style = site.file_naming
        fname = {
            "instance": "NM000001.dcm",
            "im": f"IM{int(rng.integers(10**6)):06d}",
            "slice": "recon.dcm",
            "uid": f"{nm_sop_instance_uid(meta)}.dcm",
        }[name_style]
        path = study_dir / fname
        files = [write_nm_series(counts, affine, meta, path)]
        rel = study_dir.relative_to(job.root / site.site_id)
    row: dict[str, object] = {"PatientID": job.ids[j], **truth.row()}
    row.pop("task")
    row.update(
        dose_mbq=dose,
        uptake_s=uptake_s,
        scan_datetime=scan_dt.strftime("%Y-%m-%dT%H:%M:%S"),
        series_dir=str(rel),
        n_files=len(files),
        n_bytes=sum(f.stat().st_size for f in files),
    )
    return row


def _toml_value(v: object) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int | float):
        return repr(v)
    if isinstance(v, list | tuple):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    return json.dumps(str(v))


def write_site_toml(path: Path, site: SiteProfile) -> None:
    """Write ``site.toml``: ``[site]`` (read by the pipeline) and ``[truth]`` (never read)."""
    lines = [
        "# Synthetic site written by fedmi-sim. The pipeline reads [site] only;",
        "# [truth] is generator truth for evaluation and must never be used by fedmi.",
        "[site]",
        f"site-id = {_toml_value(site.site_id)}",
        f"role = {_toml_value(site.role)}",
        f"task = {_toml_value(site.task)}",
        "",
        "# The site's own differential-privacy settings (read by client/privacy.py).",
        "# DP-SGD is on with the defaults (epsilon 8, delta 1e-5) unless set here, e.g.",
        '# dp = "off" or epsilon = 3.0; a simulation run may set defaults for every site',
        "# (sim-default-dp, sim-default-epsilon) that a value here overrides.",
        "[privacy]",
        "",
        "[truth]",
    ]
    truth = site.truth()
    tables = {k: v for k, v in truth.items() if isinstance(v, dict)}
    for k, v in truth.items():
        if not isinstance(v, dict):
            lines.append(f"{k.replace('_', '-')} = {_toml_value(v)}")
    for k, table in tables.items():
        lines += ["", f"[truth.{k.replace('_', '-')}]"]
        lines += [f"{_toml_value(str(kk))} = {_toml_value(vv)}" for kk, vv in table.items()]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def _write_csv(path: Path, rows: list[dict[str, object]], columns: list[str] | None = None) -> None:
    if columns is None:  # union of keys, minus columns that are empty for every row
        columns = []
        for r in rows:
            columns += [
                c for c in r if c not in columns and any(x.get(c) is not None for x in rows)
            ]
    with path.open("w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
        w.writeheader()
        for r in rows:
            w.writerow({c: ("" if r.get(c) is None else r.get(c)) for c in columns})


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
        ``min(2, cpu count)``; the output does not depend on it).

    Returns
    -------
    dict
        The manifest also written to ``out/federation.json``.
    """
    global _JOB
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
    t0 = time.perf_counter()
    sites = make_sites(task, preset, seed, None if n_sites is None else int(n_sites), scale)
    grid = PRESETS[preset].working_grid
    base = phantom.build_basis(task, grid)
    logger.info(
        "generating %s federation: preset %s, %d sites, %d subjects",
        task,
        preset,
        len(sites),
        sum(s.n_subjects for s in sites),
    )
    (out / "_truth").mkdir(parents=True, exist_ok=True)
    manifest_sites = []
    for site in sites:
        ts = time.perf_counter()
        site_dir = out / site.site_id
        (site_dir / "dicom").mkdir(parents=True, exist_ok=True)
        ids, acc, folders = _site_identifiers(site, seed)
        _JOB = _SiteJob(site, base.blurred(site.fwhm_mm), seed, task, out, ids, acc, folders)
        if workers > 1 and site.n_subjects > 4 and "fork" in mp.get_all_start_methods():
            with mp.get_context("fork").Pool(workers) as pool:
                rows = pool.map(_render_subject, range(site.n_subjects), chunksize=2)
        else:
            rows = [_render_subject(j) for j in range(site.n_subjects)]
        _JOB = None
        _write_csv(
            site_dir / "labels.csv",
            [{"PatientID": r["PatientID"], "label": r["label"]} for r in rows],
        )
        _write_csv(out / "_truth" / f"{site.site_id}.csv", rows)
        write_site_toml(site_dir / "site.toml", site)
        counts: dict[str, int] = {}
        for r in rows:
            counts[str(r["label"])] = counts.get(str(r["label"]), 0) + 1
        manifest_sites.append(
            {
                "site_id": site.site_id,
                "role": site.role,
                "n_subjects": site.n_subjects,
                "labels": dict(sorted(counts.items())),
                "tracer": site.tracer,
                "n_files": int(sum(int(r["n_files"]) for r in rows)),
                "n_bytes": int(sum(int(r["n_bytes"]) for r in rows)),
            }
        )
        logger.info(
            "site %d/%d (%s, %s): %d subjects in %.1f s",
            site.index + 1,
            len(sites),
            site.role,
            site.site_id,
            site.n_subjects,
            time.perf_counter() - ts,
        )
    manifest = {
        "generator": "fedmi-sim",
        "format_version": FORMAT_VERSION,
        "task": task,
        "modality": spec.modality,
        "preset": preset,
        "seed": seed,
        "options": {"n_sites": len(sites), "subjects_scale": scale},
        "working_grid": {
            "shape": list(grid.shape),
            "spacing": list(grid.spacing),
            "origin": list(grid.origin),
        },
        "n_subjects": sum(s.n_subjects for s in sites),
        "sites": manifest_sites,
    }
    (out / "federation.json").write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    logger.info(
        "federation done: %d subjects in %.1f s", manifest["n_subjects"], time.perf_counter() - t0
    )
    return manifest
