"""Write synthetic PET (one file per slice) and SPECT (NM multi-frame) series as DICOM.

This is a reusable API: the generator uses it for the whole federation, and the ingest
tests use it to write small series that they then corrupt.

Modules
-------
``header``
    What both writers share: :func:`ds`, :func:`geometry_from_affine`, UIDs and the common
    header (patient, study, series, equipment, image plane, radiopharmaceutical).
``pet``
    :class:`PetMeta`, :func:`write_pet_series`, :func:`suv_factor` and the test reader
    :func:`read_pet_suv` (the PET quantities are described there).
``nm``
    :class:`NmMeta`, :func:`write_nm_series` and :func:`nm_sop_instance_uid`.

The names in ``__all__`` are re-exported here (``from fedmi.simulations.dicom import ...``).

Frame conventions
-----------------
Volumes are NumPy arrays indexed ``[i, j, k]``:

* ``i`` = column index of a DICOM image (moves along the *row direction*, the first
  three values of (0020,0037) *Image Orientation (Patient)*),
* ``j`` = row index (moves along the *column direction*, the last three IOP values),
* ``k`` = slice (PET: file; NM: frame).

``affine_lps`` is a 4×4 matrix mapping ``(i, j, k, 1)`` to DICOM patient coordinates
(LPS, mm). Therefore

* IOP row direction    = ``affine_lps[:3, 0] / |affine_lps[:3, 0]|``,
* IOP column direction = ``affine_lps[:3, 1] / |affine_lps[:3, 1]|``,
* (0028,0030) *Pixel Spacing* = ``[|affine[:3, 1]|, |affine[:3, 0]|]`` (row spacing first,
  i.e. the distance between rows, then between columns),
* (0020,0032) *Image Position (Patient)* of slice ``k`` = ``affine_lps @ (0, 0, k, 1)``,
* the stored pixel matrix of slice ``k`` is ``volume[:, :, k].T`` (shape ``[rows, cols]``
  = ``[j, i]``), because DICOM pixel data is row-major ``[row, column]``.

The third column of ``affine_lps`` must be parallel or anti-parallel to the slice normal
``row_dir × col_dir`` (no gantry tilt). Anti-parallel is allowed: PET slices then run
head→feet, and for NM the (0018,0088) *Spacing Between Slices* is written negative, as
some Siemens cameras do.
"""

from fedmi.simulations.dicom.header import ds, geometry_from_affine
from fedmi.simulations.dicom.nm import NmMeta, nm_sop_instance_uid, write_nm_series
from fedmi.simulations.dicom.pet import PetMeta, read_pet_suv, suv_factor, write_pet_series

__all__ = [
    "PetMeta",
    "NmMeta",
    "write_pet_series",
    "write_nm_series",
    "ds",
    "geometry_from_affine",
    "suv_factor",
    "nm_sop_instance_uid",
    "read_pet_suv",
]
