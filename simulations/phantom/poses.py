"""Head poses, head sizes, cut fields of view and atrophy: the pose settings of a federation.

A :class:`PoseSettings` says how a site's patients lie in the scanner and how their brains
differ in size and shape from the template. Every site of a generated federation uses one
named entry of :data:`POSES` (``fedmi-sim generate --poses NAME``; default
:data:`DEFAULT_POSES`):

``realistic`` (default)
    Rotations up to ±20° about each axis (truncated normal; nodding, pitch, varies most),
    anisotropic head size ±12 % at most, 10 % of scans with a field of view that cuts
    5–20 mm off the vertex or the cerebellum, and atrophy (ventricle and sulcal widening)
    that grows with age and disease. Sources: docs/spatial-normalisation.md.
``legacy``
    The poses of fedmi before spatial normalisation (rotations ≤ 5°, head size ~3 %, whole
    field of view, no atrophy): the same subjects, drawn exactly as before, so that a
    federation generated with it has the DICOM files of earlier versions.
``aligned``
    No rotation and no scaling (translations and atrophy as ``realistic``, whole field of
    view): the reference "unrotated, unscaled heads" of the spatial-normalisation benchmark.

The draws of ``realistic`` and ``aligned`` come from the subject's own *pose* stream
(``SeedSequence([seed, site, subject, POSE_STREAM])``), after the subject's legacy draws, so
the three settings give the same subjects (groups, ages, disease, labels, noise draws) in
different poses.
"""

from __future__ import annotations

from dataclasses import dataclass

#: SeedSequence tag of a subject's pose stream (``[seed, site, subject, POSE_STREAM]``).
POSE_STREAM = 1_000_007


@dataclass(frozen=True)
class PoseSettings:
    """How subjects are posed and shaped (see the module docstring).

    Attributes
    ----------
    name
        Key in :data:`POSES`.
    legacy
        Use the draws of earlier fedmi versions (``max_rotation_deg``, ``max_shift_mm``
        only; every other field is ignored).
    max_rotation_deg
        Largest rotation about x (pitch, nodding), y (roll) and z (yaw), degrees.
    rotation_sd_deg
        Standard deviation of each rotation (a normal truncated at ``max_rotation_deg``).
    max_shift_mm
        Head translation, uniform in ±this per axis (mm).
    head_size_sd
        Standard deviation of the isotropic head-size factor (1 = template).
    axis_size_sd
        Standard deviation of the extra per-axis factor (anisotropy).
    max_size_change
        Each axis' total factor stays within ``1 ± max_size_change``.
    fov_cut_fraction
        Fraction of scans whose axial field of view cuts the brain (half at the vertex,
        half at the cerebellum).
    fov_cut_mm
        ``(low, high)`` depth of brain cut off on such a scan (mm, uniform).
    atrophy
        Draw an atrophy index from age and disease (ventricle and sulcal widening).
    """

    name: str
    legacy: bool = False
    max_rotation_deg: tuple[float, float, float] = (20.0, 20.0, 20.0)
    rotation_sd_deg: tuple[float, float, float] = (10.0, 6.0, 6.0)
    max_shift_mm: float = 8.0
    head_size_sd: float = 0.045
    axis_size_sd: float = 0.03
    max_size_change: float = 0.12
    fov_cut_fraction: float = 0.10
    fov_cut_mm: tuple[float, float] = (5.0, 20.0)
    atrophy: bool = True


POSES: dict[str, PoseSettings] = {
    "realistic": PoseSettings("realistic"),
    "legacy": PoseSettings(
        "legacy",
        legacy=True,
        max_rotation_deg=(5.0, 5.0, 5.0),
        fov_cut_fraction=0.0,
        atrophy=False,
    ),
    "aligned": PoseSettings(
        "aligned",
        max_rotation_deg=(0.0, 0.0, 0.0),
        rotation_sd_deg=(0.0, 0.0, 0.0),
        head_size_sd=0.0,
        axis_size_sd=0.0,
        max_size_change=0.0,
        fov_cut_fraction=0.0,
    ),
}

#: Poses of every preset unless ``--poses`` says otherwise.
DEFAULT_POSES = "realistic"


def get_poses(name: str) -> PoseSettings:
    """The pose settings called ``name`` (error lists the names)."""
    try:
        return POSES[name]
    except KeyError:
        raise ValueError(f"unknown poses {name!r}; choose one of {', '.join(POSES)}") from None
