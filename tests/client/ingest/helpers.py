"""Small phantoms and site folders for the ingest tests (written with simulations.dicom)."""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np

from fedmi.client.ingest.geometry import LPS_TO_RAS
from fedmi.shared.anatomy import region_weights, tissue_on_grid
from fedmi.shared.grid import Grid
from fedmi.simulations.dicom import NmMeta, PetMeta, write_nm_series, write_pet_series

#: Brain centre (RAS mm) the test fields of view are centred on.
BRAIN_CENTRE = (0.0, -18.0, 12.0)


@functools.lru_cache(maxsize=8)
def _tissue(
    shape: tuple[int, int, int], spacing: float, pattern: str = "fdg"
) -> tuple[np.ndarray, Grid]:
    origin = tuple(c - (n - 1) * spacing / 2.0 for c, n in zip(BRAIN_CENTRE, shape, strict=True))
    grid = Grid(shape, (spacing,) * 3, origin)
    t = tissue_on_grid(grid)
    if pattern == "dat":  # DaT SPECT: striatum ~6× a uniform brain background
        vol = t["gm"] + t["wm"] + 0.2 * t["csf"] + 5.0 * region_weights("striatum", grid) + 0.05
    else:
        vol = 4.0 * t["gm"] + 1.2 * t["wm"] + 0.2 * t["csf"] + 0.05
    vol.setflags(write=False)
    return vol, grid


def brain(
    shape: tuple[int, int, int] = (48, 56, 40),
    spacing: float = 3.5,
    shift_mm: tuple[float, float, float] = (0.0, 0.0, 0.0),
    pattern: str = "fdg",
) -> tuple[np.ndarray, np.ndarray]:
    """An FDG-like SUV volume (``pattern="dat"``: DaT-like) on a head-first-supine scanner
    grid and its voxel → LPS affine.

    The array is indexed [column, row, slice] with IOP ``1\\0\\0\\0\\1\\0`` (i → patient
    left, j → posterior), like a real PET. ``shift_mm`` moves the head by that RAS vector.
    """
    vol, grid = _tissue(shape, spacing, pattern)
    flip = np.eye(4)
    flip[0, 0] = flip[1, 1] = -1.0
    flip[0, 3], flip[1, 3] = shape[0] - 1, shape[1] - 1
    move = np.eye(4)
    move[:3, 3] = shift_mm
    aff = LPS_TO_RAS @ move @ grid.affine @ flip
    return np.ascontiguousarray(vol[::-1, ::-1, :], dtype=np.float64), aff


def write_pet(out_dir: Path, patient_id: str = "P01", **meta) -> list[Path]:
    """Write the default brain as a PET series; ``meta`` overrides :class:`PetMeta` fields."""
    suv, aff = brain()
    return write_pet_series(suv, aff, PetMeta(patient_id=patient_id, **meta), out_dir)


def write_nm(out_path: Path, patient_id: str = "N01", flip_slices: bool = False, **meta) -> Path:
    """Write the DaT-like brain as counts in one NM object (slices reversed if asked)."""
    vol, aff = brain(pattern="dat")
    counts = vol * 100.0
    if flip_slices:
        counts = counts[:, :, ::-1]
        aff = aff.copy()
        aff[:3, 3] = aff[:3, 3] + aff[:3, 2] * (vol.shape[2] - 1)
        aff[:3, 2] = -aff[:3, 2]
    return write_nm_series(counts, aff, NmMeta(patient_id=patient_id, **meta), out_path)


def write_labels(site: Path, rows: dict[str, str]) -> None:
    """labels.csv with one row per patient."""
    site.mkdir(parents=True, exist_ok=True)
    text = "PatientID,label\n" + "".join(f"{p},{lab}\n" for p, lab in rows.items())
    (site / "labels.csv").write_text(text)
