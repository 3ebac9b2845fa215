"""Scanner models, SPECT corrections and acquisition protocols (PHANTOM_SPEC §3.1, §6).

This module is mostly a data table: one :class:`ScannerModel` per camera model (vendor,
typical resolution, noise, voxel sizes and reconstruction), written one field per line
by the formatter, which is why it is long.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ScannerModel:
    """A scanner model and its typical reconstruction (PHANTOM_SPEC §3.1).

    Attributes
    ----------
    manufacturer, model
        (0008,0070) *Manufacturer* and (0008,1090) *Manufacturer's Model Name*.
    scanner_class
        ``pet-old``, ``pet-tof``, ``pet-digital``, ``pet-mr`` or ``spect``.
    fwhm_mm, noise_cov, pixel_mm
        ``(low, high)`` ranges a site's effective resolution, PET noise CoV and in-plane
        pixel size are drawn from.
    slice_mm
        PET slice thicknesses a site picks one of (empty for SPECT: isotropic voxels).
    reconstruction_method, convolution_kernel, software
        (0054,1103) *Reconstruction Method*, (0018,1210) *Convolution Kernel* (≤ 16
        characters) and (0018,1020) *Software Versions*.
    """

    manufacturer: str
    model: str
    scanner_class: str
    fwhm_mm: tuple[float, float]
    noise_cov: tuple[float, float]
    pixel_mm: tuple[float, float]
    slice_mm: tuple[float, ...]
    reconstruction_method: str
    convolution_kernel: str
    software: str


PET_SCANNERS: dict[str, ScannerModel] = {
    s.model: s
    for s in (
        ScannerModel(
            "GE MEDICAL SYSTEMS",
            "Discovery ST",
            "pet-old",
            (7.0, 9.0),
            (0.09, 0.14),
            (2.0, 2.6),
            (3.27, 4.25),
            "OSEM 2i21s",
            "FS 6.0mm",
            "pet_dst.41",
        ),
        ScannerModel(
            "GE MEDICAL SYSTEMS",
            "Discovery 690",
            "pet-tof",
            (5.0, 6.7),
            (0.07, 0.12),
            (2.0, 2.4),
            (3.27, 2.0),
            "VPFX 3i16s",
            "Gaussian 5.0mm",
            "pet_coreload.46",
        ),
        ScannerModel(
            "GE MEDICAL SYSTEMS",
            "Discovery MI",
            "pet-digital",
            (3.5, 5.0),
            (0.06, 0.10),
            (1.5, 2.0),
            (2.0, 2.8),
            "Q.Clear b400",
            "None",
            "pet_coreload.54",
        ),
        ScannerModel(
            "SIEMENS",
            "Biograph HiRez",
            "pet-old",
            (7.0, 9.0),
            (0.09, 0.14),
            (2.0, 2.6),
            (2.0, 3.0),
            "OSEM2D 4i16s",
            "XYZ Gauss5.50",
            "VA60C",
        ),
        ScannerModel(
            "SIEMENS",
            "Biograph mCT",
            "pet-tof",
            (5.0, 6.5),
            (0.07, 0.12),
            (2.0, 2.1),
            (2.0, 3.0),
            "PSF+TOF 4i21s",
            "XYZ Gauss4.00",
            "VG60A",
        ),
        ScannerModel(
            "SIEMENS",
            "Biograph Vision 600",
            "pet-digital",
            (3.5, 5.0),
            (0.06, 0.10),
            (1.6, 2.0),
            (1.65, 2.0),
            "PSF+TOF 4i5s",
            "XYZ Gauss2.00",
            "VG80B",
        ),
        ScannerModel(
            "SIEMENS",
            "Biograph_mMR",
            "pet-mr",
            (4.5, 6.0),
            (0.08, 0.12),
            (2.0, 2.1),
            (2.03,),
            "OP-OSEM3D 3i21s",
            "XYZ Gauss4.00",
            "syngo MR E11",
        ),
        ScannerModel(
            "Philips Medical Systems",
            "Ingenuity TF PET/CT",
            "pet-tof",
            (5.5, 6.7),
            (0.07, 0.12),
            (2.0, 2.0),
            (2.0,),
            "BLOB-OS-TF 3i33s",
            "Brain",
            "4.1.2",
        ),
        ScannerModel(
            "Philips Medical Systems",
            "Vereos PET/CT",
            "pet-digital",
            (3.5, 5.0),
            (0.06, 0.10),
            (2.0, 2.0),
            (2.0,),
            "BLOB-OS-TF 3i15s",
            "Brain HR",
            "2.0.1",
        ),
    )
}

SPECT_SCANNERS: dict[str, ScannerModel] = {
    s.model: s
    for s in (
        ScannerModel(
            "SIEMENS NM",
            "Symbia T2",
            "spect",
            (9.0, 12.0),
            (0.0, 0.0),
            (3.9, 4.8),
            (),
            "FLASH3D 8i8s",
            "Butterworth 0.5",
            "VB10B",
        ),
        ScannerModel(
            "SIEMENS NM",
            "Symbia Intevo 16",
            "spect",
            (8.0, 10.5),
            (0.0, 0.0),
            (3.3, 3.9),
            (),
            "FLASH3D 10i8s",
            "Gaussian 7.0",
            "VB22A",
        ),
        ScannerModel(
            "GE MEDICAL SYSTEMS",
            "Infinia",
            "spect",
            (10.0, 12.0),
            (0.0, 0.0),
            (3.9, 4.8),
            (),
            "FBP",
            "Butterworth 0.4",
            "Xeleris 3.1",
        ),
        ScannerModel(
            "GE MEDICAL SYSTEMS",
            "Discovery NM/CT 670",
            "spect",
            (8.0, 10.5),
            (0.0, 0.0),
            (3.3, 4.4),
            (),
            "OSEM 4i10s",
            "Butterworth 0.48",
            "Xeleris 4.0",
        ),
        ScannerModel(
            "Philips Medical Systems",
            "BrightView XCT",
            "spect",
            (9.0, 12.0),
            (0.0, 0.0),
            (3.9, 4.7),
            (),
            "Astonish 4i16s",
            "Hanning 0.8",
            "2.5.3",
        ),
    )
}

#: Scanners only holdouts of the ``ood`` and ``harmonization`` presets use (never drawn
#: for recombined extra sites): an old BGO camera reconstructed with filtered
#: back-projection and a heavy post-filter, giving an effective 12–14 mm FWHM — coarser
#: than any training site (PHANTOM_SPEC §3.1 tops out at 9 mm for PET).
UNSEEN_PET_SCANNERS: dict[str, ScannerModel] = {
    "ECAT EXACT HR+": ScannerModel(
        "SIEMENS",
        "ECAT EXACT HR+",
        "pet-old",
        (12.0, 14.0),
        (0.10, 0.15),
        (2.0, 2.6),
        (2.43,),
        "FBP 2D",
        "Hann0.5 G10.0mm",
        "ECAT 7.2.2",
    ),
}

#: SPECT corrections and the SBR recovery factor each implies (PHANTOM_SPEC §6).
SPECT_CORRECTIONS = {"NC": 0.75, "AC": 0.85, "ACSC": 1.0}

#: Protocol per tracer: (dose MBq mean, dose relative SD, uptake min range, frame s).
PROTOCOLS: dict[str, tuple[float, float, tuple[float, float], float]] = {
    "fdg": (200.0, 0.08, (30.0, 45.0), 900.0),
    "pib": (400.0, 0.10, (40.0, 50.0), 1200.0),
    "florbetapir": (370.0, 0.05, (50.0, 55.0), 1200.0),
    "florbetaben": (300.0, 0.05, (90.0, 95.0), 1200.0),
    "flutemetamol": (185.0, 0.05, (90.0, 95.0), 1200.0),
    "fp-cit": (185.0, 0.06, (180.0, 300.0), 30.0),
}
