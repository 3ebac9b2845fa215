"""Digital brain phantoms: disease models, subject truth and rendering on a scanner grid.

Numbers follow PHANTOM_SPEC.md §2 (patterns, magnitudes) and §6 (generator recipe).

How a subject is made
---------------------
1. A *basis* of fixed maps on an MNI working grid (default 2 mm) is built once per task
   (:func:`~fedmi.simulations.phantom.tasks.build_basis`) from
   :func:`fedmi.shared.anatomy.tissue_on_grid` and :func:`fedmi.shared.anatomy.region_weights`:
   tissue maps, a scalp shell, regional maps (for inter-subject variation) and disease
   pattern maps. Every subject's true (pre-PVE) activity is a *linear* combination
   ``Σ_k c_k · map_k`` of these maps (:class:`~fedmi.simulations.phantom.basis.Basis`).
2. :func:`~fedmi.simulations.phantom.tasks.draw_subject` draws the subject's clinical truth
   (group, age, sex, severity, Centiloid, DaT binding ...) and
   :func:`~fedmi.simulations.phantom.tasks.subject_coefficients` turns it into the
   coefficients ``c_k`` (in SUV for PET, arbitrary activity units for SPECT).
3. Blurring with the scanner PSF (an isotropic Gaussian) is linear and commutes with the
   rigid head pose, so each site blurs the basis once (:meth:`Basis.blurred`) and each
   subject is a cheap weighted sum of blurred maps.
4. :func:`~fedmi.simulations.phantom.render.render_on_scanner` resamples that sum onto the
   scanner grid through the subject's anatomical scale, head pose and the site's table
   offset (:func:`~fedmi.simulations.phantom.render.mni_to_scanner_lps`), then
   :func:`~fedmi.simulations.phantom.noise.add_pet_noise` /
   :func:`~fedmi.simulations.phantom.noise.spect_counts` add noise.

Modules
-------
``basis``
    :class:`Basis`, the working grids and the map vocabulary (regions, hemispheres, scalp).
``truth``
    :class:`SubjectTruth` and the draws every task shares (group, demographics, pose).
``fdg``, ``amyloid``, ``dat``
    One task each: its constants, basis maps, clinical draws and coefficients. ``fdg``
    also has regional ageing and the bvFTD and DLB patterns of the memory-clinic cohort
    (effect sizes and sources: ``docs/phantom-disorders.md``).
``tasks``
    :func:`build_basis`, :func:`draw_subject`, :func:`subject_coefficients` for any task;
    :func:`draw_cohort_subject` for the memory-clinic cohort (fdg-ad).
``render``
    Head pose, scanner grid and resampling (:func:`subject_volume` for tests).
``noise``
    PET and SPECT noise.

The names below are re-exported here, so ``from fedmi.simulations import phantom`` and
``phantom.build_basis(...)`` reach the whole phantom.
"""

from fedmi.simulations.phantom.amyloid import (
    AMYLOID_REGION_WEIGHTS,
    AMYLOID_THRESHOLD_CL,
    AMYLOID_WC_SUV,
    AMYLOID_WM_RATIO,
    CENTILOID_EQUATIONS,
    centiloid_from_suvr,
    suvr_from_centiloid,
)
from fedmi.simulations.phantom.basis import WORKING_GRID_2MM, WORKING_GRID_3MM, Basis
from fedmi.simulations.phantom.dat import DAT_SUBREGIONS, DAT_TRUE_RATIO_YOUNG
from fedmi.simulations.phantom.fdg import (
    FDG_AD_WEIGHTS,
    FDG_AGING_SLOPES,
    FDG_DLB_WEIGHTS,
    FDG_FTD_WEIGHTS,
)
from fedmi.simulations.phantom.noise import add_pet_noise, spect_counts
from fedmi.simulations.phantom.render import (
    BRAIN_CENTRE_MNI,
    RAS_TO_LPS,
    mni_to_scanner_lps,
    render_on_scanner,
    scanner_affine,
    subject_volume,
)
from fedmi.simulations.phantom.tasks import (
    build_basis,
    draw_cohort_subject,
    draw_subject,
    subject_coefficients,
)
from fedmi.simulations.phantom.truth import VARIATION_GROUPS, SubjectTruth

__all__ = [
    "AMYLOID_REGION_WEIGHTS",
    "AMYLOID_THRESHOLD_CL",
    "AMYLOID_WC_SUV",
    "AMYLOID_WM_RATIO",
    "BRAIN_CENTRE_MNI",
    "Basis",
    "CENTILOID_EQUATIONS",
    "DAT_SUBREGIONS",
    "DAT_TRUE_RATIO_YOUNG",
    "FDG_AD_WEIGHTS",
    "FDG_AGING_SLOPES",
    "FDG_DLB_WEIGHTS",
    "FDG_FTD_WEIGHTS",
    "RAS_TO_LPS",
    "SubjectTruth",
    "VARIATION_GROUPS",
    "WORKING_GRID_2MM",
    "WORKING_GRID_3MM",
    "add_pet_noise",
    "build_basis",
    "centiloid_from_suvr",
    "draw_cohort_subject",
    "draw_subject",
    "mni_to_scanner_lps",
    "render_on_scanner",
    "scanner_affine",
    "spect_counts",
    "subject_coefficients",
    "subject_volume",
    "suvr_from_centiloid",
]
