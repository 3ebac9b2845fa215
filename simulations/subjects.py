"""One subject of a site: its truth, its scan, its visit and its DICOM study on disk.

:func:`write_subject` is what the generator's worker processes run. Everything a subject
gets is drawn from its own generator ``SeedSequence([seed, site, subject])`` in a fixed
order: truth (:func:`fedmi.simulations.phantom.draw_subject`), visit (day, injection time,
uptake, dose, name), header (birth date, study ID, referring physician), then noise and
file names. Changing that order changes every generated file.

Subjects ``j >= site.n_subjects`` are the site's memory-clinic cohort
(:func:`fedmi.simulations.sites.presets.memory_clinic_cohort`: ageing normals, bvFTD,
DLB; ``docs/phantom-disorders.md``): each draws from its own stream
``SeedSequence([seed, COHORT_STREAM, site, k])`` (``k = j - n_subjects``), so the cohort
never changes the site's other subjects.

The subjects after the cohort are the site's unlabelled archive (``SiteJob.n_archive``):
drawn like the site's own subjects (its population, disease mix, age/sex model and poses;
the scanner is the site's) but each from ``SeedSequence([seed, ARCHIVE_STREAM, site, k])``
(``k`` counts archive subjects), never listed in labels.csv, and with UIDs seeded apart
(``..., "archive", k``), so an archive of any size leaves every other file unchanged.
"""

from __future__ import annotations

import datetime as _dt
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from fedmi.simulations import phantom
from fedmi.simulations.dicom import (
    NmMeta,
    PetMeta,
    nm_sop_instance_uid,
    write_nm_series,
    write_pet_series,
)
from fedmi.simulations.identities import birth_date, patient_name, referring_physician
from fedmi.simulations.phantom.atrophy import apply_atrophy
from fedmi.simulations.phantom.poses import POSE_STREAM, get_poses
from fedmi.simulations.phantom.render import axial_fov_centre
from fedmi.simulations.sites.profiles import SiteProfile

#: (0028,0051) *Corrected Image* of a SPECT site's correction.
_NM_CORRECTED_IMAGE = {"NC": ("DECY",), "AC": ("DECY", "ATTN"), "ACSC": ("DECY", "ATTN", "SCAT")}

#: SeedSequence tag of the memory-clinic cohort's subject streams
#: (``[seed, COHORT_STREAM, site, k]``).
COHORT_STREAM = 1_000_009
#: SeedSequence tag of the unlabelled archive's subject streams
#: (``[seed, ARCHIVE_STREAM, site, k]``).
ARCHIVE_STREAM = 1_000_013


@dataclass
class SiteJob:
    """What rendering any subject of one site needs (shared with forked workers)."""

    site: SiteProfile
    basis: phantom.Basis
    seed: int
    task: str
    root: Path
    ids: list[str]
    accessions: list[str]
    folders: list[str]
    #: ``(group, labelled)`` of the memory-clinic cohort subjects ``n_subjects, ...``.
    cohort: list[tuple[str, bool]] = field(default_factory=list)
    #: Unlabelled archive subjects, after the cohort.
    n_archive: int = 0

    @property
    def n_total(self) -> int:
        """The site's subjects plus its cohort and its archive."""
        return self.site.n_subjects + len(self.cohort) + self.n_archive

    @property
    def first_archive(self) -> int:
        """Index ``j`` of the first archive subject."""
        return self.site.n_subjects + len(self.cohort)


@dataclass
class _Visit:
    """When and how a subject was scanned, and under which name."""

    injection: _dt.datetime
    uptake_s: float
    dose_mbq: float
    patient_name: str

    @property
    def scan(self) -> _dt.datetime:
        return self.injection + _dt.timedelta(seconds=self.uptake_s)


def subject_rng(seed: int, site: int, subject: int) -> np.random.Generator:
    """The subject's own generator."""
    return np.random.default_rng(np.random.SeedSequence([seed, site, subject]))


def pose_rng(seed: int, site: int, subject: int) -> np.random.Generator:
    """The subject's pose stream (:data:`~fedmi.simulations.phantom.poses.POSE_STREAM`)."""
    return np.random.default_rng(np.random.SeedSequence([seed, site, subject, POSE_STREAM]))


def cohort_rng(seed: int, site: int, k: int) -> np.random.Generator:
    """Cohort subject ``k``'s own generator."""
    return np.random.default_rng(np.random.SeedSequence([seed, COHORT_STREAM, site, k]))


def cohort_pose_rng(seed: int, site: int, k: int) -> np.random.Generator:
    """Cohort subject ``k``'s pose stream."""
    return np.random.default_rng(
        np.random.SeedSequence([seed, COHORT_STREAM, site, k, POSE_STREAM])
    )


def archive_rng(seed: int, site: int, k: int) -> np.random.Generator:
    """Archive subject ``k``'s own generator."""
    return np.random.default_rng(np.random.SeedSequence([seed, ARCHIVE_STREAM, site, k]))


def archive_pose_rng(seed: int, site: int, k: int) -> np.random.Generator:
    """Archive subject ``k``'s pose stream."""
    return np.random.default_rng(
        np.random.SeedSequence([seed, ARCHIVE_STREAM, site, k, POSE_STREAM])
    )


def draw_cohort_truth(
    site: SiteProfile, seed: int, task: str, rng: np.random.Generator, k: int, group: str
) -> phantom.SubjectTruth:
    """Cohort subject ``k``'s truth (group ``group``) from its own generator ``rng``."""
    pose = get_poses(site.poses)
    return phantom.draw_cohort_subject(
        task,
        group,
        rng,
        female_frac=site.female_frac,
        max_rotation_deg=site.max_rotation_deg,
        max_shift_mm=site.max_shift_mm,
        pose=pose,
        pose_rng=None if pose.legacy else cohort_pose_rng(seed, site.index, k),
    )


def draw_truth(
    site: SiteProfile,
    seed: int,
    task: str,
    rng: np.random.Generator,
    j: int,
    archive: bool = False,
) -> phantom.SubjectTruth:
    """Subject ``j``'s truth, drawn from its own generator ``rng`` (and pose stream).

    ``archive``: ``j`` counts the site's archive subjects, whose pose streams are
    :func:`archive_pose_rng`; they are drawn from the same population as the others.
    """
    pose = get_poses(site.poses)
    streams = archive_pose_rng if archive else pose_rng
    return phantom.draw_subject(
        task,
        rng,
        group_probs=site.group_probs,
        label_noise=site.label_noise,
        age_shift=site.age_shift,
        female_frac=site.female_frac,
        tracer=site.tracer if task == "amyloid" else None,
        max_rotation_deg=site.max_rotation_deg,
        max_shift_mm=site.max_shift_mm,
        pose=pose,
        pose_rng=None if pose.legacy else streams(seed, site.index, j),
    )


def write_subject(job: SiteJob, j: int) -> dict[str, object]:
    """Draw, render and write subject ``j`` of ``job.site``; returns its truth row.

    ``j >= site.n_subjects`` is cohort subject ``j - site.n_subjects``, and
    ``j >= job.first_archive`` archive subject ``j - job.first_archive``; the row's
    ``labelled`` says whether the subject is in the site's labels.csv.
    """
    site = job.site
    labelled = True
    uid_key: tuple[str, ...] = (str(j),)
    if j < site.n_subjects:
        rng = subject_rng(job.seed, site.index, j)
        truth = draw_truth(site, job.seed, job.task, rng, j)
    elif j >= job.first_archive:
        k = j - job.first_archive
        labelled, uid_key = False, ("archive", str(k))
        rng = archive_rng(job.seed, site.index, k)
        truth = draw_truth(site, job.seed, job.task, rng, k, archive=True)
    else:
        k = j - site.n_subjects
        group, labelled = job.cohort[k]
        rng = cohort_rng(job.seed, site.index, k)
        truth = draw_cohort_truth(site, job.seed, job.task, rng, k, group)
    img, affine = _render(job, truth)
    visit = _draw_visit(site, truth, rng)
    common = _common_meta(job, j, truth, visit, rng, uid_key)
    study_dir = job.root / site.site_id / "dicom" / job.folders[j]
    if site.is_pet:
        series_dir = study_dir / f"PT_{site.series_number:04d}"
        files = _write_pet(site, img, affine, common, series_dir, rng)
    else:
        series_dir = study_dir  # one NM file per study
        files = _write_nm(site, img, affine, common, study_dir, rng)
    rel = series_dir.relative_to(job.root / site.site_id)
    row: dict[str, object] = {"PatientID": job.ids[j], **truth.row()}
    row.pop("task")
    row.update(
        dose_mbq=visit.dose_mbq,
        uptake_s=visit.uptake_s,
        scan_datetime=visit.scan.strftime("%Y-%m-%dT%H:%M:%S"),
        series_dir=str(rel),
        n_files=len(files),
        n_bytes=sum(f.stat().st_size for f in files),
        labelled=labelled,
    )
    return row


def _render(job: SiteJob, truth: phantom.SubjectTruth) -> tuple[np.ndarray, np.ndarray]:
    """Noiseless image on the site's scanner grid and that grid's voxel → LPS affine."""
    site = job.site
    coefs = phantom.subject_coefficients(truth, job.basis)
    if not site.is_pet:
        # Camera/correction-dependent loss of striatal contrast (NC < AC < ACSC).
        for name in phantom.DAT_SUBREGIONS:
            coefs[job.basis.index(name)] *= site.sbr_recovery
    vol = apply_atrophy(job.basis.combine(coefs), job.basis.grid, truth.atrophy)
    shape = (site.matrix, site.matrix, site.n_slices)
    spacing = (site.pixel_mm, site.pixel_mm, site.slice_mm)
    xf = phantom.mni_to_scanner_lps(
        truth.scale, truth.rotation_deg, truth.shift_mm, site.table_offset_lps
    )
    centre = {}
    if not get_poses(site.poses).legacy:  # the head centred in the field of view, or cut
        centre["fov_centre_mni"] = axial_fov_centre(
            xf, site.n_slices, site.slice_mm, site.table_offset_lps, truth.fov_cut_mm
        )
    affine = phantom.scanner_affine(
        shape, spacing, site.table_offset_lps, site.slice_direction, **centre
    )
    return phantom.render_on_scanner(vol, job.basis.grid, xf, shape, affine), affine


def _draw_visit(site: SiteProfile, truth: phantom.SubjectTruth, rng: np.random.Generator) -> _Visit:
    """Study day, injection time (7:30–14:30), uptake, dose and the patient's name."""
    day = site.first_study_day + int(rng.integers(0, 330))
    inj_min = int(rng.integers(7 * 60 + 30, 14 * 60 + 30))
    injection = _dt.datetime(2024, 3, 1) + _dt.timedelta(
        days=day, minutes=inj_min, seconds=int(rng.integers(60))
    )
    uptake_s = float(round(rng.uniform(*site.uptake_min) * 60.0))
    dose = round(site.dose_mbq * float(np.clip(rng.normal(1.0, site.dose_rel_sd), 0.8, 1.2)), 1)
    return _Visit(injection, uptake_s, dose, patient_name(truth.sex, rng))


def _common_meta(
    job: SiteJob,
    j: int,
    truth: phantom.SubjectTruth,
    visit: _Visit,
    rng: np.random.Generator,
    uid_key: tuple[str, ...],
) -> dict[str, object]:
    """The :class:`~fedmi.simulations.dicom.header.CommonMeta` fields of subject ``j``
    (``uid_key`` ends the entropy of its UIDs)."""
    site = job.site
    return dict(
        patient_id=job.ids[j],
        patient_name=visit.patient_name,
        patient_birth_date=birth_date(visit.scan, truth.age, rng),
        patient_sex=truth.sex,
        patient_age_years=int(truth.age),
        patient_weight_kg=truth.weight_kg,
        patient_size_m=truth.height_m,
        tracer=site.tracer,
        injected_dose_mbq=visit.dose_mbq,
        injection_datetime=visit.injection,
        uptake_s=visit.uptake_s,
        frame_duration_s=site.frame_duration_s,
        series_number=site.series_number,
        accession_number=job.accessions[j],
        study_id=str(int(rng.integers(1, 99999))),
        referring_physician=referring_physician(rng),
        institution_name=site.institution,
        station_name=site.station_name,
        manufacturer=site.manufacturer,
        model_name=site.model,
        software_versions=site.software_version,
        device_serial_number=site.device_serial,
        convolution_kernel=site.convolution_kernel,
        reconstruction_diameter_mm=round(site.matrix * site.pixel_mm, 2),
        uid_entropy=("fedmi-sim", str(job.seed), job.task, site.site_id, *uid_key),
    )


def _write_pet(
    site: SiteProfile,
    img: np.ndarray,
    affine: np.ndarray,
    common: dict[str, object],
    series_dir: Path,
    rng: np.random.Generator,
) -> list[Path]:
    """Add PET noise and write the series (one file per slice) into ``series_dir``."""
    img = phantom.add_pet_noise(img, site.noise_cov, rng)
    pet_mr = site.scanner_class == "pet-mr"
    meta = PetMeta(
        **common,
        study_description=f"PET BRAIN {site.tracer.upper()}",
        series_description="Brain MRAC" if pet_mr else "Brain 3D AC",
        calibration_factor=site.calibration,
        reconstruction_method=site.reconstruction_method,
        attenuation_correction_method="MRAC" if pet_mr else "CTAC",
        file_naming=site.file_naming,
        gems_private_scan_datetime=site.manufacturer.startswith("GE"),
    )
    return write_pet_series(img, affine, meta, series_dir, rng=rng)


def _write_nm(
    site: SiteProfile,
    img: np.ndarray,
    affine: np.ndarray,
    common: dict[str, object],
    study_dir: Path,
    rng: np.random.Generator,
) -> list[Path]:
    """Turn the image into Poisson counts and write one NM object into ``study_dir``."""
    counts = phantom.spect_counts(img, site.total_counts, rng)
    meta = NmMeta(
        **common,
        study_description="DAT SPECT",
        series_description=f"DaTSCAN {site.correction}",
        reconstruction_method=site.reconstruction_method,
        corrected_image=_NM_CORRECTED_IMAGE[site.correction],
        units_cnts=site.manufacturer.startswith("SIEMENS"),
    )
    fname = {
        "instance": "NM000001.dcm",
        "im": f"IM{int(rng.integers(10**6)):06d}",
        "slice": "recon.dcm",
        "uid": f"{nm_sop_instance_uid(meta)}.dcm",
    }[site.file_naming]
    return [write_nm_series(counts, affine, meta, study_dir / fname)]
