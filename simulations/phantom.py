"""Digital brain phantoms: disease models, subject truth and rendering on a scanner grid.

Numbers follow PHANTOM_SPEC.md §2 (patterns, magnitudes) and §6 (generator recipe).

How a subject is made
---------------------
1. A *basis* of fixed maps on an MNI working grid (default 2 mm) is built once per task
   from :func:`fedmi.shared.anatomy.tissue_on_grid` and :func:`fedmi.shared.anatomy.region_weights`:
   tissue maps, a scalp shell, regional maps (for inter-subject variation) and disease
   pattern maps. Every subject's true (pre-PVE) activity is a *linear* combination
   ``Σ_k c_k · map_k`` of these maps.
2. :func:`draw_subject` draws the subject's clinical truth (group, age, sex, severity,
   Centiloid, DaT binding ...) and :func:`subject_coefficients` turns it into the
   coefficients ``c_k`` (in SUV for PET, arbitrary activity units for SPECT).
3. Blurring with the scanner PSF (an isotropic Gaussian) is linear and commutes with the
   rigid head pose, so each site blurs the basis once (:meth:`Basis.blurred`) and each
   subject is a cheap weighted sum of blurred maps.
4. :func:`render_on_scanner` resamples that sum onto the scanner grid through the
   subject's anatomical scale, head pose and the site's table offset
   (:func:`mni_to_scanner_lps`), then :func:`add_pet_noise` / :func:`spect_counts` add
   noise.

Frames: the working grid is MNI RAS mm; the scanner world frame is DICOM LPS:
``LPS = diag(−1, −1, 1) · RAS_head + table_offset``.
"""

from __future__ import annotations

import functools
import math
from dataclasses import asdict, dataclass, field

import numpy as np
from scipy import ndimage

from fedmi.shared import anatomy
from fedmi.shared.grid import Grid

#: 2 mm MNI working grid, aligned with the 1 mm nilearn grid (voxel 0 covers −98…−96 mm).
WORKING_GRID_2MM = Grid(shape=(98, 116, 94), spacing=(2.0, 2.0, 2.0), origin=(-97.0, -133.0, -71.0))
#: 3 mm working grid for the ``tiny`` preset.
WORKING_GRID_3MM = Grid(shape=(65, 77, 63), spacing=(3.0, 3.0, 3.0), origin=(-96.5, -132.5, -70.5))

#: MNI point about which subject size varies and the head is rotated (roughly the
#: centre of the brain).
BRAIN_CENTRE_MNI = (0.0, -18.0, 12.0)

# --------------------------------------------------------------------------------------
# Amyloid: Centiloid ↔ tracer SUVR (standard Centiloid pipeline, whole-cerebellum ref.)
# --------------------------------------------------------------------------------------

#: ``CL = slope × SUVR + intercept`` per tracer (PHANTOM_SPEC §2.2). PiB uses the Klunk
#: 2015 anchors (YC-0 = 1.009, AD-100 = 2.076); florbetapir Navitsky 2018; florbetaben
#: Rowe 2017; flutemetamol Battle 2018.
CENTILOID_EQUATIONS: dict[str, tuple[float, float]] = {
    "pib": (100.0 / (2.076 - 1.009), -100.0 * 1.009 / (2.076 - 1.009)),
    "florbetapir": (175.4, -182.3),
    "florbetaben": (153.4, -154.9),
    "flutemetamol": (121.42, -121.16),
}

#: Label threshold: amyloid ``positive`` when the (read) Centiloid is ≥ 24. It sits
#: between the Royse 2021 quantitative cut-points (FBB 18 CL, FBP 20 CL) and the visual
#: read threshold (~26 CL, Amadoru 2020), i.e. in the 12–30 CL grey zone.
AMYLOID_THRESHOLD_CL = 24.0

#: True (pre-PVE) white-matter / cortex ratio in Aβ− subjects (PHANTOM_SPEC §6).
AMYLOID_WM_RATIO = {"pib": 1.3, "florbetapir": 1.6, "florbetaben": 1.5, "flutemetamol": 1.4}
#: Typical whole-cerebellum SUV at the usual scan time (design value).
AMYLOID_WC_SUV = {"pib": 1.3, "florbetapir": 1.1, "florbetaben": 1.1, "flutemetamol": 1.2}
#: Regional weights of the cortical excess of an Aβ+ subject (PHANTOM_SPEC §2.2).
AMYLOID_REGION_WEIGHTS = {
    "precuneus": 1.2,
    "posterior_cingulate": 1.2,
    "frontal": 1.1,
    "orbitofrontal": 1.1,
    "anterior_cingulate": 1.1,
    "temporal_lateral": 1.0,
    "temporal_sup": 1.0,
    "parietal_inf": 1.0,
    "angular": 1.0,
    "supramarginal": 1.0,
    "parietal_sup": 1.0,
    "striatum": 0.75,
    "occipital": 0.6,
    "sensorimotor": 0.5,
    "hippocampus": 0.3,
}


def suvr_from_centiloid(cl: float | np.ndarray, tracer: str) -> float | np.ndarray:
    """Cortical SUVR (whole-cerebellum reference) of a Centiloid value for ``tracer``."""
    a, b = CENTILOID_EQUATIONS[tracer]
    return (
        (np.asarray(cl, dtype=np.float64) - b) / a if isinstance(cl, np.ndarray) else (cl - b) / a
    )


def centiloid_from_suvr(suvr: float | np.ndarray, tracer: str) -> float | np.ndarray:
    """Centiloid of a cortical SUVR (whole-cerebellum reference) for ``tracer``."""
    a, b = CENTILOID_EQUATIONS[tracer]
    return a * suvr + b


# --------------------------------------------------------------------------------------
# FDG and DaT parameters
# --------------------------------------------------------------------------------------

#: Fractional hypometabolism per unit severity (severity 1 ≈ mild-to-moderate AD;
#: PHANTOM_SPEC §2.3: PCC/precuneus and parietal −15…−25 % in mild AD).
FDG_AD_WEIGHTS = {
    "posterior_cingulate": 0.22,
    "precuneus": 0.20,
    "angular": 0.22,
    "supramarginal": 0.17,
    "parietal_inf": 0.20,
    "parietal_sup": 0.08,
    "temporal_lateral": 0.16,
    "hippocampus": 0.10,
    "frontal": 0.05,
}
#: Region groups used for independent inter-subject variation (CoV 5–8 %).
VARIATION_GROUPS: dict[str, tuple[str, ...]] = {
    "frontal": ("frontal", "orbitofrontal", "anterior_cingulate"),
    "pcc_precuneus": ("posterior_cingulate", "precuneus"),
    "parietal": ("parietal_inf", "angular", "supramarginal", "parietal_sup"),
    "temporal": ("temporal_lateral", "temporal_sup"),
    "medial_temporal": ("hippocampus",),
    "sensorimotor": ("sensorimotor",),
    "occipital": ("occipital",),
    "cerebellum": ("cerebellum_gm",),
    "deep": ("thalamus", "striatum"),
}
#: DaT striatal sub-regions (anatomy region names).
DAT_SUBREGIONS = (
    "caudate_L",
    "caudate_R",
    "putamen_ant_L",
    "putamen_ant_R",
    "putamen_post_L",
    "putamen_post_R",
)
#: Young healthy true striatum : background ratio (PHANTOM_SPEC §6).
DAT_TRUE_RATIO_YOUNG = 7.5


# --------------------------------------------------------------------------------------
# Basis maps
# --------------------------------------------------------------------------------------


@dataclass
class Basis:
    """Fixed maps on a working grid; a subject is ``coefficients @ maps``.

    Attributes
    ----------
    task
        Task name.
    grid
        MNI working grid (RAS mm).
    names
        Component names, one per map.
    maps
        float32 array ``(K, *grid.shape)``.
    region_means
        Region name → ``(K,)`` mean of each (unblurred) map inside the region weights; the
        true regional mean of a subject is ``region_means[r] @ coefficients``.
    fwhm_mm
        PSF FWHM the maps have been blurred with (0 = true anatomy).
    """

    task: str
    grid: Grid
    names: list[str]
    maps: np.ndarray
    region_means: dict[str, np.ndarray] = field(default_factory=dict)
    fwhm_mm: float = 0.0

    def index(self, name: str) -> int:
        """Position of a component."""
        return self.names.index(name)

    def combine(self, coefficients: np.ndarray) -> np.ndarray:
        """``Σ_k c_k · map_k`` as a float32 volume on :attr:`grid`."""
        k = len(self.names)
        flat = self.maps.reshape(k, -1)
        out = np.asarray(coefficients, dtype=np.float32) @ flat
        return out.reshape(self.grid.shape)

    def blurred(self, fwhm_mm: float) -> Basis:
        """A copy with every map blurred by an isotropic Gaussian PSF of ``fwhm_mm``.

        The working grid already carries about one voxel of blur (box-averaged anatomy),
        so the Gaussian's FWHM is ``sqrt(fwhm² − voxel²)`` and the total is ≈ ``fwhm_mm``.
        """
        spacing = np.asarray(self.grid.spacing)
        extra = max(fwhm_mm**2 - float(spacing.mean()) ** 2, 0.0)
        sigma = math.sqrt(extra) / (2.0 * math.sqrt(2.0 * math.log(2.0))) / spacing
        maps = np.empty_like(self.maps)
        for k in range(len(self.names)):
            if extra > 0:
                ndimage.gaussian_filter(self.maps[k], sigma, output=maps[k], truncate=3.0)
            else:
                maps[k] = self.maps[k]
        return Basis(self.task, self.grid, self.names, maps, self.region_means, fwhm_mm)


def _rw(name: str, grid: Grid) -> np.ndarray:
    return np.asarray(anatomy.region_weights(name, grid), dtype=np.float32)


def _hemisphere(grid: Grid, side: str) -> np.ndarray:
    x = grid.world_coordinates()[0]
    # Smooth left/right split (RAS: x < 0 is left), 4 mm logistic ramp at the midline.
    left = 1.0 / (1.0 + np.exp(np.clip(x / 2.0, -50, 50)))
    return (left if side == "L" else 1.0 - left).astype(np.float32)


def _head_shell(grid: Grid, tissue: dict[str, np.ndarray]) -> np.ndarray:
    brain = (tissue["gm"] + tissue["wm"] + tissue["csf"]) > 0.3
    sp = float(np.mean(grid.spacing))
    outer = ndimage.binary_dilation(brain, iterations=max(1, round(12.0 / sp)))
    inner = ndimage.binary_dilation(brain, iterations=max(1, round(4.0 / sp)))
    shell = (outer & ~inner).astype(np.float32)
    return ndimage.gaussian_filter(shell, 2.0 / sp).astype(np.float32)


def _smooth(vol: np.ndarray, grid: Grid, sigma_mm: float) -> np.ndarray:
    return ndimage.gaussian_filter(vol, sigma_mm / np.asarray(grid.spacing)).astype(np.float32)


def _group(names: tuple[str, ...], grid: Grid) -> np.ndarray:
    return np.clip(sum(_rw(n, grid) for n in names), 0.0, 1.0).astype(np.float32)


#: Regions whose true means are stored with the basis (for truth tables and checks).
_MEAN_REGIONS = {
    "fdg-ad": ("pons", "posterior_cingulate", "precuneus", "cortex_composite", "whole_cerebellum"),
    "amyloid": ("cortex_composite", "whole_cerebellum"),
    "dat-pd": ("occipital", *DAT_SUBREGIONS),
}


@functools.lru_cache(maxsize=4)
def build_basis(task: str, grid: Grid = WORKING_GRID_2MM) -> Basis:
    """The fixed maps of ``task`` on ``grid`` (cached per process).

    Components
    ----------
    ``fdg-ad``
        ``base`` (3·GM·m + WM + 0.05·CSF, with m = 0.8 in cerebellar cortex, 0.95 in
        striatum/thalamus, 1.1 in occipital cortex,
        ×0.3 inside the pons so the pons reference is WM-like), ``wm``, ``head`` (scalp shell),
        ``var:<group>`` (3·GM inside each :data:`VARIATION_GROUPS` group) and
        ``ad_L``/``ad_R`` (3·GM × the smoothed :data:`FDG_AD_WEIGHTS` pattern per
        hemisphere).
    ``amyloid``
        ``ctx_gm``, ``cb_gm``, ``deep_gm``, ``wm``, ``csf``, ``head``, ``excess`` (GM × the
        smoothed :data:`AMYLOID_REGION_WEIGHTS` pattern, cerebellum excluded) and
        ``var:<group>``.
    ``dat-pd``
        ``bg`` (GM + WM + 0.2·CSF), ``head`` and one map per :data:`DAT_SUBREGIONS`.
    """
    tissue = {k: np.asarray(v, dtype=np.float32) for k, v in anatomy.tissue_on_grid(grid).items()}
    gm, wm, csf = tissue["gm"], tissue["wm"], tissue["csf"]
    head = _head_shell(grid, tissue)
    maps: dict[str, np.ndarray] = {}
    if task == "fdg-ad":
        cb = _rw("cerebellum_gm", grid)
        deep = _group(("striatum", "thalamus"), grid)
        occ = _rw("occipital", grid)
        # Brainstem (pons) uptake is WM-like, whatever the template's GM probability says.
        pons = _rw("pons", grid)
        mod = (1.0 - 0.2 * cb - 0.05 * deep + 0.1 * occ) * (1.0 - 0.7 * pons)
        maps["base"] = 3.0 * gm * mod + wm + 0.05 * csf
        maps["wm"] = wm.copy()
        maps["head"] = head
        for g, names in VARIATION_GROUPS.items():
            maps[f"var:{g}"] = 3.0 * gm * _group(names, grid)
        pattern = sum(w * _rw(n, grid) for n, w in FDG_AD_WEIGHTS.items())
        pattern = _smooth(pattern, grid, 4.0)
        for side in ("L", "R"):
            maps[f"ad_{side}"] = 3.0 * gm * pattern * _hemisphere(grid, side)
    elif task == "amyloid":
        cb = _rw("cerebellum_gm", grid)
        deep = _group(("striatum", "thalamus"), grid)
        maps["ctx_gm"] = gm * np.clip(1.0 - cb - deep, 0.0, 1.0)
        maps["cb_gm"] = gm * cb
        maps["deep_gm"] = gm * deep
        maps["wm"] = wm.copy()
        maps["csf"] = csf.copy()
        maps["head"] = head
        pattern = sum(w * _rw(n, grid) for n, w in AMYLOID_REGION_WEIGHTS.items())
        maps["excess"] = gm * _smooth(pattern, grid, 3.0) * np.clip(1.0 - cb, 0.0, 1.0)
        for g, names in VARIATION_GROUPS.items():
            maps[f"var:{g}"] = gm * _group(names, grid)
    elif task == "dat-pd":
        maps["bg"] = gm + wm + 0.2 * csf
        maps["head"] = head
        for name in DAT_SUBREGIONS:
            maps[name] = _rw(name, grid)
    else:
        raise ValueError(f"unknown task {task!r}")
    names = list(maps)
    stack = np.stack([maps[n].astype(np.float32) for n in names])
    means = {}
    for r in _MEAN_REGIONS[task]:
        w = _rw(r, grid).ravel().astype(np.float64)
        flat = stack.reshape(len(names), -1)
        means[r] = np.array([np.dot(flat[k].astype(np.float64), w) for k in range(len(names))])
        means[r] /= float(w.sum())
    stack.setflags(write=False)
    return Basis(task, grid, names, stack, means)


# --------------------------------------------------------------------------------------
# Subject truth
# --------------------------------------------------------------------------------------


@dataclass
class SubjectTruth:
    """Generator truth of one subject (a row of ``_truth/<site>.csv``).

    ``group`` is the clinical group (CN/MCI/AD or HC/PD); ``label`` is what the site's
    labels.csv says (after label noise). Task-specific fields are ``None`` when unused.
    """

    task: str
    group: str
    label: str
    age: float
    sex: str
    weight_kg: float
    height_m: float
    # fdg-ad
    severity: float | None = None
    converter: bool | None = None
    months_to_conversion: float | None = None
    # amyloid
    tracer: str | None = None
    centiloid: float | None = None
    suvr_true: float | None = None
    amyloid_positive_true: bool | None = None
    # dat-pd
    dat_ratio_true: dict[str, float] | None = None
    affected_side: str | None = None
    swedd: bool | None = None
    # both
    label_noise: bool = False
    global_level: float = 1.0
    regional: dict[str, float] = field(default_factory=dict)
    asymmetry: float = 0.0
    scale: tuple[float, float, float] = (1.0, 1.0, 1.0)
    rotation_deg: tuple[float, float, float] = (0.0, 0.0, 0.0)
    shift_mm: tuple[float, float, float] = (0.0, 0.0, 0.0)

    def row(self) -> dict[str, object]:
        """Flat dict for the truth CSV (nested DaT ratios become ``dat_<region>`` columns)."""
        d = asdict(self)
        ratios = d.pop("dat_ratio_true") or {}
        d.pop("regional")
        d["global_level"] = round(d["global_level"], 5)
        d["asymmetry"] = round(d["asymmetry"], 4)
        for k in ("scale", "rotation_deg", "shift_mm"):
            d[k] = ";".join(f"{v:.4g}" for v in d[k])
        for r, v in ratios.items():
            d[f"dat_ratio_{r}"] = round(v, 4)
        if ratios:
            for side in ("L", "R"):
                put = (ratios[f"putamen_ant_{side}"] + ratios[f"putamen_post_{side}"]) / 2.0
                d[f"putamen_sbr_true_{side}"] = round(put - 1.0, 4)
        return d


def _trunc_normal(rng: np.random.Generator, mean: float, sd: float, lo: float, hi: float) -> float:
    for _ in range(100):
        v = rng.normal(mean, sd)
        if lo <= v <= hi:
            return float(v)
    return float(np.clip(mean, lo, hi))


def draw_subject(
    task: str,
    rng: np.random.Generator,
    *,
    group_probs: dict[str, float],
    label_noise: float = 0.1,
    age_shift: float = 0.0,
    female_frac: float = 0.5,
    tracer: str | None = None,
    max_rotation_deg: float = 5.0,
    max_shift_mm: float = 8.0,
) -> SubjectTruth:
    """Draw one subject's clinical truth and head pose.

    Parameters
    ----------
    task
        ``fdg-ad``, ``amyloid`` or ``dat-pd``.
    rng
        The subject's own generator (seeded from ``[seed, site, subject]``).
    group_probs
        Clinical group → probability (CN/MCI/AD, or HC/PD).
    label_noise
        fdg-ad: fraction of clinical AD with no AD pathology (severity 0); amyloid: chance
        that the read label is flipped; dat-pd: fraction of PD with a normal scan (SWEDD).
    age_shift, female_frac
        Site covariate shift.
    tracer
        Amyloid tracer key of the site.
    """
    groups = list(group_probs)
    p = np.asarray([group_probs[g] for g in groups], dtype=np.float64)
    group = str(groups[int(rng.choice(len(groups), p=p / p.sum()))])
    sex = "F" if rng.random() < female_frac else "M"
    base_age = {"CN": 69.0, "MCI": 72.0, "AD": 74.0, "HC": 61.0, "PD": 63.0}[group]
    age = _trunc_normal(rng, base_age + age_shift, 7.0, 45.0, 92.0)
    weight = _trunc_normal(rng, 66.0 if sex == "F" else 80.0, 11.0, 42.0, 130.0)
    height = _trunc_normal(rng, 1.63 if sex == "F" else 1.76, 0.07, 1.45, 2.0)
    t = SubjectTruth(
        task=task,
        group=group,
        label=group,
        age=round(age, 1),
        sex=sex,
        weight_kg=round(weight, 1),
        height_m=round(height, 2),
    )
    # Anatomy and regional variation (CoV 5–8 %).
    cov = float(rng.uniform(0.05, 0.08))
    t.regional = {g: float(rng.normal(0.0, cov)) for g in VARIATION_GROUPS}
    t.regional["wm"] = float(rng.normal(0.0, 0.04))
    t.regional["head"] = float(rng.normal(0.0, 0.15))
    iso = float(np.clip(rng.normal(1.0, 0.03), 0.93, 1.07))
    t.scale = tuple(
        round(iso * float(np.clip(rng.normal(1.0, 0.015), 0.96, 1.04)), 4) for _ in range(3)
    )
    t.rotation_deg = tuple(round(float(rng.uniform(-1, 1) * max_rotation_deg), 3) for _ in range(3))
    t.shift_mm = tuple(round(float(rng.uniform(-1, 1) * max_shift_mm), 3) for _ in range(3))
    t.asymmetry = float(rng.uniform(-0.15, 0.15))

    if task == "fdg-ad":
        _draw_fdg(t, rng, label_noise)
    elif task == "amyloid":
        if tracer not in CENTILOID_EQUATIONS:
            raise ValueError(
                f"amyloid needs a tracer in {sorted(CENTILOID_EQUATIONS)}, got {tracer!r}"
            )
        _draw_amyloid(t, rng, label_noise, tracer)
    elif task == "dat-pd":
        _draw_dat(t, rng, label_noise)
    else:
        raise ValueError(f"unknown task {task!r}")
    return t


def _draw_fdg(t: SubjectTruth, rng: np.random.Generator, label_noise: float) -> None:
    t.global_level = float(rng.lognormal(np.log(2.6), 0.15))  # WM SUV (GM ≈ 3×)
    if t.group == "CN":
        # A few cognitively normal people already have subtle AD-like hypometabolism.
        t.severity = float(rng.uniform(0.0, 0.25)) if rng.random() < 0.08 else 0.0
    elif t.group == "AD":
        if rng.random() < label_noise:
            t.severity, t.label_noise = 0.0, True  # clinical AD without AD pathology
        else:
            t.severity = float(rng.uniform(0.6, 1.2))
    else:  # MCI: continuous severity; conversion probability rises with it.
        t.severity = float(rng.uniform(0.15, 0.75)) if rng.random() < 0.6 else 0.0
        p_conv = 1.0 / (1.0 + math.exp(-(-2.2 + 6.0 * t.severity)))
        t.converter = bool(rng.random() < p_conv)
        t.label = "MCI-converter" if t.converter else "MCI-stable"
        if t.converter:
            t.months_to_conversion = round(
                float(np.clip(rng.normal(40 - 35 * t.severity, 6), 6, 48)), 1
            )
    t.severity = round(t.severity, 4)


def _draw_amyloid(
    t: SubjectTruth, rng: np.random.Generator, label_noise: float, tracer: str
) -> None:
    t.tracer = tracer
    a = t.age - 50.0
    p_pos = {"CN": 0.10 + 0.0085 * a, "MCI": 0.27 + 0.011 * a, "AD": 0.88}[t.group]
    positive = rng.random() < float(np.clip(p_pos, 0.02, 0.95))
    if not positive:
        cl = rng.normal(2.0, 6.0)
    elif t.group == "CN":
        cl = rng.lognormal(np.log(35.0), 0.55)
    elif t.group == "MCI":
        cl = _trunc_normal(rng, 65.0, 30.0, 20.0, 180.0)
    else:
        cl = _trunc_normal(rng, 95.0, 35.0, 25.0, 180.0)
    t.centiloid = round(float(cl), 2)
    t.suvr_true = round(float(suvr_from_centiloid(t.centiloid, tracer)), 5)
    t.amyloid_positive_true = bool(t.centiloid >= AMYLOID_THRESHOLD_CL)
    # The site's read: a noisy quantification near the threshold, plus outright errors.
    read = t.centiloid + rng.normal(0.0, 5.0)
    lab = read >= AMYLOID_THRESHOLD_CL
    if rng.random() < label_noise:
        lab = not lab
    t.label = "positive" if lab else "negative"
    t.label_noise = lab != t.amyloid_positive_true
    t.global_level = float(AMYLOID_WC_SUV[tracer] * rng.lognormal(0.0, 0.12))


def _draw_dat(t: SubjectTruth, rng: np.random.Generator, label_noise: float) -> None:
    ratio = DAT_TRUE_RATIO_YOUNG * (1.0 - 0.05 * (t.age - 25.0) / 10.0)
    ratio *= 1.07 if t.sex == "F" else 1.0
    ratio *= float(rng.lognormal(0.0, 0.07))
    rel = {"caudate": 1.05, "putamen_ant": 0.98, "putamen_post": 0.95}
    factors = {f"{r}_{s}": rel[r] for r in rel for s in "LR"}
    t.swedd = False
    if t.group == "PD":
        if rng.random() < label_noise:
            t.swedd, t.label_noise = True, True  # clinically PD, normal DaT scan
        else:
            sev = float(rng.uniform(0.0, 1.0))
            t.severity = round(sev, 4)
            loss = {
                "putamen_post": 0.45 - 0.2 * sev,
                "putamen_ant": 0.65 - 0.2 * sev,
                "caudate": 0.85 - 0.2 * sev,
            }
            side = "L" if rng.random() < 0.5 else "R"
            t.affected_side = side
            extra = float(rng.uniform(0.8, 0.9))
            for r in rel:
                for s in "LR":
                    f = loss[r] * float(rng.normal(1.0, 0.04))
                    factors[f"{r}_{s}"] *= f * (extra if s == side else 1.0)
    t.dat_ratio_true = {
        name: round(1.0 + (ratio - 1.0) * factors[name], 4) for name in DAT_SUBREGIONS
    }
    t.global_level = float(rng.lognormal(0.0, 0.15))


def subject_coefficients(t: SubjectTruth, basis: Basis) -> np.ndarray:
    """Basis coefficients of a subject's true activity (SUV for PET).

    For amyloid the cortical excess is solved so that the *true* (pre-PVE) ratio of the
    ``cortex_composite`` and ``whole_cerebellum`` means equals ``t.suvr_true`` exactly.
    """
    c = np.zeros(len(basis.names), dtype=np.float64)
    ix = basis.index
    g = t.global_level
    if t.task == "fdg-ad":
        c[ix("base")] = g
        c[ix("wm")] = g * t.regional.get("wm", 0.0)
        c[ix("head")] = g * 0.25 * (1.0 + t.regional.get("head", 0.0))
        for grp in VARIATION_GROUPS:
            c[ix(f"var:{grp}")] = g * t.regional.get(grp, 0.0)
        # Ageing: frontal −1.5 %/decade around 70.
        c[ix("var:frontal")] += g * (-0.015 * (t.age - 70.0) / 10.0)
        sev = t.severity or 0.0
        c[ix("ad_L")] = -g * sev * (1.0 + max(t.asymmetry, 0.0))
        c[ix("ad_R")] = -g * sev * (1.0 + max(-t.asymmetry, 0.0))
    elif t.task == "amyloid":
        tracer = t.tracer or "florbetapir"
        c[ix("ctx_gm")] = 1.0
        c[ix("cb_gm")] = 1.0
        c[ix("deep_gm")] = 1.1
        c[ix("wm")] = AMYLOID_WM_RATIO[tracer] * (1.0 + t.regional.get("wm", 0.0))
        c[ix("csf")] = 0.05
        c[ix("head")] = 0.3 * (1.0 + t.regional.get("head", 0.0))
        for grp in VARIATION_GROUPS:
            c[ix(f"var:{grp}")] = 0.7 * t.regional.get(grp, 0.0)
        a = basis.region_means["cortex_composite"]
        b = basis.region_means["whole_cerebellum"]
        target = float(t.suvr_true if t.suvr_true is not None else 1.0)
        k = ix("excess")
        c[k] = 0.0
        c[k] = (target * float(b @ c) - float(a @ c)) / (a[k] - target * b[k])
        c *= g / float(b @ c)
    elif t.task == "dat-pd":
        c[ix("bg")] = g
        c[ix("head")] = g * 0.6 * (1.0 + t.regional.get("head", 0.0))
        for name, r in (t.dat_ratio_true or {}).items():
            c[ix(name)] = g * (r - 1.0)
    else:
        raise ValueError(f"unknown task {t.task!r}")
    return c


# --------------------------------------------------------------------------------------
# Geometry and rendering
# --------------------------------------------------------------------------------------


def _rotation(deg: tuple[float, float, float]) -> np.ndarray:
    ax, ay, az = (math.radians(v) for v in deg)
    rx = np.array([[1, 0, 0], [0, math.cos(ax), -math.sin(ax)], [0, math.sin(ax), math.cos(ax)]])
    ry = np.array([[math.cos(ay), 0, math.sin(ay)], [0, 1, 0], [-math.sin(ay), 0, math.cos(ay)]])
    rz = np.array([[math.cos(az), -math.sin(az), 0], [math.sin(az), math.cos(az), 0], [0, 0, 1]])
    return rz @ ry @ rx


RAS_TO_LPS = np.diag([-1.0, -1.0, 1.0, 1.0])


def mni_to_scanner_lps(
    scale: tuple[float, float, float] = (1.0, 1.0, 1.0),
    rotation_deg: tuple[float, float, float] = (0.0, 0.0, 0.0),
    shift_mm: tuple[float, float, float] = (0.0, 0.0, 0.0),
    table_offset_lps: tuple[float, float, float] = (0.0, 0.0, 0.0),
) -> np.ndarray:
    """4×4 map from template MNI (RAS mm) to the scanner's DICOM LPS frame.

    The subject's head is the template scaled about :data:`BRAIN_CENTRE_MNI`, rotated
    about it (x, then y, then z) and shifted by ``shift_mm`` (RAS); then RAS → LPS and
    the site's table offset (LPS mm).
    """
    c = np.asarray(BRAIN_CENTRE_MNI)
    m = np.eye(4)
    lin = _rotation(rotation_deg) @ np.diag(scale)
    m[:3, :3] = lin
    m[:3, 3] = c - lin @ c + np.asarray(shift_mm)
    off = np.eye(4)
    off[:3, 3] = table_offset_lps
    return off @ RAS_TO_LPS @ m


def scanner_affine(
    shape: tuple[int, int, int],
    spacing: tuple[float, float, float],
    table_offset_lps: tuple[float, float, float] = (0.0, 0.0, 0.0),
    slice_direction: int = 1,
    fov_centre_mni: tuple[float, float, float] = (0.0, -18.0, 12.0),
) -> np.ndarray:
    """Voxel ``[i, j, k]`` → LPS affine of an axial scanner grid centred on the head.

    Rows run along +x LPS (towards the patient's left), columns along +y (posterior);
    ``slice_direction`` +1 puts slice 0 at the feet end, −1 at the head end.
    """
    a = np.diag([spacing[0], spacing[1], spacing[2] * (1 if slice_direction >= 0 else -1), 1.0])
    centre = RAS_TO_LPS[:3, :3] @ np.asarray(fov_centre_mni) + np.asarray(table_offset_lps)
    a[:3, 3] = centre - a[:3, :3] @ ((np.asarray(shape) - 1) / 2.0)
    return a


def render_on_scanner(
    volume: np.ndarray,
    grid: Grid,
    mni_to_lps: np.ndarray,
    shape: tuple[int, int, int],
    affine_lps: np.ndarray,
) -> np.ndarray:
    """Sample a working-grid volume at every scanner voxel (trilinear, 0 outside).

    Returns a float32 ``shape`` array indexed ``[i, j, k]`` like the DICOM writer.
    """
    m = np.linalg.inv(grid.affine) @ np.linalg.inv(mni_to_lps) @ np.asarray(affine_lps)
    return ndimage.affine_transform(
        np.asarray(volume, dtype=np.float32),
        m[:3, :3],
        offset=m[:3, 3],
        output_shape=tuple(shape),
        order=1,
        mode="constant",
        cval=0.0,
        prefilter=False,
    )


def add_pet_noise(vol: np.ndarray, cov: float, rng: np.random.Generator) -> np.ndarray:
    """Signal-dependent, slightly correlated Gaussian noise; clipped at 0.

    The standard deviation is ``cov × sqrt(v × v_ref)`` with ``v_ref`` the mean of the
    voxels above 30 % of the maximum, so the CoV in a uniform region at ``v_ref`` is
    ``cov`` (PHANTOM_SPEC §3.1: 6–14 %).
    """
    v = np.maximum(vol, 0.0)
    hot = v[v > 0.3 * v.max()] if v.max() > 0 else v
    v_ref = float(hot.mean()) if hot.size else 0.0
    z = rng.standard_normal(v.shape, dtype=np.float32)
    z = ndimage.gaussian_filter(z, 0.6, truncate=3.0)
    z /= _smoothed_noise_sd(0.6)
    out = v + cov * np.sqrt(v * v_ref, dtype=np.float32) * z
    return np.maximum(out, 0.0).astype(np.float32)


@functools.lru_cache(maxsize=4)
def _smoothed_noise_sd(sigma: float) -> float:
    delta = np.zeros((15, 15, 15), dtype=np.float64)
    delta[7, 7, 7] = 1.0
    k = ndimage.gaussian_filter(delta, sigma, truncate=3.0)
    return float(np.sqrt((k**2).sum()))


def spect_counts(vol: np.ndarray, total_counts: float, rng: np.random.Generator) -> np.ndarray:
    """Poisson counts with expected total ``total_counts`` (reconstructed-image proxy)."""
    v = np.maximum(np.asarray(vol, dtype=np.float64), 0.0)
    s = v.sum()
    lam = v * (total_counts / s) if s > 0 else v
    return rng.poisson(lam).astype(np.uint16)


def subject_volume(
    truth: SubjectTruth,
    shape: tuple[int, int, int],
    affine_lps: np.ndarray,
    *,
    fwhm_mm: float = 0.0,
    table_offset_lps: tuple[float, float, float] = (0.0, 0.0, 0.0),
    grid: Grid = WORKING_GRID_2MM,
) -> np.ndarray:
    """One subject's noiseless volume on a scanner grid (SUV for PET, activity for NM).

    Convenience for tests; the generator does the same with a per-site blurred basis.
    """
    basis = build_basis(truth.task, grid)
    if fwhm_mm > 0:
        basis = basis.blurred(fwhm_mm)
    vol = basis.combine(subject_coefficients(truth, basis))
    xf = mni_to_scanner_lps(truth.scale, truth.rotation_deg, truth.shift_mm, table_offset_lps)
    return render_on_scanner(vol, grid, xf, shape, affine_lps)
