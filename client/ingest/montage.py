"""A QC montage of normalised scans: a few slices of each over the template brain outline.

``fedmi-site check`` writes ``STATE_DIR/ingest/qc_montage.png``: one row per scan (flagged
scans first, then the others in report order, up to ``max_scans``), five slices of the
cached task-grid volume (three axial, one coronal, one sagittal) in radiological display
(the patient's right on the left), with the outline of the template brain drawn over them.
A scan that sits off the outline, is cut, mirrored or of another pattern shows at a glance.
The PNG stays at the site: it holds images and patient IDs.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from fedmi.shared.tasks import TaskSpec
from fedmi.shared.templates import brain_mask

#: Slices shown: (axis, MNI mm) — axial at z −20, 8, 40; coronal at y −18; sagittal x −4.
SLICES: tuple[tuple[int, float], ...] = ((2, -20.0), (2, 8.0), (2, 40.0), (1, -18.0), (0, -4.0))


def montage_rows(accepted: Sequence[dict], max_scans: int) -> list[dict]:
    """Flagged rows first (report order), then the others, at most ``max_scans``."""
    flagged = [r for r in accepted if r["qc"].get("flags")]
    others = [r for r in accepted if not r["qc"].get("flags")]
    return (flagged + others)[:max_scans]


def _slice(vol: np.ndarray, spec: TaskSpec, axis: int, mm: float) -> np.ndarray:
    """A 2-D slice for display (rows bottom → top, radiological left/right)."""
    g = spec.grid
    i = int(round((mm - g.origin[axis]) / g.spacing[axis]))
    i = min(max(i, 0), vol.shape[axis] - 1)
    plane = np.take(vol, i, axis=axis)
    if axis != 0:  # x runs along the first remaining axis: right on the left
        plane = plane[::-1, :]
    return plane.T


def write_montage(rows: Sequence[dict], spec: TaskSpec, path: Path) -> Path:
    """Draw ``rows`` (report rows with an absolute ``cached_path``) into the PNG ``path``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import nibabel as nib

    outline = brain_mask(spec.grid).astype(np.float32)
    n = max(len(rows), 1)
    fig, axes = plt.subplots(n, len(SLICES), figsize=(2.0 * len(SLICES), 2.1 * n), squeeze=False)
    for r, row in enumerate(rows):
        vol = np.asarray(nib.load(row["cached_path"]).dataobj, dtype=np.float32)
        top = float(np.percentile(vol, 99.5)) or 1.0
        for c, (axis, mm) in enumerate(SLICES):
            ax = axes[r][c]
            ax.imshow(_slice(vol, spec, axis, mm), cmap="gray", vmin=0, vmax=top, origin="lower")
            ax.contour(_slice(outline, spec, axis, mm), levels=[0.5], colors="c", linewidths=0.6)
            ax.set_xticks([]), ax.set_yticks([])
        qc = row["qc"]
        flags = ", ".join(qc.get("flags", [])) or "ok"
        axes[r][0].set_ylabel(f"{row['patient_id']}\n{flags}", fontsize=7)
        axes[r][len(SLICES) // 2].set_title(
            f"r={qc.get('similarity', float('nan')):.2f}  cover {qc['brain_coverage']:.2f}  "
            f"tilt {qc.get('rotation_deg', float('nan')):.0f}°",
            fontsize=7,
        )
    for c, (axis, _) in enumerate(SLICES):
        if axis == 0:  # sagittal: anterior on the right, no left/right
            continue
        axes[0][c].text(0.02, 0.9, "R", color="y", fontsize=7, transform=axes[0][c].transAxes)
    fig.suptitle(f"{spec.name}: normalised scans over the template brain outline", fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path
