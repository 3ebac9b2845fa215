"""123I-FP-CIT (DaT) SPECT in Parkinson's disease (task ``dat-pd``).

Numbers follow PHANTOM_SPEC.md §2.4 and §6. A subject is a uniform background (occipital
reference) plus one map per striatal sub-region at its true striatum : background ratio;
PD loses binding posterior putamen first, more on the affected side.
"""

from __future__ import annotations

import numpy as np

from fedmi.shared.grid import Grid
from fedmi.simulations.phantom.basis import Basis, region_map
from fedmi.simulations.phantom.truth import SubjectTruth

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

#: Regions whose true means are stored with the basis (the reference and the striatum).
MEAN_REGIONS = ("occipital", *DAT_SUBREGIONS)


def basis_maps(
    grid: Grid, tissue: dict[str, np.ndarray], head: np.ndarray
) -> dict[str, np.ndarray]:
    """``bg`` (GM + WM + 0.2·CSF), ``head`` and one map per :data:`DAT_SUBREGIONS`."""
    maps: dict[str, np.ndarray] = {}
    maps["bg"] = tissue["gm"] + tissue["wm"] + 0.2 * tissue["csf"]
    maps["head"] = head
    for name in DAT_SUBREGIONS:
        maps[name] = region_map(name, grid)
    return maps


def draw(t: SubjectTruth, rng: np.random.Generator, label_noise: float) -> None:
    """True striatal ratios (age, sex, PD loss and side), SWEDD label noise, global level.

    ``label_noise`` is the fraction of clinical PD with a normal scan (SWEDD).
    """
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


def coefficients(t: SubjectTruth, basis: Basis) -> np.ndarray:
    """Basis coefficients (arbitrary activity units) of ``t``: background ``global_level``,
    each sub-region ``global_level × (ratio − 1)`` above it."""
    c = np.zeros(len(basis.names), dtype=np.float64)
    ix = basis.index
    g = t.global_level
    c[ix("bg")] = g
    c[ix("head")] = g * 0.6 * (1.0 + t.regional.get("head", 0.0))
    for name, r in (t.dat_ratio_true or {}).items():
        c[ix(name)] = g * (r - 1.0)
    return c
