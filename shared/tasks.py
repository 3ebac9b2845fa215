"""Task definitions: what each clinical task predicts, from which scans, on which grid.

One place for each fact: labels, positive class, modality, accepted tracers, the
template grid every site resamples onto, and the reference region used to turn
SUV (PET) or counts (SPECT) into a ratio (SUVR / SBR-like) at ingest.
"""

from __future__ import annotations

from dataclasses import dataclass

from fedmi.shared.grid import Grid

#: The default template grid: 4 mm isotropic over the MNI brain (x −78…78, y −114…74,
#: z −62…94 mm). Small enough to train on a CPU, fine enough for the striatum.
TEMPLATE_GRID_4MM = Grid(shape=(40, 48, 40), spacing=(4.0, 4.0, 4.0), origin=(-78.0, -114.0, -62.0))


@dataclass(frozen=True)
class UptakeModel:
    """A task's typical uptake pattern, from which its registration template is built.

    The template (:func:`fedmi.shared.templates.task_template`) is
    ``gm·GM + wm·WM + csf·CSF + scalp·shell + Σ value·region`` on the MNI152 tissue maps and
    AAL3 regions of :mod:`fedmi.shared.anatomy`, blurred to ``fwhm_mm``: design values from
    the published tissue ratios (PHANTOM_SPEC §2), no patient data.

    Attributes
    ----------
    gm, wm, csf
        Activity of grey matter, white matter and CSF (arbitrary units: only ratios matter).
    scalp
        Activity of a scalp shell 4–12 mm outside the brain.
    regions
        ``(region, extra activity)`` pairs added on top of the tissue (e.g. the striatum).
    fwhm_mm
        Resolution of the template (a typical scan of the task).
    """

    gm: float
    wm: float
    csf: float
    scalp: float
    regions: tuple[tuple[str, float], ...] = ()
    fwhm_mm: float = 8.0


#: FDG: grey matter about 3× white matter, low pons and cerebellar cortex.
FDG_UPTAKE = UptakeModel(
    gm=3.0,
    wm=1.0,
    csf=0.05,
    scalp=0.25,
    regions=(("cerebellum_gm", -0.6), ("pons", -0.7)),
)
#: Amyloid: halfway between a negative scan (white matter 1.3–1.6× cortex) and a positive
#: one (cortex close to white matter).
AMYLOID_UPTAKE = UptakeModel(gm=1.1, wm=1.45, csf=0.05, scalp=0.3)
#: DaT SPECT: striatum about 6× the background, a warm scalp, 12 mm resolution.
DAT_UPTAKE = UptakeModel(
    gm=1.0, wm=1.0, csf=0.2, scalp=0.6, regions=(("striatum", 5.0),), fwhm_mm=12.0
)


@dataclass(frozen=True)
class TaskSpec:
    """A clinical task.

    Attributes
    ----------
    name
        Task id used on the command line and in configs (``fdg-ad``, ``amyloid``, ``dat-pd``).
    modality
        DICOM (0008,0060) *Modality* of the scans: ``PT`` or ``NM``.
    tracers
        Canonical tracer names accepted for the task (see :data:`TRACERS`).
    classes
        labels.csv values used for training, in class-index order (index 1 is positive).
    other_labels
        labels.csv values that are valid but not training classes (e.g. MCI subjects
        kept for the biomarker analysis).
    reference_region
        Region (see :mod:`fedmi.shared.anatomy`) whose mean divides the volume at ingest.
    grid
        Template grid in MNI RAS mm.
    description
        One line for help texts and the model card.
    uptake
        The task's typical uptake pattern (its spatial-normalisation template).
    """

    name: str
    modality: str
    tracers: tuple[str, ...]
    classes: tuple[str, str]
    other_labels: tuple[str, ...]
    reference_region: str
    grid: Grid
    description: str
    uptake: UptakeModel = FDG_UPTAKE

    @property
    def positive_label(self) -> str:
        """The labels.csv value of the positive class."""
        return self.classes[1]

    @property
    def all_labels(self) -> tuple[str, ...]:
        """Every labels.csv value the task accepts."""
        return (*self.classes, *self.other_labels)

    def class_index(self, label: str) -> int | None:
        """Class index of a labels.csv value, or ``None`` for a non-training label."""
        return self.classes.index(label) if label in self.classes else None


@dataclass(frozen=True)
class Tracer:
    """A radiopharmaceutical and how it appears in DICOM.

    ``names`` are lower-case substrings matched against (0018,0031) *Radiopharmaceutical*;
    ``code`` is the (0054,0304) *Radiopharmaceutical Code Sequence* code value.
    """

    key: str
    display: str
    nuclide: str
    half_life_s: float
    code: str
    names: tuple[str, ...]


TRACERS: dict[str, Tracer] = {
    t.key: t
    for t in (
        Tracer(
            "fdg",
            "Fluorodeoxyglucose F^18^",
            "18F",
            6586.2,
            "35321007",
            ("fdg", "fluorodeoxyglucose"),
        ),
        Tracer(
            "pib", "Pittsburgh compound B C^11^", "11C", 1223.4, "126500", ("pib", "pittsburgh")
        ),
        Tracer(
            "florbetapir",
            "Florbetapir F^18^",
            "18F",
            6586.2,
            "456995000",
            ("florbetapir", "av45", "av-45", "amyvid"),
        ),
        Tracer(
            "florbetaben",
            "Florbetaben F^18^",
            "18F",
            6586.2,
            "712736002",
            ("florbetaben", "neuraceq", "fbb"),
        ),
        Tracer(
            "flutemetamol",
            "Flutemetamol F^18^",
            "18F",
            6586.2,
            "456997008",
            ("flutemetamol", "vizamyl", "gemetamol"),
        ),
        Tracer(
            "fp-cit",
            "Ioflupane I^123^",
            "123I",
            47604.0,
            "429296007",
            ("ioflupane", "fp-cit", "fpcit", "datscan"),
        ),
    )
}

#: (0054,0300) Radionuclide Code Sequence SNOMED codes.
NUCLIDE_CODES = {"18F": "77004003", "11C": "40565003", "123I": "21572004"}

TASKS: dict[str, TaskSpec] = {
    "fdg-ad": TaskSpec(
        name="fdg-ad",
        modality="PT",
        tracers=("fdg",),
        classes=("CN", "AD"),
        # FTD/DLB: memory-clinic scans of other disorders (never a training class).
        other_labels=("MCI-stable", "MCI-converter", "FTD", "DLB"),
        reference_region="pons",
        grid=TEMPLATE_GRID_4MM,
        description="Alzheimer's disease dementia vs cognitively normal from FDG PET",
        uptake=FDG_UPTAKE,
    ),
    "amyloid": TaskSpec(
        name="amyloid",
        modality="PT",
        tracers=("pib", "florbetapir", "florbetaben", "flutemetamol"),
        classes=("negative", "positive"),
        other_labels=(),
        reference_region="whole_cerebellum",
        grid=TEMPLATE_GRID_4MM,
        description="Amyloid-beta positivity from amyloid PET (PiB, florbetapir, florbetaben, flutemetamol)",
        uptake=AMYLOID_UPTAKE,
    ),
    "dat-pd": TaskSpec(
        name="dat-pd",
        modality="NM",
        tracers=("fp-cit",),
        classes=("HC", "PD"),
        other_labels=(),
        reference_region="occipital",
        grid=TEMPLATE_GRID_4MM,
        description="Parkinson's disease vs healthy control from 123I-FP-CIT (DaT) SPECT",
        uptake=DAT_UPTAKE,
    ),
}


def get_task(name: str) -> TaskSpec:
    """Look a task up by name, with an error listing the valid names."""
    try:
        return TASKS[name]
    except KeyError:
        raise ValueError(f"unknown task {name!r}; choose one of {', '.join(TASKS)}") from None


def identify_tracer(text: str) -> str | None:
    """Canonical tracer key for a (0018,0031) *Radiopharmaceutical* string or code value."""
    low = text.strip().lower()
    if not low:
        return None
    for tracer in TRACERS.values():
        if low == tracer.code or any(n in low for n in tracer.names):
            return tracer.key
    return None
