"""The phantom of any task: its basis, a subject's truth and its basis coefficients.

Each task module (:mod:`~fedmi.simulations.phantom.fdg`,
:mod:`~fedmi.simulations.phantom.amyloid`, :mod:`~fedmi.simulations.phantom.dat`) has the
same parts: ``MEAN_REGIONS``, ``basis_maps(grid, tissue, head)``, ``draw(...)`` and
``coefficients(truth, basis)``. The functions here pick the module by task name.
"""

from __future__ import annotations

import functools
from types import ModuleType

import numpy as np

from fedmi.shared.grid import Grid
from fedmi.simulations.phantom import amyloid, dat, fdg
from fedmi.simulations.phantom.basis import (
    WORKING_GRID_2MM,
    Basis,
    head_shell,
    stack_basis,
    tissue,
)
from fedmi.simulations.phantom.poses import POSES, PoseSettings
from fedmi.simulations.phantom.truth import (
    SubjectTruth,
    draw_anatomy,
    draw_atrophy,
    draw_cohort_person,
    draw_person,
    draw_pose,
)

_TASK_MODULES: dict[str, ModuleType] = {"fdg-ad": fdg, "amyloid": amyloid, "dat-pd": dat}


def _task_module(task: str) -> ModuleType:
    if task not in _TASK_MODULES:
        raise ValueError(f"unknown task {task!r}")
    return _TASK_MODULES[task]


@functools.lru_cache(maxsize=4)
def build_basis(task: str, grid: Grid = WORKING_GRID_2MM) -> Basis:
    """The fixed maps of ``task`` on ``grid`` (cached per process).

    Components
    ----------
    ``fdg-ad``
        :func:`fedmi.simulations.phantom.fdg.basis_maps`.
    ``amyloid``
        :func:`fedmi.simulations.phantom.amyloid.basis_maps`.
    ``dat-pd``
        :func:`fedmi.simulations.phantom.dat.basis_maps`.

    Every basis has a ``head`` (scalp shell) component.
    """
    tissue_maps = tissue(grid)
    head = head_shell(grid, tissue_maps)
    module = _task_module(task)
    maps = module.basis_maps(grid, tissue_maps, head)
    return stack_basis(task, grid, maps, module.MEAN_REGIONS)


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
    pose: PoseSettings = POSES["legacy"],
    pose_rng: np.random.Generator | None = None,
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
    max_rotation_deg, max_shift_mm
        Ranges of the legacy pose draws (always made on ``rng``, so the rest of the
        subject does not depend on ``pose``).
    pose, pose_rng
        Pose settings (:mod:`fedmi.simulations.phantom.poses`) and the subject's pose
        stream; unless ``pose.legacy``, head size, rotation, field-of-view cut and atrophy
        are drawn from ``pose_rng`` (required then).
    """
    if not pose.legacy and pose_rng is None:
        raise ValueError(f"poses {pose.name!r} need the subject's pose stream (pose_rng)")
    t = draw_person(task, rng, group_probs, age_shift, female_frac)
    draw_anatomy(t, rng, max_rotation_deg, max_shift_mm)
    atrophy_rng = None
    if pose_rng is not None:
        # atrophy gets a stream of its own: the same whatever the pose draws consume
        atrophy_rng = np.random.default_rng(int(pose_rng.integers(2**62)))
        draw_pose(t, pose_rng, pose)
    if task == "fdg-ad":
        fdg.draw(t, rng, label_noise)
    elif task == "amyloid":
        amyloid.draw(t, rng, label_noise, tracer)
    elif task == "dat-pd":
        dat.draw(t, rng, label_noise)
    else:
        raise ValueError(f"unknown task {task!r}")
    if atrophy_rng is not None:
        draw_atrophy(t, atrophy_rng, pose)
    return t


def draw_cohort_subject(
    task: str,
    group: str,
    rng: np.random.Generator,
    *,
    female_frac: float = 0.5,
    max_rotation_deg: float = 5.0,
    max_shift_mm: float = 8.0,
    pose: PoseSettings = POSES["legacy"],
    pose_rng: np.random.Generator | None = None,
) -> SubjectTruth:
    """Draw one memory-clinic cohort subject of ``group`` (fdg-ad: ``CN``, ``FTD``, ``DLB``).

    Like :func:`draw_subject`, on the subject's own generator ``rng``, but the group is
    given and the age is uniform over :data:`fedmi.simulations.phantom.fdg.COHORT_AGES`.
    """
    if task != "fdg-ad":
        raise ValueError(f"no memory-clinic cohort for task {task!r}")
    if not pose.legacy and pose_rng is None:
        raise ValueError(f"poses {pose.name!r} need the subject's pose stream (pose_rng)")
    t = draw_cohort_person(task, rng, group, fdg.COHORT_AGES[group], female_frac)
    draw_anatomy(t, rng, max_rotation_deg, max_shift_mm)
    atrophy_rng = None
    if pose_rng is not None:
        atrophy_rng = np.random.default_rng(int(pose_rng.integers(2**62)))
        draw_pose(t, pose_rng, pose)
    fdg.draw_cohort(t, rng)
    if atrophy_rng is not None:
        draw_atrophy(t, atrophy_rng, pose)
    return t


def subject_coefficients(t: SubjectTruth, basis: Basis) -> np.ndarray:
    """Basis coefficients of a subject's true activity (SUV for PET).

    For amyloid the cortical excess is solved so that the *true* (pre-PVE) ratio of the
    ``cortex_composite`` and ``whole_cerebellum`` means equals ``t.suvr_true`` exactly.
    """
    return _task_module(t.task).coefficients(t, basis)
