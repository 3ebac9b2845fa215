"""Shared helpers of the phantom tests."""

from __future__ import annotations

import numpy as np

from fedmi.simulations.phantom.basis import WORKING_GRID_3MM
from fedmi.simulations.phantom.tasks import draw_subject
from fedmi.simulations.phantom.truth import SubjectTruth

GRID = WORKING_GRID_3MM


def draw(task: str, seed: int, **kw) -> SubjectTruth:
    """One subject of ``task`` from ``seed`` (CN, AD or HC unless ``group_probs`` says)."""
    probs = {"fdg-ad": {"CN": 1.0}, "amyloid": {"AD": 1.0}, "dat-pd": {"HC": 1.0}}[task]
    kw.setdefault("group_probs", probs)
    return draw_subject(task, np.random.default_rng(seed), **kw)
