"""Quality control of spatial normalisation: measures, thresholds, flags and rejections.

Per scan, after registration (:mod:`fedmi.client.ingest.registration`):

``similarity``
    Pearson correlation between the normalised scan and the task template over the
    dilated template brain, inside the field of view (1 = same pattern; synthetic brains
    score about 0.9–0.98).
``coverage``
    Fraction of the template brain that the scan's field of view covers after warping;
    ``reference_coverage`` the same for the reference region.
``scales``, ``rotation_deg``, ``anisotropy``, ``determinant``
    The affine part decomposed (polar decomposition: a rotation times a stretch): head
    size along the stretch's axes, rotation angle, largest / smallest size, and the sign
    that would mirror left and right.

Below a *reject* threshold the series is rejected with a reason code (:data:`REASONS
<fedmi.client.ingest.errors.REASONS>`); below a *flag* threshold it is accepted with a flag
(:data:`~fedmi.client.ingest.errors.FLAGS`) that ``fedmi-site check`` lists and shows in its
montage.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage

from fedmi.client.ingest.errors import IngestError
from fedmi.client.ingest.registration import Registration
from fedmi.shared.anatomy import region_weights
from fedmi.shared.tasks import TaskSpec
from fedmi.shared.templates import brain_mask, task_template


@dataclass(frozen=True)
class QcThresholds:
    """Reject and flag levels of each measure (part of the ingest cache key)."""

    not_brain_similarity: float = 0.3
    reject_similarity: float = 0.6
    flag_similarity: float = 0.85
    min_scale: float = 0.75
    max_scale: float = 1.33
    flag_scale_change: float = 0.15
    max_anisotropy: float = 1.35
    max_rotation_deg: float = 45.0
    flag_rotation_deg: float = 25.0
    min_coverage: float = 0.85
    flag_coverage: float = 0.99
    flag_reference_coverage: float = 0.98
    min_reference_coverage: float = 0.8


@dataclass(frozen=True)
class Quality:
    """The QC figures of one normalised scan (see the module docstring) and its flags."""

    similarity: float
    coverage: float
    reference_coverage: float
    scales: tuple[float, float, float]
    rotation_deg: float
    anisotropy: float
    determinant: float
    flags: tuple[str, ...] = field(default=())

    def to_json(self) -> dict:
        """Rounded values for the report row."""
        return {
            "similarity": round(self.similarity, 4),
            "brain_coverage": round(self.coverage, 4),
            "reference_coverage": round(self.reference_coverage, 4),
            "scales": [round(v, 4) for v in self.scales],
            "rotation_deg": round(self.rotation_deg, 2),
            "anisotropy": round(self.anisotropy, 4),
            "flags": list(self.flags),
        }


def decompose(matrix: np.ndarray) -> tuple[tuple[float, float, float], float, float, float]:
    """Head sizes (singular values), rotation angle (deg), anisotropy and determinant of the
    linear part of a template → scan affine."""
    a = np.asarray(matrix, dtype=np.float64)[:3, :3]
    u, s, vt = np.linalg.svd(a)
    rot = u @ vt
    cos = float(np.clip((np.trace(rot) - 1.0) / 2.0, -1.0, 1.0))
    sizes = tuple(float(v) for v in sorted(s))
    return sizes, math.degrees(math.acos(cos)), sizes[2] / sizes[0], float(np.linalg.det(a))


def similarity(volume: np.ndarray, spec: TaskSpec) -> float:
    """Correlation of a task-grid volume (NaN outside the field of view) with the template."""
    tpl = task_template(spec, spec.grid)
    mask = ndimage.binary_dilation(brain_mask(spec.grid), iterations=2) & np.isfinite(volume)
    if int(mask.sum()) < 10:
        return 0.0
    x, y = volume[mask].astype(np.float64), tpl[mask].astype(np.float64)
    x, y = x - x.mean(), y - y.mean()
    den = math.sqrt(float(np.dot(x, x)) * float(np.dot(y, y)))
    return float(np.dot(x, y) / den) if den > 0 else 0.0


def measure(volume: np.ndarray, reg: Registration, spec: TaskSpec) -> Quality:
    """Every QC figure of a normalised task-grid volume (NaN outside the field of view)."""
    inside = np.isfinite(volume)
    brain = brain_mask(spec.grid)
    w = region_weights(spec.reference_region, spec.grid)
    sizes, angle, aniso, det = decompose(reg.matrix)
    return Quality(
        similarity=similarity(volume, spec),
        coverage=float(inside[brain].mean()),
        reference_coverage=float(np.sum(w * inside) / max(float(np.sum(w)), 1e-9)),
        scales=sizes,
        rotation_deg=angle,
        anisotropy=aniso,
        determinant=det,
    )


def judge(q: Quality, thresholds: QcThresholds, name: str) -> Quality:
    """``q`` with its flags; raises :class:`IngestError` when a reject threshold is crossed."""
    t = thresholds
    _reject_pose(q, t, name)
    _reject_coverage(q, t, name)
    flags = []
    if q.similarity < t.flag_similarity:
        flags.append("low_similarity")
    if q.coverage < t.flag_coverage or q.reference_coverage < t.flag_reference_coverage:
        flags.append("partial_coverage")
    if max(abs(s - 1.0) for s in q.scales) > t.flag_scale_change:
        flags.append("unusual_head_size")
    if q.rotation_deg > t.flag_rotation_deg:
        flags.append("large_tilt")
    return Quality(**{**q.__dict__, "flags": tuple(flags)})


def _reject_pose(q: Quality, t: QcThresholds, name: str) -> None:
    if q.similarity < t.not_brain_similarity:
        raise IngestError(
            "not_brain",
            f"{name}: after registration the scan correlates with the brain template at only "
            f"{q.similarity:.2f} (brain scans: > {t.flag_similarity}); it does not look like a "
            "brain PET/SPECT of this task (another body part, or an empty or corrupt "
            "reconstruction). Check the series and export the brain reconstruction.",
        )
    if q.similarity < t.reject_similarity:
        raise IngestError(
            "registration_failed",
            f"{name}: spatial normalisation failed: correlation with the template "
            f"{q.similarity:.2f} (< {t.reject_similarity}). Check the scan for artefacts, "
            "motion or an unusual field of view; review it in the fedmi-site check montage.",
        )
    bad = []
    if q.determinant <= 0:
        bad.append("it mirrors left and right")
    if q.scales[0] < t.min_scale or q.scales[2] > t.max_scale:
        bad.append(f"head sizes {', '.join(f'{s:.2f}' for s in q.scales)} of the template")
    if q.anisotropy > t.max_anisotropy:
        bad.append(f"anisotropy {q.anisotropy:.2f}")
    if q.rotation_deg > t.max_rotation_deg:
        bad.append(f"a {q.rotation_deg:.0f}° rotation")
    if bad:
        raise IngestError(
            "implausible_registration",
            f"{name}: the registration to the template is not a plausible head pose ("
            f"{'; '.join(bad)}). Check the image orientation tags (0020,0037) and the "
            "pixel spacing (0028,0030), and review the scan in the fedmi-site check montage.",
        )


def _reject_coverage(q: Quality, t: QcThresholds, name: str) -> None:
    if q.coverage < t.min_coverage or q.reference_coverage < t.min_reference_coverage:
        raise IngestError(
            "incomplete_coverage",
            f"{name}: the field of view covers only {100 * q.coverage:.0f}% of the brain "
            f"and {100 * q.reference_coverage:.0f}% of the reference region after spatial "
            f"normalisation (need {100 * t.min_coverage:.0f}% and "
            f"{100 * t.min_reference_coverage:.0f}%). Export a reconstruction that covers "
            "the whole head.",
        )
