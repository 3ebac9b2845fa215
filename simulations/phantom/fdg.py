"""FDG PET in a memory clinic (task ``fdg-ad``): maps, clinical draws and activity.

Numbers follow PHANTOM_SPEC.md §2.1 (tissue ratios) and §2.3 (AD hypometabolism pattern
and magnitudes); the regional ageing slopes and the bvFTD and DLB patterns, with their
sources and evidence tags, are in ``docs/phantom-disorders.md``. A subject is the healthy
FDG map scaled by a global level (WM SUV), plus regional variation, regional ageing
(:data:`FDG_AGING_SLOPES`) and one disease pattern per hemisphere weighted by severity:
AD (:data:`FDG_AD_WEIGHTS`, groups CN/MCI/AD), bvFTD (:data:`FDG_FTD_WEIGHTS`, group
``FTD``) or DLB (:data:`FDG_DLB_WEIGHTS`, group ``DLB``).
"""

from __future__ import annotations

import math

import numpy as np

from fedmi.shared.grid import Grid
from fedmi.simulations.phantom.basis import (
    Basis,
    group_map,
    hemisphere,
    region_map,
    smooth,
)
from fedmi.simulations.phantom.truth import VARIATION_GROUPS, SubjectTruth

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

#: Relative FDG change with age in %/decade around 70 years (docs/phantom-disorders.md):
#: medial/lateral frontal, orbitofrontal, anterior cingulate and insula decline most;
#: lateral temporal/parietal less; occipital, sensorimotor, cerebellum and deep nuclei
#: are relatively preserved. The regions are disjoint AAL3 composites, so inside a region
#: the ageing change of the grey-matter uptake is exactly its slope.
FDG_AGING_SLOPES = {
    "frontal_medial": -4.0,
    "anterior_cingulate": -4.0,
    "frontal_lateral": -3.5,
    "orbitofrontal": -3.5,
    "insula": -3.0,
    "cingulate_mid": -2.0,
    "temporal_sup": -2.0,
    "temporal_pole": -2.0,
    "temporal_lateral": -1.5,
    "parietal_inf": -1.5,
    "angular": -1.5,
    "supramarginal": -1.5,
    "parietal_sup": -1.5,
    "posterior_cingulate": -1.0,
    "precuneus": -1.0,
    "caudate": -1.0,
    "hippocampus": -0.5,
    "sensorimotor": -0.5,
    "occipital_association": -0.5,
    "calcarine": 0.0,
    "putamen": 0.0,
    "thalamus": 0.0,
    "cerebellum_gm": 0.0,
}
#: Age (years) at which the ageing term is zero.
FDG_AGING_CENTRE = 70.0

#: Behavioural-variant FTD: fractional hypometabolism per unit severity (severity 1 ≈
#: mild-to-moderate bvFTD), frontal, anterior cingulate, insula, temporal pole and caudate.
FDG_FTD_WEIGHTS = {
    "orbitofrontal": 0.28,
    "anterior_cingulate": 0.28,
    "frontal_medial": 0.25,
    "frontal_lateral": 0.20,
    "insula": 0.20,
    "temporal_pole": 0.22,
    "caudate": 0.18,
    "cingulate_mid": 0.10,
    "temporal_lateral": 0.06,
    "thalamus": 0.05,
}

#: Dementia with Lewy bodies: occipital (primary visual and association) hypometabolism,
#: AD-like parietal/temporal decrease and a relatively spared posterior cingulate (the
#: cingulate island sign) and medial temporal lobe.
FDG_DLB_WEIGHTS = {
    "calcarine": 0.20,
    "occipital_association": 0.22,
    "parietal_inf": 0.18,
    "angular": 0.18,
    "supramarginal": 0.15,
    "parietal_sup": 0.12,
    "precuneus": 0.15,
    "temporal_lateral": 0.12,
    "frontal_lateral": 0.05,
    "posterior_cingulate": 0.04,
    "hippocampus": 0.04,
}

#: Disease patterns by clinical group (every other group uses the AD pattern).
DISORDER_WEIGHTS = {"FTD": FDG_FTD_WEIGHTS, "DLB": FDG_DLB_WEIGHTS}
#: Age ranges (uniform, years) of the memory-clinic cohort's groups.
COHORT_AGES = {"CN": (50.0, 90.0), "FTD": (50.0, 75.0), "DLB": (62.0, 88.0)}

#: Regions whose true means are stored with the basis (for truth tables and checks).
MEAN_REGIONS = ("pons", "posterior_cingulate", "precuneus", "cortex_composite", "whole_cerebellum")


def basis_maps(
    grid: Grid, tissue: dict[str, np.ndarray], head: np.ndarray
) -> dict[str, np.ndarray]:
    """``base`` (3·GM·m + WM + 0.05·CSF), ``wm``, ``head``, ``var:<group>``, ``ad_L``/``ad_R``,
    ``aging``, ``ftd_L``/``ftd_R`` and ``dlb_L``/``dlb_R``.

    ``m`` is 0.8 in cerebellar cortex, 0.95 in striatum/thalamus, 1.1 in occipital cortex,
    ×0.3 inside the pons so the pons reference is WM-like; ``var:<group>`` is 3·GM inside
    each :data:`~fedmi.simulations.phantom.truth.VARIATION_GROUPS` group and ``ad_<side>``
    is 3·GM × the smoothed :data:`FDG_AD_WEIGHTS` pattern in one hemisphere. ``aging`` is
    3·GM·m × Σ slope/100 × region (:data:`FDG_AGING_SLOPES`, per decade) and ``ftd_<side>``
    / ``dlb_<side>`` are 3·GM·m × Σ weight × region in one hemisphere (unsmoothed, so the
    change of the grey-matter uptake inside a region is exactly its table value).
    """
    gm, wm, csf = tissue["gm"], tissue["wm"], tissue["csf"]
    maps: dict[str, np.ndarray] = {}
    cb = region_map("cerebellum_gm", grid)
    deep = group_map(("striatum", "thalamus"), grid)
    occ = region_map("occipital", grid)
    # Brainstem (pons) uptake is WM-like, whatever the template's GM probability says.
    pons = region_map("pons", grid)
    mod = (1.0 - 0.2 * cb - 0.05 * deep + 0.1 * occ) * (1.0 - 0.7 * pons)
    maps["base"] = 3.0 * gm * mod + wm + 0.05 * csf
    maps["wm"] = wm.copy()
    maps["head"] = head
    for g, names in VARIATION_GROUPS.items():
        maps[f"var:{g}"] = 3.0 * gm * group_map(names, grid)
    pattern = sum(w * region_map(n, grid) for n, w in FDG_AD_WEIGHTS.items())
    pattern = smooth(pattern, grid, 4.0)
    for side in ("L", "R"):
        maps[f"ad_{side}"] = 3.0 * gm * pattern * hemisphere(grid, side)
    gm_base = 3.0 * gm * mod
    maps["aging"] = gm_base * sum(
        (s / 100.0) * region_map(n, grid) for n, s in FDG_AGING_SLOPES.items() if s
    )
    for key, weights in (("ftd", FDG_FTD_WEIGHTS), ("dlb", FDG_DLB_WEIGHTS)):
        pat = gm_base * sum(w * region_map(n, grid) for n, w in weights.items())
        for side in ("L", "R"):
            maps[f"{key}_{side}"] = pat * hemisphere(grid, side)
    return maps


def draw(t: SubjectTruth, rng: np.random.Generator, label_noise: float) -> None:
    """Global level, AD severity, MCI conversion and label noise of ``t``.

    ``label_noise`` is the fraction of clinical AD with no AD pathology (severity 0).
    """
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


def draw_cohort(t: SubjectTruth, rng: np.random.Generator) -> None:
    """Global level and disorder severity of a memory-clinic cohort subject ``t``.

    ``CN``: an ageing normal (severity 0); ``FTD``/``DLB``: severity U(0.6, 1.2) of
    :data:`FDG_FTD_WEIGHTS`/:data:`FDG_DLB_WEIGHTS`. bvFTD is asymmetric: the stronger
    side is the left with probability 0.65, 1.2–1.6× the other one (``t.asymmetry``).
    """
    t.global_level = float(rng.lognormal(np.log(2.6), 0.15))
    if t.group == "CN":
        t.severity = 0.0
    elif t.group in DISORDER_WEIGHTS:
        t.severity = round(float(rng.uniform(0.6, 1.2)), 4)
        if t.group == "FTD":
            side = 1.0 if rng.random() < 0.65 else -1.0
            t.asymmetry = side * float(rng.uniform(0.2, 0.6))
    else:
        raise ValueError(f"no memory-clinic cohort group {t.group!r} in fdg-ad")


def coefficients(t: SubjectTruth, basis: Basis) -> np.ndarray:
    """Basis coefficients (SUV) of ``t``: regional ageing (:data:`FDG_AGING_SLOPES` per
    decade from 70 years), and the disease pattern of its group (AD unless ``FTD``/``DLB``)
    stronger on the side ``t.asymmetry`` points to."""
    c = np.zeros(len(basis.names), dtype=np.float64)
    ix = basis.index
    g = t.global_level
    c[ix("base")] = g
    c[ix("wm")] = g * t.regional.get("wm", 0.0)
    c[ix("head")] = g * 0.25 * (1.0 + t.regional.get("head", 0.0))
    for grp in VARIATION_GROUPS:
        c[ix(f"var:{grp}")] = g * t.regional.get(grp, 0.0)
    c[ix("aging")] = g * (t.age - FDG_AGING_CENTRE) / 10.0
    sev = t.severity or 0.0
    key = t.group.lower() if t.group in DISORDER_WEIGHTS else "ad"
    c[ix(f"{key}_L")] = -g * sev * (1.0 + max(t.asymmetry, 0.0))
    c[ix(f"{key}_R")] = -g * sev * (1.0 + max(-t.asymmetry, 0.0))
    return c
