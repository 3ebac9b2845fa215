"""FDG PET in Alzheimer's disease (task ``fdg-ad``): maps, clinical draws and activity.

Numbers follow PHANTOM_SPEC.md §2.1 (tissue ratios) and §2.3 (hypometabolism pattern and
magnitudes). A subject is the healthy FDG map scaled by a global level (WM SUV), plus
regional variation, frontal ageing and an AD pattern per hemisphere weighted by severity.
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

#: Regions whose true means are stored with the basis (for truth tables and checks).
MEAN_REGIONS = ("pons", "posterior_cingulate", "precuneus", "cortex_composite", "whole_cerebellum")


def basis_maps(
    grid: Grid, tissue: dict[str, np.ndarray], head: np.ndarray
) -> dict[str, np.ndarray]:
    """``base`` (3·GM·m + WM + 0.05·CSF), ``wm``, ``head``, ``var:<group>``, ``ad_L``/``ad_R``.

    ``m`` is 0.8 in cerebellar cortex, 0.95 in striatum/thalamus, 1.1 in occipital cortex,
    ×0.3 inside the pons so the pons reference is WM-like; ``var:<group>`` is 3·GM inside
    each :data:`~fedmi.simulations.phantom.truth.VARIATION_GROUPS` group and ``ad_<side>``
    is 3·GM × the smoothed :data:`FDG_AD_WEIGHTS` pattern in one hemisphere.
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


def coefficients(t: SubjectTruth, basis: Basis) -> np.ndarray:
    """Basis coefficients (SUV) of ``t``: frontal ageing −1.5 %/decade around 70, and the
    AD pattern stronger on the side ``t.asymmetry`` points to."""
    c = np.zeros(len(basis.names), dtype=np.float64)
    ix = basis.index
    g = t.global_level
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
    return c
