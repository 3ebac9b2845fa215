"""A subject's generator truth and the draws every task shares.

:class:`SubjectTruth` is one row of ``_truth/<site>.csv``. :func:`draw_person` draws the
clinical group and demographics, :func:`draw_anatomy` the regional variation, head size and
pose; the task modules then fill in the disease fields. The order of the draws on the
subject's generator is part of the output: changing it changes every generated file.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

from fedmi.simulations.phantom.poses import PoseSettings

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

#: Mean age of each clinical group (before the site's age shift).
_BASE_AGE = {"CN": 69.0, "MCI": 72.0, "AD": 74.0, "HC": 61.0, "PD": 63.0}


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
    # pose settings other than ``legacy`` (simulations/sites/poses.py)
    fov_cut_mm: float = 0.0
    atrophy: float = 0.0

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


def trunc_normal(rng: np.random.Generator, mean: float, sd: float, lo: float, hi: float) -> float:
    """A normal draw inside ``[lo, hi]`` (rejection; the clipped mean after 100 misses)."""
    for _ in range(100):
        v = rng.normal(mean, sd)
        if lo <= v <= hi:
            return float(v)
    return float(np.clip(mean, lo, hi))


def draw_person(
    task: str,
    rng: np.random.Generator,
    group_probs: dict[str, float],
    age_shift: float,
    female_frac: float,
) -> SubjectTruth:
    """Clinical group, sex, age, weight and height (label = group until label noise)."""
    groups = list(group_probs)
    p = np.asarray([group_probs[g] for g in groups], dtype=np.float64)
    group = str(groups[int(rng.choice(len(groups), p=p / p.sum()))])
    sex = "F" if rng.random() < female_frac else "M"
    age = trunc_normal(rng, _BASE_AGE[group] + age_shift, 7.0, 45.0, 92.0)
    weight = trunc_normal(rng, 66.0 if sex == "F" else 80.0, 11.0, 42.0, 130.0)
    height = trunc_normal(rng, 1.63 if sex == "F" else 1.76, 0.07, 1.45, 2.0)
    return SubjectTruth(
        task=task,
        group=group,
        label=group,
        age=round(age, 1),
        sex=sex,
        weight_kg=round(weight, 1),
        height_m=round(height, 2),
    )


def draw_cohort_person(
    task: str,
    rng: np.random.Generator,
    group: str,
    age_range: tuple[float, float],
    female_frac: float,
) -> SubjectTruth:
    """A memory-clinic cohort subject of a given ``group``: sex, age uniform over
    ``age_range``, weight and height (label = group)."""
    sex = "F" if rng.random() < female_frac else "M"
    age = float(rng.uniform(*age_range))
    weight = trunc_normal(rng, 66.0 if sex == "F" else 80.0, 11.0, 42.0, 130.0)
    height = trunc_normal(rng, 1.63 if sex == "F" else 1.76, 0.07, 1.45, 2.0)
    return SubjectTruth(
        task=task,
        group=group,
        label=group,
        age=round(min(age, age_range[1] - 0.05), 1),
        sex=sex,
        weight_kg=round(weight, 1),
        height_m=round(height, 2),
    )


def draw_anatomy(
    t: SubjectTruth, rng: np.random.Generator, max_rotation_deg: float, max_shift_mm: float
) -> None:
    """Regional variation (CoV 5–8 %), head size, pose and hemispheric asymmetry of ``t``."""
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


def draw_pose(t: SubjectTruth, rng: np.random.Generator, pose: PoseSettings) -> None:
    """Head size, rotation and field-of-view cut of ``t`` from its *pose* stream ``rng``.

    Replaces the legacy scale and rotation drawn by :func:`draw_anatomy` (the translation
    stays); nothing is drawn for ``pose.legacy``. Rotations are normals of
    ``pose.rotation_sd_deg`` truncated at ``pose.max_rotation_deg``; each axis' size is an
    isotropic factor (sd ``head_size_sd``) times a per-axis one (sd ``axis_size_sd``), kept
    within ``1 ± max_size_change``. ``fov_cut_mm`` is > 0 for a vertex cut, < 0 for a
    cerebellum cut, 0 for a whole brain.
    """
    if pose.legacy:
        return
    rot = []
    for sd, hi in zip(pose.rotation_sd_deg, pose.max_rotation_deg, strict=True):
        rot.append(round(trunc_normal(rng, 0.0, sd, -hi, hi), 3) if sd > 0 else 0.0)
    t.rotation_deg = tuple(rot)
    lim = pose.max_size_change
    iso = float(rng.normal(1.0, pose.head_size_sd)) if pose.head_size_sd > 0 else 1.0
    sizes = []
    for _ in range(3):
        f = float(rng.normal(1.0, pose.axis_size_sd)) if pose.axis_size_sd > 0 else 1.0
        sizes.append(round(float(np.clip(iso * f, 1.0 - lim, 1.0 + lim)), 4))
    t.scale = tuple(sizes)
    if rng.random() < pose.fov_cut_fraction:
        depth = float(rng.uniform(*pose.fov_cut_mm))
        t.fov_cut_mm = round(depth if rng.random() < 0.5 else -depth, 2)


def draw_atrophy(t: SubjectTruth, rng: np.random.Generator, pose: PoseSettings) -> None:
    """Atrophy index of ``t`` (0 = template brain, 1 = marked atrophy) from age and disease.

    About 0.33 at 75 years without disease, plus 0.5 × FDG AD severity, 0.25 × Centiloid/100
    (amyloid, capped at 100 CL) or 0.1 × DaT PD severity, plus N(0, 0.08); clipped to
    [0, 1]. Drawn after the task's disease fields; nothing for ``pose.legacy`` or without
    ``pose.atrophy``.
    """
    if pose.legacy or not pose.atrophy:
        return
    a = 0.5 * (t.age - 55.0) / 30.0
    if t.task == "fdg-ad":
        a += 0.5 * (t.severity or 0.0)
    elif t.task == "amyloid":
        a += 0.25 * float(np.clip((t.centiloid or 0.0) / 100.0, 0.0, 1.0))
    else:
        a += 0.1 * (t.severity or 0.0)
    a += float(rng.normal(0.0, 0.08))
    t.atrophy = round(float(np.clip(a, 0.0, 1.0)), 4)
