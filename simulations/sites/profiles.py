"""Site profiles: everything constant within a site, drawn deterministically from the seed.

A :class:`SiteProfile` holds the scanner (vendor, model, resolution, voxel grid, noise,
calibration, table offset), protocol (tracer, dose, uptake time), population (class
prevalence, label noise, age/sex shift) and DICOM habits (patient-ID style, folder layout,
file names) of one site. :func:`make_sites` draws the profiles of a preset. The order of
the draws on each site's generator is part of the output: changing it changes every file.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

from fedmi.simulations.phantom.poses import DEFAULT_POSES, get_poses
from fedmi.simulations.sites.populations import LABEL_NOISE, POPULATIONS
from fedmi.simulations.sites.presets import (
    DEFAULT_TEMPLATES,
    PRESETS,
    Preset,
    SiteTemplate,
    site_templates,
)
from fedmi.simulations.sites.scanners import (
    PET_SCANNERS,
    PROTOCOLS,
    SPECT_CORRECTIONS,
    SPECT_SCANNERS,
    UNSEEN_PET_SCANNERS,
    ScannerModel,
)

#: SeedSequence tags that keep site-level streams apart from subject streams
#: (subjects use ``[seed, site_index, subject_index]``).
PROFILE_STREAM = 1_000_003
SITE_STREAM = 1_000_005

_INSTITUTIONS = (
    "St Aldric University Hospital",
    "Northfield General Hospital",
    "Riverside Memory Clinic",
    "Lakeshore Medical Centre",
    "Hospital Clinico Valverde",
    "Kliniken am Hohen Ufer",
    "Centre Hospitalier de Montbrun",
    "Eastgate Neuroscience Institute",
    "Ospedale San Lucano",
    "Westbrook Movement Disorders Unit",
)


@dataclass
class SiteProfile:
    """Everything constant within a synthetic site (written to ``site.toml [truth]``)."""

    site_id: str
    index: int
    role: str
    task: str
    modality: str
    population: str
    group_probs: dict[str, float]
    label_noise: float
    n_subjects: int
    age_shift: float
    female_frac: float
    institution: str
    station_name: str
    manufacturer: str
    model: str
    scanner_class: str
    software_version: str
    device_serial: str
    reconstruction_method: str
    convolution_kernel: str
    tracer: str
    dose_mbq: float
    dose_rel_sd: float
    uptake_min: tuple[float, float]
    frame_duration_s: float
    fwhm_mm: float
    pixel_mm: float
    slice_mm: float
    matrix: int
    n_slices: int
    slice_direction: int
    table_offset_lps: tuple[float, float, float]
    calibration: float
    noise_cov: float = 0.0
    total_counts: float = 0.0
    correction: str = ""
    sbr_recovery: float = 1.0
    max_rotation_deg: float = 5.0
    max_shift_mm: float = 8.0
    poses: str = DEFAULT_POSES
    id_style: str = "prefix"
    id_prefix: str = ""
    folder_style: str = "patient"
    file_naming: str = "instance"
    series_number: int = 3
    first_study_day: int = 0
    extra: dict[str, object] = field(default_factory=dict)

    @property
    def is_pet(self) -> bool:
        """True for PT sites, False for NM (SPECT)."""
        return self.modality == "PT"

    def truth(self) -> dict[str, object]:
        """The ``[truth]`` table: generator facts the pipeline must never read."""
        d = asdict(self)
        for k in ("site_id", "index", "role", "task", "extra"):
            d.pop(k)
        if self.is_pet:
            for k in ("total_counts", "correction", "sbr_recovery"):
                d.pop(k)
        else:
            d.pop("noise_cov")
        return d


def make_sites(
    task: str,
    preset: str = "tiny",
    seed: int = 0,
    n_sites: int | None = None,
    subjects_scale: float = 1.0,
    poses: str = DEFAULT_POSES,
) -> list[SiteProfile]:
    """Draw the site profiles of a preset (last site is the holdout).

    Parameters
    ----------
    task
        ``fdg-ad``, ``amyloid`` or ``dat-pd``.
    preset
        ``tiny``, ``default``, ``harmonization`` or ``ood`` (see :data:`PRESETS`).
    seed
        Federation seed.
    n_sites
        Total number of sites including the holdout (≥ 2); the preset's when ``None``.
    subjects_scale
        Multiplies every site's subject count.
    poses
        Pose settings of every site (:data:`fedmi.simulations.phantom.poses.POSES`).
    """
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}")
    if task not in DEFAULT_TEMPLATES:
        raise ValueError(f"unknown task {task!r}; choose one of {', '.join(DEFAULT_TEMPLATES)}")
    p = PRESETS[preset]
    n = p.n_sites if n_sites is None else int(n_sites)
    if n < 2:
        raise ValueError("a federation needs at least 2 sites (1 train + 1 holdout)")
    if subjects_scale <= 0:
        raise ValueError("subjects_scale must be positive")
    get_poses(poses)
    top = np.random.default_rng(np.random.SeedSequence([seed, PROFILE_STREAM]))
    n_holdout = sum(t.role == "holdout" for t in site_templates(task, preset))
    if n <= n_holdout:
        raise ValueError(f"preset {preset!r} needs more than {n_holdout} sites")
    sizes = _sizes(p, n, top, subjects_scale, n_holdout)
    templates = _templates(task, n, top, preset)
    profiles = []
    for i, (tpl, size) in enumerate(zip(templates, sizes, strict=True)):
        rng = np.random.default_rng(np.random.SeedSequence([seed, PROFILE_STREAM, i]))
        profiles.append(_profile(task, p, i, tpl, size, rng))
        profiles[-1].poses = poses
    return profiles


def _site_id(i: int) -> str:
    letters = "abcdefghijklmnopqrstuvwxyz"
    return f"site-{letters[i]}" if i < 26 else f"site-{i:03d}"


def _sizes(
    preset: Preset, n: int, rng: np.random.Generator, scale: float, n_holdout: int = 1
) -> list[int]:
    """Subject counts of the train sites, then the holdouts (rescaled into the preset's
    ``total_range`` when it has one and ``n`` is its own site count)."""
    kind = preset.site_sizes[0]
    n_train = n - n_holdout
    if kind == "uniform":
        lo, hi = preset.site_sizes[1:]
        train = [int(rng.integers(lo, hi + 1)) for _ in range(n_train)]
    else:
        median, sigma, lo, hi = preset.site_sizes[1:]
        train = [
            int(np.clip(round(rng.lognormal(np.log(median), sigma)), lo, hi))
            for _ in range(n_train)
        ]
    holds = [
        int(rng.integers(preset.holdout_size[0], preset.holdout_size[1] + 1))
        for _ in range(n_holdout)
    ]
    if preset.total_range is not None and n == preset.n_sites:
        lo_t, hi_t = preset.total_range
        total = sum(train) + sum(holds)
        target = float(np.clip(total, lo_t, hi_t))
        if total != target:
            f = (target - sum(holds)) / max(1, sum(train))
            train = [max(10, int(round(s * f))) for s in train]
    sizes = [*train, *holds]
    return [max(2, int(round(s * scale))) for s in sizes]


def _templates(
    task: str, n: int, rng: np.random.Generator, preset: str = "default"
) -> list[SiteTemplate]:
    """The preset's train designs, extra sites recombined at random, then the holdouts."""
    base = site_templates(task, preset)
    train = [t for t in base if t.role == "train"]
    holds = [t for t in base if t.role == "holdout"]
    out = []
    for i in range(n - len(holds)):
        if i < len(train):
            out.append(train[i])
        else:  # extra sites: recombine populations, scanners and tracers
            pops = list(POPULATIONS[task])
            scanners = list(PET_SCANNERS if task != "dat-pd" else SPECT_SCANNERS)
            tracers = [t.tracer for t in train]
            out.append(
                SiteTemplate(
                    population=pops[int(rng.integers(len(pops)))],
                    scanner=scanners[int(rng.integers(len(scanners)))],
                    tracer=tracers[int(rng.integers(len(tracers)))],
                    correction=list(SPECT_CORRECTIONS)[int(rng.integers(3))],
                )
            )
    out.extend(holds)
    return out


def _profile(
    task: str, p: Preset, i: int, tpl: SiteTemplate, size: int, rng: np.random.Generator
) -> SiteProfile:
    """Draw site ``i`` around its template (the draws happen in the order written here)."""
    pet = task != "dat-pd"
    scanner = ({**PET_SCANNERS, **UNSEEN_PET_SCANNERS} if pet else SPECT_SCANNERS)[tpl.scanner]
    site_id = _site_id(i)
    prefix = site_id.replace("-", "").upper()
    fwhm = round(float(rng.uniform(*scanner.fwhm_mm)), 2)
    grid = _voxel_grid(p, scanner, pet, rng)
    protocol = _protocol(tpl.tracer, rng)
    id_style = ("prefix", "mrn", "hospital")[int(rng.integers(3))]
    population = _population(task, tpl.population, size, rng)
    equipment = _equipment(i, scanner, pet, prefix, rng)
    placement = _placement(rng)
    noise = _noise(p, scanner, tpl.correction, pet, rng)
    habits = _dicom_habits(rng)
    return SiteProfile(
        site_id=site_id,
        index=i,
        role=tpl.role,
        task=task,
        modality="PT" if pet else "NM",
        fwhm_mm=fwhm,
        id_style=id_style,
        id_prefix=prefix,
        **population,
        **equipment,
        **protocol,
        **grid,
        **placement,
        **noise,
        **habits,
    )


def _voxel_grid(p: Preset, scanner: ScannerModel, pet: bool, rng: np.random.Generator) -> dict:
    """``pixel_mm``, ``slice_mm``, ``matrix`` and ``n_slices`` (the preset's sizes win)."""
    u = rng.uniform
    if pet:
        pixel = p.pet_pixel_mm or scanner.pixel_mm
        pixel_mm = round(float(u(*pixel)), 4)
        slice_mm = float(
            p.pet_slice_mm or scanner.slice_mm[int(rng.integers(len(scanner.slice_mm)))]
        )
        matrix = int(p.pet_matrix or 128)
        n_slices = int(round(float(u(*p.pet_axial_fov_mm)) / slice_mm))
    else:
        pixel = p.nm_pixel_mm or scanner.pixel_mm
        pixel_mm = round(float(u(*pixel)), 4)
        slice_mm = pixel_mm
        matrix = int(p.nm_matrix or (128 if pixel_mm < 3.9 else 64))
        lo, hi = p.nm_frames or (64, 72)
        n_slices = int(rng.integers(lo, hi + 1))
    return {"pixel_mm": pixel_mm, "slice_mm": slice_mm, "matrix": matrix, "n_slices": n_slices}


def _protocol(tracer: str, rng: np.random.Generator) -> dict:
    """Tracer, mean dose (±10 % around the tracer's protocol), uptake and frame time."""
    dose, dose_sd, uptake, frame = PROTOCOLS[tracer]
    return {
        "tracer": tracer,
        "dose_mbq": round(float(dose * rng.uniform(0.9, 1.1)), 1),
        "dose_rel_sd": dose_sd,
        "uptake_min": uptake,
        "frame_duration_s": frame,
    }


def _population(task: str, population: str, size: int, rng: np.random.Generator) -> dict:
    """Group mix and label noise of the population type, size, age and sex shift."""
    return {
        "population": population,
        "group_probs": dict(POPULATIONS[task][population]),
        "label_noise": LABEL_NOISE[task][population],
        "n_subjects": size,
        "age_shift": round(float(rng.uniform(-4.0, 4.0)), 2),
        "female_frac": round(float(rng.uniform(0.4, 0.6)), 3),
    }


def _equipment(
    i: int, scanner: ScannerModel, pet: bool, prefix: str, rng: np.random.Generator
) -> dict:
    """Institution, station name, scanner model fields and device serial number."""
    return {
        "institution": _INSTITUTIONS[i % len(_INSTITUTIONS)],
        "station_name": f"{'PET' if pet else 'NM'}{int(rng.integers(1, 9))}_{prefix}",
        "manufacturer": scanner.manufacturer,
        "model": scanner.model,
        "scanner_class": scanner.scanner_class,
        "software_version": scanner.software,
        "device_serial": str(int(rng.integers(10000, 99999))),
        "reconstruction_method": scanner.reconstruction_method,
        "convolution_kernel": scanner.convolution_kernel,
    }


def _placement(rng: np.random.Generator) -> dict:
    """Slice order, table offset (LPS mm) and calibration error (N(1, 0.04), clipped)."""
    u = rng.uniform
    return {
        "slice_direction": int(rng.choice([1, -1])),
        "table_offset_lps": (
            round(float(u(-6.0, 6.0)), 2),
            round(float(u(-40.0, 20.0)), 2),
            round(float(u(-1100.0, 150.0)), 2),
        ),
        "calibration": round(float(np.clip(rng.normal(1.0, 0.04), 0.88, 1.12)), 4),
    }


def _noise(
    p: Preset, scanner: ScannerModel, correction: str, pet: bool, rng: np.random.Generator
) -> dict:
    """PET noise CoV, or SPECT total counts, correction and SBR recovery."""
    u = rng.uniform
    return {
        "noise_cov": round(float(u(*scanner.noise_cov)), 4) if pet else 0.0,
        "total_counts": round(float(u(*p.nm_total_counts)), -3) if not pet else 0.0,
        "correction": correction if not pet else "",
        "sbr_recovery": SPECT_CORRECTIONS[correction] if not pet else 1.0,
    }


def _dicom_habits(rng: np.random.Generator) -> dict:
    """Folder layout, file naming, series number and the first study day."""
    return {
        "folder_style": ("patient", "opaque", "study")[int(rng.integers(3))],
        "file_naming": ("instance", "im", "uid", "slice")[int(rng.integers(4))],
        "series_number": int(rng.choice([2, 3, 4, 601, 1001])),
        "first_study_day": int(rng.integers(0, 400)),
    }
