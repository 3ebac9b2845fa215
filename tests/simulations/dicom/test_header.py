"""Header helpers shared by the PET and NM writers."""

from __future__ import annotations

import numpy as np
import pytest

from fedmi.simulations.dicom.header import geometry_from_affine


def test_tilted_affine_is_rejected() -> None:
    aff = np.diag([2.0, 2.0, 2.0, 1.0])
    aff[1, 2] = 0.5
    with pytest.raises(ValueError, match="parallel"):
        geometry_from_affine(aff)
