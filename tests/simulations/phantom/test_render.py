"""A subject on a scanner grid: MNI → LPS → scanner index."""

from __future__ import annotations

import numpy as np

from fedmi.simulations.phantom.render import mni_to_scanner_lps, scanner_affine, subject_volume
from tests.simulations.phantom.helpers import GRID, draw


def test_subject_volume_geometry() -> None:
    """The hottest DaT voxel lands in the striatum after MNI → LPS → scanner index."""
    t = draw("dat-pd", 5)
    shape, spacing = (48, 48, 40), (4.0, 4.0, 4.0)
    offset = (3.0, -12.0, -400.0)
    aff = scanner_affine(shape, spacing, offset, slice_direction=-1)
    vol = subject_volume(t, shape, aff, table_offset_lps=offset, grid=GRID)
    assert vol.shape == shape and vol.max() > 0
    ijk = np.array(np.unravel_index(np.argmax(vol), shape) + (1,), dtype=float)
    lps = aff @ ijk
    xf = mni_to_scanner_lps(t.scale, t.rotation_deg, t.shift_mm, offset)
    mni = np.linalg.inv(xf) @ lps
    assert 8 < abs(mni[0]) < 35 and -20 < mni[1] < 25 and -10 < mni[2] < 25
