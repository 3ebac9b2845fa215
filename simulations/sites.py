"""Synthetic sites: scanners, protocols, populations and presets (PHANTOM_SPEC §3, §5, §6).

A :class:`SiteProfile` holds everything that is constant within a site: scanner
(vendor, model, resolution, voxel grid, noise, calibration, table offset), protocol
(tracer, dose, uptake time), population (class prevalence, label noise, age/sex shift)
and DICOM habits (patient-ID style, folder layout, file names). :func:`make_sites`
draws the profiles of a preset deterministically from the seed.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

from fedmi.shared.grid import Grid
from fedmi.simulations.phantom import WORKING_GRID_2MM, WORKING_GRID_3MM

#: SeedSequence tags that keep site-level streams apart from subject streams
#: (subjects use ``[seed, site_index, subject_index]``).
PROFILE_STREAM = 1_000_003
SITE_STREAM = 1_000_005


@dataclass(frozen=True)
class ScannerModel:
    """A scanner model and its typical reconstruction (PHANTOM_SPEC §3.1)."""

    manufacturer: str
    model: str
    scanner_class: str
    fwhm_mm: tuple[float, float]
    noise_cov: tuple[float, float]
    pixel_mm: tuple[float, float]
    slice_mm: tuple[float, ...]
    reconstruction_method: str
    convolution_kernel: str
    software: str


PET_SCANNERS: dict[str, ScannerModel] = {
    s.model: s
    for s in (
        ScannerModel(
            "GE MEDICAL SYSTEMS",
            "Discovery ST",
            "pet-old",
            (7.0, 9.0),
            (0.09, 0.14),
            (2.0, 2.6),
            (3.27, 4.25),
            "OSEM 2i21s",
            "FS 6.0mm",
            "pet_dst.41",
        ),
        ScannerModel(
            "GE MEDICAL SYSTEMS",
            "Discovery 690",
            "pet-tof",
            (5.0, 6.7),
            (0.07, 0.12),
            (2.0, 2.4),
            (3.27, 2.0),
            "VPFX 3i16s",
            "Gaussian 5.0mm",
            "pet_coreload.46",
        ),
        ScannerModel(
            "GE MEDICAL SYSTEMS",
            "Discovery MI",
            "pet-digital",
            (3.5, 5.0),
            (0.06, 0.10),
            (1.5, 2.0),
            (2.0, 2.8),
            "Q.Clear b400",
            "None",
            "pet_coreload.54",
        ),
        ScannerModel(
            "SIEMENS",
            "Biograph HiRez",
            "pet-old",
            (7.0, 9.0),
            (0.09, 0.14),
            (2.0, 2.6),
            (2.0, 3.0),
            "OSEM2D 4i16s",
            "XYZ Gauss5.50",
            "VA60C",
        ),
        ScannerModel(
            "SIEMENS",
            "Biograph mCT",
            "pet-tof",
            (5.0, 6.5),
            (0.07, 0.12),
            (2.0, 2.1),
            (2.0, 3.0),
            "PSF+TOF 4i21s",
            "XYZ Gauss4.00",
            "VG60A",
        ),
        ScannerModel(
            "SIEMENS",
            "Biograph Vision 600",
            "pet-digital",
            (3.5, 5.0),
            (0.06, 0.10),
            (1.6, 2.0),
            (1.65, 2.0),
            "PSF+TOF 4i5s",
            "XYZ Gauss2.00",
            "VG80B",
        ),
        ScannerModel(
            "SIEMENS",
            "Biograph_mMR",
            "pet-mr",
            (4.5, 6.0),
            (0.08, 0.12),
            (2.0, 2.1),
            (2.03,),
            "OP-OSEM3D 3i21s",
            "XYZ Gauss4.00",
            "syngo MR E11",
        ),
        ScannerModel(
            "Philips Medical Systems",
            "Ingenuity TF PET/CT",
            "pet-tof",
            (5.5, 6.7),
            (0.07, 0.12),
            (2.0, 2.0),
            (2.0,),
            "BLOB-OS-TF 3i33s",
            "Brain",
            "4.1.2",
        ),
        ScannerModel(
            "Philips Medical Systems",
            "Vereos PET/CT",
            "pet-digital",
            (3.5, 5.0),
            (0.06, 0.10),
            (2.0, 2.0),
            (2.0,),
            "BLOB-OS-TF 3i15s",
            "Brain HR",
            "2.0.1",
        ),
    )
}

SPECT_SCANNERS: dict[str, ScannerModel] = {
    s.model: s
    for s in (
        ScannerModel(
            "SIEMENS NM",
            "Symbia T2",
            "spect",
            (9.0, 12.0),
            (0.0, 0.0),
            (3.9, 4.8),
            (),
            "FLASH3D 8i8s",
            "Butterworth 0.5",
            "VB10B",
        ),
        ScannerModel(
            "SIEMENS NM",
            "Symbia Intevo 16",
            "spect",
            (8.0, 10.5),
            (0.0, 0.0),
            (3.3, 3.9),
            (),
            "FLASH3D 10i8s",
            "Gaussian 7.0",
            "VB22A",
        ),
        ScannerModel(
            "GE MEDICAL SYSTEMS",
            "Infinia",
            "spect",
            (10.0, 12.0),
            (0.0, 0.0),
            (3.9, 4.8),
            (),
            "FBP",
            "Butterworth 0.4",
            "Xeleris 3.1",
        ),
        ScannerModel(
            "GE MEDICAL SYSTEMS",
            "Discovery NM/CT 670",
            "spect",
            (8.0, 10.5),
            (0.0, 0.0),
            (3.3, 4.4),
            (),
            "OSEM 4i10s",
            "Butterworth 0.48",
            "Xeleris 4.0",
        ),
        ScannerModel(
            "Philips Medical Systems",
            "BrightView XCT",
            "spect",
            (9.0, 12.0),
            (0.0, 0.0),
            (3.9, 4.7),
            (),
            "Astonish 4i16s",
            "Hanning 0.8",
            "2.5.3",
        ),
    )
}

#: Scanners only holdouts of the ``ood`` and ``harmonization`` presets use (never drawn
#: for recombined extra sites): an old BGO camera reconstructed with filtered
#: back-projection and a heavy post-filter, giving an effective 12–14 mm FWHM — coarser
#: than any training site (PHANTOM_SPEC §3.1 tops out at 9 mm for PET).
UNSEEN_PET_SCANNERS: dict[str, ScannerModel] = {
    "ECAT EXACT HR+": ScannerModel(
        "SIEMENS",
        "ECAT EXACT HR+",
        "pet-old",
        (12.0, 14.0),
        (0.10, 0.15),
        (2.0, 2.6),
        (2.43,),
        "FBP 2D",
        "Hann0.5 G10.0mm",
        "ECAT 7.2.2",
    ),
}

#: SPECT corrections and the SBR recovery factor each implies (PHANTOM_SPEC §6).
SPECT_CORRECTIONS = {"NC": 0.75, "AC": 0.85, "ACSC": 1.0}

#: Clinical group probabilities of each population type, per task (PHANTOM_SPEC §5).
POPULATIONS: dict[str, dict[str, dict[str, float]]] = {
    "fdg-ad": {
        "community": {"CN": 0.55, "MCI": 0.20, "AD": 0.25},
        "research": {"CN": 0.40, "MCI": 0.25, "AD": 0.35},
        "memory-clinic": {"CN": 0.25, "MCI": 0.30, "AD": 0.45},
    },
    "amyloid": {
        "community": {"CN": 0.70, "MCI": 0.20, "AD": 0.10},
        "research": {"CN": 0.45, "MCI": 0.35, "AD": 0.20},
        "memory-clinic": {"CN": 0.25, "MCI": 0.40, "AD": 0.35},
    },
    "dat-pd": {
        "community": {"HC": 0.50, "PD": 0.50},
        "research": {"HC": 0.33, "PD": 0.67},
        "movement-clinic": {"HC": 0.20, "PD": 0.80},
    },
}

#: Label noise per task and population: fdg-ad = clinical AD without AD pathology,
#: amyloid = read flips, dat-pd = SWEDD among clinical PD.
LABEL_NOISE = {
    "fdg-ad": {"community": 0.10, "research": 0.05, "memory-clinic": 0.08},
    "amyloid": {"community": 0.04, "research": 0.03, "memory-clinic": 0.05},
    "dat-pd": {"community": 0.12, "research": 0.10, "movement-clinic": 0.10},
}

#: Protocol per tracer: (dose MBq mean, dose relative SD, uptake min range, frame s).
PROTOCOLS: dict[str, tuple[float, float, tuple[float, float], float]] = {
    "fdg": (200.0, 0.08, (30.0, 45.0), 900.0),
    "pib": (400.0, 0.10, (40.0, 50.0), 1200.0),
    "florbetapir": (370.0, 0.05, (50.0, 55.0), 1200.0),
    "florbetaben": (300.0, 0.05, (90.0, 95.0), 1200.0),
    "flutemetamol": (185.0, 0.05, (90.0, 95.0), 1200.0),
    "fp-cit": (185.0, 0.06, (180.0, 300.0), 30.0),
}

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


@dataclass(frozen=True)
class SiteTemplate:
    """The fixed design of one site in a preset (numbers are drawn around it)."""

    population: str
    scanner: str
    tracer: str
    role: str = "train"
    correction: str = "ACSC"


_DEFAULT_TEMPLATES: dict[str, tuple[SiteTemplate, ...]] = {
    "fdg-ad": (
        SiteTemplate("memory-clinic", "Biograph mCT", "fdg"),
        SiteTemplate("community", "Discovery ST", "fdg"),
        SiteTemplate("research", "Vereos PET/CT", "fdg"),
        SiteTemplate("memory-clinic", "Discovery 690", "fdg"),
        SiteTemplate("research", "Biograph HiRez", "fdg", role="holdout"),
    ),
    "amyloid": (
        SiteTemplate("memory-clinic", "Biograph mCT", "florbetapir"),
        SiteTemplate("research", "Discovery MI", "florbetaben"),
        SiteTemplate("community", "Discovery ST", "flutemetamol"),
        SiteTemplate("research", "Biograph_mMR", "pib"),
        SiteTemplate("memory-clinic", "Ingenuity TF PET/CT", "florbetaben", role="holdout"),
    ),
    "dat-pd": (
        SiteTemplate("research", "Symbia Intevo 16", "fp-cit", correction="ACSC"),
        SiteTemplate("movement-clinic", "Infinia", "fp-cit", correction="NC"),
        SiteTemplate("community", "BrightView XCT", "fp-cit", correction="AC"),
        SiteTemplate("research", "Discovery NM/CT 670", "fp-cit", correction="ACSC"),
        SiteTemplate("research", "Symbia T2", "fp-cit", role="holdout", correction="AC"),
    ),
}


#: Preset-specific site designs (task → templates); other presets use the defaults.
#: Holdout templates come last; a preset may have several.
#: ``harmonization``: an amyloid federation whose sites differ in tracer, vendor,
#: reconstruction and PET resolution (Discovery MI ≈ 3.5–5 mm … Discovery ST and
#: Biograph HiRez ≈ 7–9 mm FWHM, PHANTOM_SPEC §3.1), with two holdouts: one that uses a
#: tracer no training site uses (florbetaben) on a vendor no training site has (Philips),
#: and one whose resolution no training site has (ECAT EXACT HR+ with FBP, 12–14 mm), so
#: the resolutions span 3.5–14 mm.
_PRESET_TEMPLATES: dict[str, dict[str, tuple[SiteTemplate, ...]]] = {
    # ``ood``: the default fdg-ad training sites (4–9 mm FWHM) and two holdouts — a
    # control on a seen resolution (Biograph HiRez, 7–9 mm) and a site whose scans come
    # from a resolution no training site has (ECAT EXACT HR+ with FBP, 12–14 mm).
    "ood": {
        "fdg-ad": (
            *_DEFAULT_TEMPLATES["fdg-ad"][:4],
            SiteTemplate("research", "Biograph HiRez", "fdg", role="holdout"),
            SiteTemplate("memory-clinic", "ECAT EXACT HR+", "fdg", role="holdout"),
        ),
    },
    "harmonization": {
        "amyloid": (
            SiteTemplate("memory-clinic", "Discovery MI", "pib"),
            SiteTemplate("research", "Biograph mCT", "florbetapir"),
            SiteTemplate("community", "Discovery ST", "flutemetamol"),
            SiteTemplate("research", "Biograph HiRez", "florbetapir"),
            SiteTemplate("memory-clinic", "Ingenuity TF PET/CT", "florbetaben", role="holdout"),
            SiteTemplate("research", "ECAT EXACT HR+", "florbetapir", role="holdout"),
        ),
    },
}


@dataclass(frozen=True)
class Preset:
    """Sizes of a preset.

    ``site_sizes`` is ``("uniform", lo, hi)`` or ``("lognormal", median, sigma, lo, hi)``;
    ``total_range`` rescales the drawn train+holdout sizes into a range (lognormal only).
    """

    name: str
    n_sites: int
    site_sizes: tuple
    holdout_size: tuple[int, int]
    total_range: tuple[int, int] | None
    working_grid: Grid
    pet_matrix: int | None
    pet_pixel_mm: tuple[float, float] | None
    pet_slice_mm: float | None
    pet_axial_fov_mm: tuple[float, float]
    nm_matrix: int | None
    nm_frames: tuple[int, int] | None
    nm_pixel_mm: tuple[float, float] | None
    nm_total_counts: tuple[float, float]


PRESETS: dict[str, Preset] = {
    "tiny": Preset(
        name="tiny",
        n_sites=3,
        site_sizes=("uniform", 8, 12),
        holdout_size=(8, 12),
        total_range=None,
        working_grid=WORKING_GRID_3MM,
        pet_matrix=64,
        pet_pixel_mm=(3.8, 4.2),
        pet_slice_mm=4.0,
        pet_axial_fov_mm=(160.0, 172.0),
        nm_matrix=48,
        nm_frames=(40, 44),
        nm_pixel_mm=(4.4, 4.8),
        nm_total_counts=(1.0e6, 1.5e6),
    ),
    "default": Preset(
        name="default",
        n_sites=5,
        site_sizes=("lognormal", 70.0, 0.6, 30, 160),
        holdout_size=(70, 90),
        total_range=(340, 420),
        working_grid=WORKING_GRID_2MM,
        pet_matrix=128,
        pet_pixel_mm=None,
        pet_slice_mm=None,
        pet_axial_fov_mm=(160.0, 180.0),
        nm_matrix=None,
        nm_frames=(64, 72),
        nm_pixel_mm=None,
        nm_total_counts=(1.5e6, 3.0e6),
    ),
}
#: ``default`` site sizes plus a second holdout site (the site designs differ: see
#: _PRESET_TEMPLATES["harmonization"] and ["ood"]).
_TWO_HOLDOUTS = {"n_sites": 6, "total_range": (425, 510)}
for _name in ("harmonization", "ood"):
    PRESETS[_name] = Preset(
        **{**PRESETS["default"].__dict__, **_TWO_HOLDOUTS, "name": _name}  # type: ignore[arg-type]
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


def _site_id(i: int) -> str:
    letters = "abcdefghijklmnopqrstuvwxyz"
    return f"site-{letters[i]}" if i < 26 else f"site-{i:03d}"


def _sizes(
    preset: Preset, n: int, rng: np.random.Generator, scale: float, n_holdout: int = 1
) -> list[int]:
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
    base = _PRESET_TEMPLATES.get(preset, {}).get(task) or _DEFAULT_TEMPLATES[task]
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


def make_sites(
    task: str,
    preset: str = "tiny",
    seed: int = 0,
    n_sites: int | None = None,
    subjects_scale: float = 1.0,
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
    """
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}")
    if task not in _DEFAULT_TEMPLATES:
        raise ValueError(f"unknown task {task!r}; choose one of {', '.join(_DEFAULT_TEMPLATES)}")
    p = PRESETS[preset]
    n = p.n_sites if n_sites is None else int(n_sites)
    if n < 2:
        raise ValueError("a federation needs at least 2 sites (1 train + 1 holdout)")
    if subjects_scale <= 0:
        raise ValueError("subjects_scale must be positive")
    top = np.random.default_rng(np.random.SeedSequence([seed, PROFILE_STREAM]))
    n_holdout = sum(
        t.role == "holdout"
        for t in (_PRESET_TEMPLATES.get(preset, {}).get(task) or _DEFAULT_TEMPLATES[task])
    )
    if n <= n_holdout:
        raise ValueError(f"preset {preset!r} needs more than {n_holdout} sites")
    sizes = _sizes(p, n, top, subjects_scale, n_holdout)
    templates = _templates(task, n, top, preset)
    profiles = []
    for i, (tpl, size) in enumerate(zip(templates, sizes, strict=True)):
        rng = np.random.default_rng(np.random.SeedSequence([seed, PROFILE_STREAM, i]))
        profiles.append(_profile(task, p, i, tpl, size, rng))
    return profiles


def _profile(
    task: str, p: Preset, i: int, tpl: SiteTemplate, size: int, rng: np.random.Generator
) -> SiteProfile:
    pet = task != "dat-pd"
    scanner = ({**PET_SCANNERS, **UNSEEN_PET_SCANNERS} if pet else SPECT_SCANNERS)[tpl.scanner]
    site_id = _site_id(i)
    dose, dose_sd, uptake, frame = PROTOCOLS[tpl.tracer]
    u = rng.uniform
    fwhm = round(float(u(*scanner.fwhm_mm)), 2)
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
    dose_mbq = round(float(dose * u(0.9, 1.1)), 1)
    seed_style = int(rng.integers(3))
    prefix = site_id.replace("-", "").upper()
    profile = SiteProfile(
        site_id=site_id,
        index=i,
        role=tpl.role,
        task=task,
        modality="PT" if pet else "NM",
        population=tpl.population,
        group_probs=dict(POPULATIONS[task][tpl.population]),
        label_noise=LABEL_NOISE[task][tpl.population],
        n_subjects=size,
        age_shift=round(float(u(-4.0, 4.0)), 2),
        female_frac=round(float(u(0.4, 0.6)), 3),
        institution=_INSTITUTIONS[i % len(_INSTITUTIONS)],
        station_name=f"{'PET' if pet else 'NM'}{int(rng.integers(1, 9))}_{prefix}",
        manufacturer=scanner.manufacturer,
        model=scanner.model,
        scanner_class=scanner.scanner_class,
        software_version=scanner.software,
        device_serial=str(int(rng.integers(10000, 99999))),
        reconstruction_method=scanner.reconstruction_method,
        convolution_kernel=scanner.convolution_kernel,
        tracer=tpl.tracer,
        dose_mbq=dose_mbq,
        dose_rel_sd=dose_sd,
        uptake_min=uptake,
        frame_duration_s=frame,
        fwhm_mm=fwhm,
        pixel_mm=pixel_mm,
        slice_mm=slice_mm,
        matrix=matrix,
        n_slices=n_slices,
        slice_direction=int(rng.choice([1, -1])),
        table_offset_lps=(
            round(float(u(-6.0, 6.0)), 2),
            round(float(u(-40.0, 20.0)), 2),
            round(float(u(-1100.0, 150.0)), 2),
        ),
        calibration=round(float(np.clip(rng.normal(1.0, 0.04), 0.88, 1.12)), 4),
        noise_cov=round(float(u(*scanner.noise_cov)), 4) if pet else 0.0,
        total_counts=round(float(u(*p.nm_total_counts)), -3) if not pet else 0.0,
        correction=tpl.correction if not pet else "",
        sbr_recovery=SPECT_CORRECTIONS[tpl.correction] if not pet else 1.0,
        id_style=("prefix", "mrn", "hospital")[seed_style],
        id_prefix=prefix,
        folder_style=("patient", "opaque", "study")[int(rng.integers(3))],
        file_naming=("instance", "im", "uid", "slice")[int(rng.integers(4))],
        series_number=int(rng.choice([2, 3, 4, 601, 1001])),
        first_study_day=int(rng.integers(0, 400)),
    )
    return profile
