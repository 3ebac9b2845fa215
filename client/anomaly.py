"""Anomaly maps at prediction: a study's regional z-scores against the federation's
normative model of the aging brain (:mod:`fedmi.shared.normative`).

When the verified model package holds ``normative_model.json``
(:data:`fedmi.shared.package.NORMATIVE`), ``fedmi-site predict`` scores every assessable
study against it (:func:`normative_record`): the study's regional log profile on the
task's template grid, age- and sex-adjusted z per region against the population model
after the **site's own offset** (:func:`site_offset_from_ingest`: estimated from the normals
of the site's last federation ingest, which never leave the site; none when the site has
no labelled normals), the anomaly score and the regions below
:data:`~fedmi.shared.normative.Z_THRESHOLD`. The z-scores are painted back on the template grid (:func:`zmap_volume`) and drawn as axial slices over the scan
(:func:`zmap_figure`) for the HTML report and a DICOM Secondary Capture.

Research use only: a z-map shows where a scan differs from the federation's normals, not
a diagnosis.
"""

from __future__ import annotations

import base64
import io
import logging
from pathlib import Path

import numpy as np

from fedmi.shared.grid import Grid
from fedmi.shared.normative import (
    AGE_CENTRE,
    AGE_CLIP,
    AGE_SPAN,
    Z_THRESHOLD,
    NormativeError,
    NormativeModel,
    anomaly_score,
    evaluation_groups,
    flag_threshold,
    profile_of,
    regions_below,
)
from fedmi.shared.package import NORMATIVE, ModelPackage, PackageError
from fedmi.shared.regional import region_index

log = logging.getLogger(__name__)

#: Colour scale of the z-map figure: z from 0 down to this.
Z_FLOOR = -5.0
#: Axial slices drawn in the figure.
N_SLICES = 8
FIGURE_CAPTION = (
    "Regional z-scores against the federation's normal aging model, age- and sex-adjusted; "
    "blue = below normal (only z < 0 is coloured, scale 0 to -5, fading out towards 0). Axial "
    "slices, inferior to superior, patient's right on the left."
)
AGE_UNKNOWN = f"age unknown: compared with {AGE_CENTRE:.0f}-year-olds"
SEX_UNKNOWN = "sex unknown: compared with the average of women and men"


def load_normative(pkg: ModelPackage, grid: Grid) -> NormativeModel | None:
    """The package's normative model, checked against the task grid's regions; ``None``
    when the package has no :data:`~fedmi.shared.package.NORMATIVE` member.

    Raises
    ------
    PackageError
        The member is malformed or its regions are not the grid's (the message names it).
    """
    raw = pkg.members.get(NORMATIVE)
    if raw is None:
        return None
    try:
        model = NormativeModel.from_json(raw.decode("utf-8"))
    except (NormativeError, UnicodeDecodeError, TypeError, ValueError) as exc:
        raise PackageError(
            f"package member {NORMATIVE} is malformed: {exc}; no study was scored"
        ) from None
    _, names = region_index(grid)
    if tuple(model.region_names) != tuple(names):
        raise PackageError(
            f"package member {NORMATIVE} has {len(model.region_names)} regions that are not "
            f"the {len(names)} regions of the task grid {grid.shape}; no study was scored"
        )
    return model


def _sex(sex: str | None) -> str | None:
    """``F`` or ``M`` from (0010,0040) *Patient's Sex*; ``None`` for anything else."""
    code = str(sex or "").upper()
    return code if code in ("F", "M") else None


def site_offset_from_ingest(
    model: NormativeModel, ingest_dir: Path, task: str, grid: Grid
) -> tuple[tuple[np.ndarray, np.ndarray] | None, int]:
    """The site's own offset from the normals of its last federation ingest, and their count.

    The normals are the accepted scans of ``ingest_dir`` (``STATE/ingest``, written by
    ``fedmi-site check`` / ``join``) labelled the task's normal group
    (:func:`fedmi.shared.normative.evaluation_groups`, e.g. ``CN``), with the labels as at
    that ingest; the offset is :meth:`NormativeModel.site_offset` of their profiles, ages
    and sexes. ``(None, 0)`` when the folder holds no ingest of ``task`` or no normal: the
    population model is then used as it is. A normal whose cached volume cannot be read
    (damaged or removed since) is left out and logged, without its path.
    """
    from fedmi.client.ingest.cache import DamagedCache, read_volume
    from fedmi.client.ingest.report import IngestReport, load_accepted

    ingest_dir = Path(ingest_dir)
    try:
        if IngestReport.load(ingest_dir).task != task:
            return None, 0
        rows = load_accepted(ingest_dir)
    except (OSError, ValueError, TypeError, KeyError):
        return None, 0
    normal = evaluation_groups(task)[0]
    profiles, used = [], []
    for row in (r for r in rows if r.get("label") == normal):
        try:
            volume = read_volume(Path(row["cached_path"]), row.get("volume_sha256"))
        except (DamagedCache, OSError, ValueError, KeyError) as exc:
            log.warning(
                "a normal scan of the ingest cache is unreadable (%s): left out of "
                "the site's offset; `fedmi-site ingest` rebuilds it",
                type(exc).__name__,
            )
            continue
        profiles.append(profile_of(volume, grid)[0])
        used.append(row)
    if not used:
        return None, 0
    ages = [r.get("age_years") for r in used]
    offset = model.site_offset(np.array(profiles), ages, [_sex(r.get("sex")) for r in used])
    return offset, len(used)


def normative_record(
    model: NormativeModel,
    volume: np.ndarray,
    grid: Grid,
    age_years: float | None,
    sex: str | None,
    offset: tuple[np.ndarray, np.ndarray] | None = None,
    site_normals: int = 0,
) -> tuple[dict, np.ndarray]:
    """The record's ``normative`` entry for one template-grid volume, and the raw z ``(R,)``.

    Parameters
    ----------
    age_years, sex
        From the ingest row ((0010,1010) / birth date, (0010,0040)); ``None``: unknown.
    offset, site_normals
        The site's own offset (:func:`site_offset_from_ingest`) and how many normals gave
        it; ``None``: the population model alone.
    """
    profile, names = profile_of(volume, grid)
    sex_used = _sex(sex)
    z = model.zscores(profile, age_years, sex_used, offset)
    notes = []
    age_unknown = age_years is None
    if not model.adjust_age:
        notes.append("the model is not age-adjusted: age was not used")
    elif age_unknown:
        notes.append(AGE_UNKNOWN)
    else:
        lo, hi = AGE_CENTRE - AGE_CLIP * AGE_SPAN, AGE_CENTRE + AGE_CLIP * AGE_SPAN
        if not lo <= float(age_years) <= hi:
            notes.append(
                f"age {float(age_years):.0f} is outside the model's {lo:.0f}-{hi:.0f} years: "
                f"compared with {min(max(float(age_years), lo), hi):.0f}-year-olds"
            )
    if sex_used is None:
        notes.append(SEX_UNKNOWN)
    below = regions_below(z, names, Z_THRESHOLD)
    record = {
        "age_years": None if age_unknown else round(float(age_years), 1),
        "age_unknown": age_unknown,
        "sex": sex_used,
        "notes": notes,
        "zscores": {n: round(float(v), 2) for n, v in zip(names, z, strict=True)},
        "anomaly_score": round(anomaly_score(z), 3),
        # flagged: the score is above what 95 % of normals reach (shared/normative.py)
        "flag_threshold": round(flag_threshold(len(names)), 3),
        "flagged": bool(anomaly_score(z) > flag_threshold(len(names))),
        "threshold": Z_THRESHOLD,
        "regions_below": [{"region": n, "z": round(v, 2)} for n, v in below],
        "site_offset": offset is not None,
        "site_normals": int(site_normals) if offset is not None else 0,
        "model": {
            "n_sites": model.n_sites,
            "n_scans": model.n_scans,
            "dp": model.dp,
            "adjust_age": model.adjust_age,
        },
    }
    return record, z


def zmap_volume(z: np.ndarray, grid: Grid) -> np.ndarray:
    """Each voxel of ``grid`` gets its region's z (``float32``); NaN outside every region."""
    index, names = region_index(grid)
    z = np.asarray(z, dtype=np.float32)
    if z.shape != (len(names),):
        raise NormativeError(f"{z.size} z-scores for {len(names)} regions")
    flat = np.where(index >= 0, z[np.maximum(index, 0)], np.float32(np.nan))
    return flat.reshape(grid.shape).astype(np.float32)


def _slices(zmap: np.ndarray, volume: np.ndarray, n: int) -> list[int]:
    """``n`` axial slice indices spread over the slices that hold regions."""
    inside = np.flatnonzero(np.any(np.isfinite(zmap), axis=(0, 1)))
    if inside.size == 0:
        inside = np.flatnonzero(np.any(volume > 0, axis=(0, 1)))
    if inside.size == 0:
        inside = np.arange(volume.shape[2])
    lo, hi = int(inside[0]), int(inside[-1])
    return sorted({int(round(v)) for v in np.linspace(lo + 1, max(hi - 1, lo + 1), n)})


def zmap_figure(
    zmap: np.ndarray,
    volume: np.ndarray,
    grid: Grid,
    title: str = "",
    *,
    n_slices: int = N_SLICES,
    dpi: int = 100,
) -> np.ndarray:
    """Axial slices of the negative z-map over the scan: an RGB ``uint8`` array.

    The scan is in grey, the z-map coloured only where ``z < 0`` (scale 0 to
    :data:`Z_FLOOR`, darker blue = further below normal; NaN outside the regions), with a
    colour bar. Arrays are
    indexed ``[x, y, z]`` in RAS (:class:`~fedmi.shared.grid.Grid`); slices are shown with
    the patient's right on the left and anterior up.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import LinearSegmentedColormap, Normalize
    from matplotlib.figure import Figure

    zmap = np.asarray(zmap, dtype=np.float32)
    volume = np.asarray(volume, dtype=np.float32)
    ks = _slices(zmap, volume, n_slices)
    cols = 4
    rows = -(-len(ks) // cols)
    fig = Figure(figsize=(cols * 2.0 + 0.9, rows * 2.3 + 0.6), dpi=dpi, facecolor="black")
    canvas = FigureCanvasAgg(fig)
    # dark blue at z = -5, fading to transparent at z = 0 (small deficits stay faint)
    cmap = LinearSegmentedColormap.from_list(
        "fedmi_below",
        [
            (0.0, (0.03, 0.06, 0.31, 0.95)),
            (0.6, (0.12, 0.31, 0.82, 0.9)),
            (0.8, (0.22, 0.63, 1.0, 0.55)),
            (1.0, (0.62, 0.95, 1.0, 0.0)),
        ],
    )
    norm = Normalize(vmin=Z_FLOOR, vmax=0.0)
    vmax = float(np.percentile(volume[volume > 0], 99.5)) if np.any(volume > 0) else 1.0
    top = 1.0 - 0.5 / fig.get_figheight()
    spec = fig.add_gridspec(
        rows, cols, left=0.01, right=0.87, top=top, bottom=0.02, wspace=0.03, hspace=0.03
    )
    for i, k in enumerate(ks):
        ax = fig.add_subplot(spec[i // cols, i % cols])
        # [x, y] → image rows = y (anterior up), columns = x reversed (patient right left)
        scan = volume[::-1, :, k].T
        neg = np.ma.masked_where(~(zmap[::-1, :, k].T < 0), zmap[::-1, :, k].T)
        ax.imshow(scan, cmap="gray", vmin=0.0, vmax=vmax, origin="lower", interpolation="nearest")
        ax.imshow(neg, cmap=cmap, norm=norm, origin="lower", interpolation="nearest")
        ax.set_axis_off()
        z_mm = grid.origin[2] + k * grid.spacing[2]
        ax.text(1, 1, f"z {z_mm:+.0f} mm", color="white", fontsize=7, va="bottom", ha="left")
        if i == 0:
            ax.text(0.02, 0.98, "R", color="white", fontsize=8, va="top", transform=ax.transAxes)
            ax.text(
                0.98,
                0.98,
                "L",
                color="white",
                fontsize=8,
                va="top",
                ha="right",
                transform=ax.transAxes,
            )
    cax = fig.add_axes((0.9, 0.1, 0.025, 0.75))
    bar = fig.colorbar(ScalarMappable(norm=norm, cmap=cmap), cax=cax)
    bar.set_label("regional z", color="white")
    bar.ax.tick_params(colors="white", labelsize=8)
    if title:
        fig.text(
            0.02, 1.0 - 0.3 / fig.get_figheight(), title, color="white", fontsize=10, va="center"
        )
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[:, :, :3].copy()


def png_bytes(rgb: np.ndarray) -> bytes:
    """An RGB ``uint8`` array as PNG bytes."""
    from matplotlib.image import imsave

    buf = io.BytesIO()
    imsave(buf, np.asarray(rgb, dtype=np.uint8), format="png")
    return buf.getvalue()


def data_uri(png: bytes) -> str:
    """A ``data:image/png;base64,...`` URI for a self-contained HTML report."""
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def summary_line(normative: dict) -> str:
    """One line: the anomaly score and the named regions (for the console, SR and SC)."""
    below = normative["regions_below"]
    named = ", ".join(f"{r['region']} {r['z']:+.1f}" for r in below) or "none"
    flag = " (above the normal range)" if normative.get("flagged") else ""
    return (
        f"anomaly score {normative['anomaly_score']:.2f}{flag}; regions below z = "
        f"{normative['threshold']:g}: {named}"
    )
