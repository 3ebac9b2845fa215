"""Presets: the site designs of each task and the sizes and grids of a federation.

A preset (``tiny``, ``default``, ``harmonization``, ``ood``) fixes the number of sites,
their sizes, the working grid and the scanner matrices; :data:`DEFAULT_TEMPLATES` and
:data:`PRESET_TEMPLATES` fix each site's population, scanner, tracer and role (the
numbers around them are drawn in :mod:`fedmi.simulations.sites.profiles`).
:data:`MEMORY_CLINIC` sizes the memory-clinic cohort appended to each fdg-ad site (ageing
normals, bvFTD and DLB; effect sizes in ``docs/phantom-disorders.md``). A preset's
``unlabelled_archive`` sizes each site's archive of scans without a research label
(:func:`archive_size`). Mostly data tables.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from fedmi.shared.grid import Grid
from fedmi.simulations.phantom.basis import WORKING_GRID_2MM, WORKING_GRID_3MM


@dataclass(frozen=True)
class SiteTemplate:
    """The fixed design of one site in a preset (numbers are drawn around it)."""

    population: str
    scanner: str
    tracer: str
    role: str = "train"
    correction: str = "ACSC"


#: Site designs per task (four train sites, then the holdout), for presets without their
#: own entry in :data:`PRESET_TEMPLATES`.
DEFAULT_TEMPLATES: dict[str, tuple[SiteTemplate, ...]] = {
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
PRESET_TEMPLATES: dict[str, dict[str, tuple[SiteTemplate, ...]]] = {
    # ``ood``: the default fdg-ad training sites (4–9 mm FWHM) and two holdouts — a
    # control on a seen resolution (Biograph HiRez, 7–9 mm) and a site whose scans come
    # from a resolution no training site has (ECAT EXACT HR+ with FBP, 12–14 mm).
    "ood": {
        "fdg-ad": (
            *DEFAULT_TEMPLATES["fdg-ad"][:4],
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
    ``unlabelled_archive`` is the default size of every site's unlabelled archive, as a
    multiple of its labelled scan count (:func:`archive_size`; ``fedmi-sim generate
    --unlabelled-archive`` overrides it; 0: no archive).
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
    unlabelled_archive: float = 0.0


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
#: PRESET_TEMPLATES["harmonization"] and ["ood"]).
_TWO_HOLDOUTS = {"n_sites": 6, "total_range": (425, 510)}
for _name in ("harmonization", "ood"):
    PRESETS[_name] = Preset(
        **{**PRESETS["default"].__dict__, **_TWO_HOLDOUTS, "name": _name}  # type: ignore[arg-type]
    )


def site_templates(task: str, preset: str) -> tuple[SiteTemplate, ...]:
    """The fixed site designs of ``task`` in ``preset`` (train sites, then holdouts)."""
    return PRESET_TEMPLATES.get(preset, {}).get(task) or DEFAULT_TEMPLATES[task]


#: The memory-clinic cohort appended after each site's own subjects (task → preset →
#: part → group → count). ``holdout``: labelled scans of every holdout site; ``train``:
#: labelled scans of every training site; ``first_train_unlabelled``: scans of the first
#: training site that are *not* in its labels.csv (the disorders never appear in a
#: training label). Presets without an entry use ``default``. Switched off by
#: ``memory_clinic=False`` (``fedmi-sim generate --no-memory-clinic``).
MEMORY_CLINIC: dict[str, dict[str, dict[str, dict[str, int]]]] = {
    "fdg-ad": {
        "default": {
            "holdout": {"CN": 24, "FTD": 12, "DLB": 12},
            "train": {"CN": 10},
            "first_train_unlabelled": {"FTD": 6, "DLB": 6},
        },
        "tiny": {
            "holdout": {"CN": 3, "FTD": 2, "DLB": 2},
            "train": {"CN": 3},
            "first_train_unlabelled": {"FTD": 1, "DLB": 1},
        },
    },
}


def memory_clinic_cohort(
    task: str, preset: str, role: str, first_train: bool
) -> list[tuple[str, bool]]:
    """``(group, labelled)`` of each memory-clinic cohort scan of a site, in order.

    ``role`` is the site's role (``train``/``holdout``); ``first_train`` says whether it is
    the federation's first training site. Empty for tasks without a cohort.
    """
    table = MEMORY_CLINIC.get(task)
    if not table:
        return []
    parts = table.get(preset) or table["default"]
    out: list[tuple[str, bool]] = []
    for group, n in parts["holdout" if role == "holdout" else "train"].items():
        out += [(group, True)] * n
    if role != "holdout" and first_train:
        for group, n in parts["first_train_unlabelled"].items():
            out += [(group, False)] * n
    return out


def archive_size(factor: float, n_labelled: int) -> int:
    """Scans in a site's unlabelled archive: ``round(factor × n_labelled)``.

    Parameters
    ----------
    factor
        Archive size as a multiple of the site's labelled scan count (finite, ≥ 0; see
        :func:`check_archive_factor`).
    n_labelled
        The site's labels.csv rows (its own subjects and labelled memory-clinic scans).

    Returns
    -------
    int
        Python's ``round`` (halves to even) of the product.
    """
    return int(round(factor * n_labelled))


def check_archive_factor(value: object, name: str = "unlabelled_archive") -> float:
    """``value`` as an archive factor, or a ``ValueError`` naming ``name``.

    Parameters
    ----------
    value
        A real number (``int`` or ``float``, not ``bool``), finite and ≥ 0.
    name
        The option's name in the error (``--unlabelled-archive`` at the command line).

    Returns
    -------
    float
        The factor.

    Raises
    ------
    ValueError
        ``value`` is not a number, is negative, NaN or infinite.
    """
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{name} must be a number >= 0, not {value!r}")
    factor = float(value)
    if not math.isfinite(factor) or factor < 0:
        raise ValueError(f"{name} must be a finite number >= 0, not {value!r}")
    return factor
