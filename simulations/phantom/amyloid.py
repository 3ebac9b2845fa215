"""Amyloid PET (task ``amyloid``): Centiloid equations, maps, clinical draws and activity.

Numbers follow PHANTOM_SPEC.md §2.2. The latent burden is drawn in Centiloid and mapped to
the cortical SUVR (whole-cerebellum reference) of the site's tracer, so sites with
different tracers share comparable labels.
"""

from __future__ import annotations

import numpy as np

from fedmi.shared.grid import Grid
from fedmi.simulations.phantom.basis import Basis, group_map, region_map, smooth
from fedmi.simulations.phantom.truth import VARIATION_GROUPS, SubjectTruth, trunc_normal

# --------------------------------------------------------------------------------------
# Centiloid ↔ tracer SUVR (standard Centiloid pipeline, whole-cerebellum reference)
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

#: Regions whose true means are stored with the basis (the SUVR target and reference).
MEAN_REGIONS = ("cortex_composite", "whole_cerebellum")


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
# Phantom
# --------------------------------------------------------------------------------------


def basis_maps(
    grid: Grid, tissue: dict[str, np.ndarray], head: np.ndarray
) -> dict[str, np.ndarray]:
    """``ctx_gm``, ``cb_gm``, ``deep_gm``, ``wm``, ``csf``, ``head``, ``excess``, ``var:<group>``.

    ``excess`` is GM × the smoothed :data:`AMYLOID_REGION_WEIGHTS` pattern, cerebellum
    excluded; ``var:<group>`` is GM inside each
    :data:`~fedmi.simulations.phantom.truth.VARIATION_GROUPS` group.
    """
    gm, wm, csf = tissue["gm"], tissue["wm"], tissue["csf"]
    maps: dict[str, np.ndarray] = {}
    cb = region_map("cerebellum_gm", grid)
    deep = group_map(("striatum", "thalamus"), grid)
    maps["ctx_gm"] = gm * np.clip(1.0 - cb - deep, 0.0, 1.0)
    maps["cb_gm"] = gm * cb
    maps["deep_gm"] = gm * deep
    maps["wm"] = wm.copy()
    maps["csf"] = csf.copy()
    maps["head"] = head
    pattern = sum(w * region_map(n, grid) for n, w in AMYLOID_REGION_WEIGHTS.items())
    maps["excess"] = gm * smooth(pattern, grid, 3.0) * np.clip(1.0 - cb, 0.0, 1.0)
    for g, names in VARIATION_GROUPS.items():
        maps[f"var:{g}"] = gm * group_map(names, grid)
    return maps


def draw(t: SubjectTruth, rng: np.random.Generator, label_noise: float, tracer: str | None) -> None:
    """Centiloid (age-dependent Aβ+ prevalence, Jansen 2015), true SUVR, read label.

    ``label_noise`` is the chance that the site's read flips; ``tracer`` is a key of
    :data:`CENTILOID_EQUATIONS`.
    """
    if tracer not in CENTILOID_EQUATIONS:
        raise ValueError(f"amyloid needs a tracer in {sorted(CENTILOID_EQUATIONS)}, got {tracer!r}")
    t.tracer = tracer
    a = t.age - 50.0
    p_pos = {"CN": 0.10 + 0.0085 * a, "MCI": 0.27 + 0.011 * a, "AD": 0.88}[t.group]
    positive = rng.random() < float(np.clip(p_pos, 0.02, 0.95))
    if not positive:
        cl = rng.normal(2.0, 6.0)
    elif t.group == "CN":
        cl = rng.lognormal(np.log(35.0), 0.55)
    elif t.group == "MCI":
        cl = trunc_normal(rng, 65.0, 30.0, 20.0, 180.0)
    else:
        cl = trunc_normal(rng, 95.0, 35.0, 25.0, 180.0)
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


def coefficients(t: SubjectTruth, basis: Basis) -> np.ndarray:
    """Basis coefficients (SUV) of ``t``.

    The cortical excess is solved so that the *true* (pre-PVE) ratio of the
    ``cortex_composite`` and ``whole_cerebellum`` means equals ``t.suvr_true`` exactly,
    then everything is scaled so the whole-cerebellum mean is ``t.global_level``.
    """
    c = np.zeros(len(basis.names), dtype=np.float64)
    ix = basis.index
    g = t.global_level
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
    return c
