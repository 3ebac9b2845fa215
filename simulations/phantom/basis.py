"""The basis container, the working grids and the map vocabulary the task phantoms use.

A :class:`Basis` holds fixed maps on an MNI working grid; a subject's true activity is a
linear combination of them. This module knows no task: each task module
(:mod:`~fedmi.simulations.phantom.fdg`, :mod:`~fedmi.simulations.phantom.amyloid`,
:mod:`~fedmi.simulations.phantom.dat`) builds its maps from the helpers below, and
:func:`fedmi.simulations.phantom.tasks.build_basis` stacks them with :func:`stack_basis`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage

from fedmi.shared import anatomy
from fedmi.shared.grid import Grid

#: 2 mm MNI working grid, aligned with the 1 mm nilearn grid (voxel 0 covers −98…−96 mm).
WORKING_GRID_2MM = Grid(shape=(98, 116, 94), spacing=(2.0, 2.0, 2.0), origin=(-97.0, -133.0, -71.0))
#: 3 mm working grid for the ``tiny`` preset.
WORKING_GRID_3MM = Grid(shape=(65, 77, 63), spacing=(3.0, 3.0, 3.0), origin=(-96.5, -132.5, -70.5))


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


def stack_basis(
    task: str, grid: Grid, maps: dict[str, np.ndarray], mean_regions: tuple[str, ...]
) -> Basis:
    """A read-only :class:`Basis` of ``maps`` (in their order) with the true means of
    ``mean_regions`` (region-weighted, float64)."""
    names = list(maps)
    stack = np.stack([maps[n].astype(np.float32) for n in names])
    means = {}
    for r in mean_regions:
        w = region_map(r, grid).ravel().astype(np.float64)
        flat = stack.reshape(len(names), -1)
        means[r] = np.array([np.dot(flat[k].astype(np.float64), w) for k in range(len(names))])
        means[r] /= float(w.sum())
    stack.setflags(write=False)
    return Basis(task, grid, names, stack, means)


# --------------------------------------------------------------------------------------
# Map vocabulary
# --------------------------------------------------------------------------------------


def tissue(grid: Grid) -> dict[str, np.ndarray]:
    """GM, WM and CSF probabilities on ``grid`` (float32)."""
    return {k: np.asarray(v, dtype=np.float32) for k, v in anatomy.tissue_on_grid(grid).items()}


def region_map(name: str, grid: Grid) -> np.ndarray:
    """Weights (0…1, float32) of an anatomy region on ``grid``."""
    return np.asarray(anatomy.region_weights(name, grid), dtype=np.float32)


def group_map(names: tuple[str, ...], grid: Grid) -> np.ndarray:
    """Union of several regions: their summed weights clipped to 0…1."""
    return np.clip(sum(region_map(n, grid) for n in names), 0.0, 1.0).astype(np.float32)


def hemisphere(grid: Grid, side: str) -> np.ndarray:
    """Smooth left (``"L"``) or right (``"R"``) half of the grid (4 mm ramp at x = 0)."""
    x = grid.world_coordinates()[0]
    # Smooth left/right split (RAS: x < 0 is left), 4 mm logistic ramp at the midline.
    left = 1.0 / (1.0 + np.exp(np.clip(x / 2.0, -50, 50)))
    return (left if side == "L" else 1.0 - left).astype(np.float32)


def head_shell(grid: Grid, tissue: dict[str, np.ndarray]) -> np.ndarray:
    """A smoothed scalp shell 4–12 mm outside the brain."""
    brain = (tissue["gm"] + tissue["wm"] + tissue["csf"]) > 0.3
    sp = float(np.mean(grid.spacing))
    outer = ndimage.binary_dilation(brain, iterations=max(1, round(12.0 / sp)))
    inner = ndimage.binary_dilation(brain, iterations=max(1, round(4.0 / sp)))
    shell = (outer & ~inner).astype(np.float32)
    return ndimage.gaussian_filter(shell, 2.0 / sp).astype(np.float32)


def smooth(vol: np.ndarray, grid: Grid, sigma_mm: float) -> np.ndarray:
    """Gaussian smoothing with ``sigma_mm`` (float32)."""
    return ndimage.gaussian_filter(vol, sigma_mm / np.asarray(grid.spacing)).astype(np.float32)
