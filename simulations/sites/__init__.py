"""Synthetic sites: scanners, protocols, populations and presets (PHANTOM_SPEC §3, §5, §6).

Modules
-------
``scanners``
    Scanner models (:data:`PET_SCANNERS`, :data:`SPECT_SCANNERS`,
    :data:`UNSEEN_PET_SCANNERS`), SPECT corrections and acquisition protocols per tracer.
``populations``
    Clinical group mix and label noise of each population type, per task.
``presets``
    :data:`PRESETS` (sizes, grids, matrices) and the site designs of each task.
``profiles``
    :class:`SiteProfile` and :func:`make_sites`, which draws a preset's profiles from the
    seed.

The names in ``__all__`` are re-exported here (``from fedmi.simulations.sites import ...``).
"""

from fedmi.simulations.sites.populations import LABEL_NOISE, POPULATIONS
from fedmi.simulations.sites.presets import PRESETS, Preset, SiteTemplate
from fedmi.simulations.sites.profiles import PROFILE_STREAM, SITE_STREAM, SiteProfile, make_sites
from fedmi.simulations.sites.scanners import (
    PET_SCANNERS,
    PROTOCOLS,
    SPECT_CORRECTIONS,
    SPECT_SCANNERS,
    UNSEEN_PET_SCANNERS,
    ScannerModel,
)

__all__ = [
    "LABEL_NOISE",
    "PET_SCANNERS",
    "POPULATIONS",
    "PRESETS",
    "PROFILE_STREAM",
    "PROTOCOLS",
    "Preset",
    "SITE_STREAM",
    "SPECT_CORRECTIONS",
    "SPECT_SCANNERS",
    "ScannerModel",
    "SiteProfile",
    "SiteTemplate",
    "UNSEEN_PET_SCANNERS",
    "make_sites",
]
