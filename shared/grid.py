"""Voxel grids in MNI (RAS) millimetres and resampling between them.

A :class:`Grid` is the fixed input space of a task: every site resamples its scans
onto it, so the federated model always sees the same voxels.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage


@dataclass(frozen=True)
class Grid:
    """An axis-aligned voxel grid in RAS millimetres.

    Parameters
    ----------
    shape
        Voxels along x (left→right), y (posterior→anterior), z (inferior→superior).
    spacing
        Voxel size in mm along each axis.
    origin
        RAS position in mm of the centre of voxel ``(0, 0, 0)``.
    """

    shape: tuple[int, int, int]
    spacing: tuple[float, float, float]
    origin: tuple[float, float, float]

    @property
    def affine(self) -> np.ndarray:
        """The 4×4 voxel-index → RAS-mm affine (NIfTI convention)."""
        aff = np.diag([*self.spacing, 1.0])
        aff[:3, 3] = self.origin
        return aff

    def world_coordinates(self) -> np.ndarray:
        """RAS mm of every voxel centre, shape ``(3, *shape)``."""
        idx = np.indices(self.shape, dtype=np.float64)
        sp = np.asarray(self.spacing, dtype=np.float64).reshape(3, 1, 1, 1)
        org = np.asarray(self.origin, dtype=np.float64).reshape(3, 1, 1, 1)
        return idx * sp + org


def resample_to_grid(
    volume: np.ndarray,
    volume_affine: np.ndarray,
    grid: Grid,
    *,
    order: int = 1,
    world_to_volume_world: np.ndarray | None = None,
    cval: float = 0.0,
) -> np.ndarray:
    """Sample ``volume`` (index → world by ``volume_affine``) at the centres of ``grid``.

    Parameters
    ----------
    volume
        3-D array indexed ``[i, j, k]``.
    volume_affine
        4×4 map from ``volume`` indices to the world frame (mm).
    grid
        Target grid, in RAS mm.
    order
        Spline order: 0 for labels, 1 for images.
    world_to_volume_world
        Optional 4×4 rigid/affine map from grid RAS mm to the volume's world frame,
        e.g. a head-position correction. Identity when omitted.
    cval
        Value for grid points outside ``volume``.

    Returns
    -------
    numpy.ndarray
        float32 array of ``grid.shape`` (the dtype of ``volume`` when ``order=0``).
    """
    m = np.linalg.inv(np.asarray(volume_affine, dtype=np.float64))
    if world_to_volume_world is not None:
        m = m @ np.asarray(world_to_volume_world, dtype=np.float64)
    m = m @ grid.affine
    out = ndimage.affine_transform(
        volume if order == 0 else np.asarray(volume, dtype=np.float32),
        m[:3, :3],
        offset=m[:3, 3],
        output_shape=grid.shape,
        order=order,
        mode="constant",
        cval=cval,
        prefilter=False,
    )
    return out
