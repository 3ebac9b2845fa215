"""The per-study report as one A4 PDF page (``study-NNN.pdf``), matplotlib's PDF backend.

The same content as the HTML report (:func:`fedmi.client.predict.render_html`): the title,
the research-use statement, the verdict (class, probability, interval, operating point and
its source, or *not assessable* with the reason), the regions driving the result, the QC
flags and, when the package holds the normative model, the comparison with it and the
z-map figure. Every line is wrapped to the page's width and the text is cut (with a note
saying so) where it would run past the page: the page never overflows. No identifier
beyond what the HTML shows (age and sex of the normative comparison).
"""

from __future__ import annotations

import io
import textwrap
from dataclasses import dataclass

import numpy as np

from fedmi.shared.normative import ANOMALY_K
from fedmi.shared.package import ModelPackage

#: A4 portrait, inches.
PAGE = (8.27, 11.69)
MARGIN = 0.6
#: Characters per line of a monospace / proportional font of size 1 pt on the usable width
#: (conservative: the widest DejaVu glyphs are about 0.6 em).
_EM = 0.6
#: Regions listed at most in the normative section (the JSON record has all of them).
MAX_BELOW = 10
RED = "#b00000"


@dataclass
class _Line:
    text: str
    size: float = 9.5
    weight: str = "normal"
    color: str = "black"
    family: str = "sans-serif"


def _width_chars(size: float) -> int:
    usable_pt = (PAGE[0] - 2 * MARGIN) * 72
    return max(20, int(usable_pt / (_EM * size)))


def _para(text: str, **style) -> list[_Line]:
    """``text`` wrapped to the page's width in the given style."""
    size = style.get("size", 9.5)
    wrapped = textwrap.wrap(
        str(text), _width_chars(size), break_long_words=True, break_on_hyphens=True
    )
    return [_Line(t, **style) for t in wrapped or [""]]


def _normative_lines(nv: dict) -> list[_Line]:
    age = "unknown" if nv["age_years"] is None else f"{nv['age_years']:g} years"
    sex = {"F": "female", "M": "male"}.get(nv["sex"] or "", "unknown")
    out = [
        _Line(""),
        *_para("Comparison with the federation's normal aging model", size=12, weight="bold"),
    ]
    out += _para(
        f"Age {age}, sex {sex}. Anomaly score {nv['anomaly_score']:.2f} (minus the mean of the "
        f"{ANOMALY_K} lowest regional z; higher = further below normal): "
        f"{'ABOVE' if nv.get('flagged') else 'within'} the normal range (95 % of normals "
        f"score below {nv.get('flag_threshold', float('nan')):.2f}).",
        weight="bold" if nv.get("flagged") else "normal",
    )
    for note in nv["notes"]:
        out += _para(f"Note: {note}.")
    below = nv["regions_below"]
    if below:
        out += _para(f"Regions below z = {nv['threshold']:g}, lowest first:")
        for r in below[:MAX_BELOW]:
            out.append(_Line(f"  {r['region'][:60]:60s} z {r['z']:+.2f}", 8.5, family="monospace"))
        if len(below) > MAX_BELOW:
            out += _para(f"  ... and {len(below) - MAX_BELOW} more (see the JSON record)")
    else:
        out += _para(f"No region below z = {nv['threshold']:g}.")
    m = nv["model"]
    out += _para(
        f"Normative model: {m['n_sites']} site(s), {m['n_scans']:g} normal scans; "
        f"{'age- and sex-adjusted' if m['adjust_age'] else 'sex-adjusted (not age)'}; "
        f"{'differentially private statistics' if m['dp'] else 'no DP noise'}; population "
        "model without this site's own offset. z-scores show where the scan differs from the "
        "federation's normals: not a diagnosis.",
        size=8,
        color="#444444",
    )
    return out


def report_lines(rec: dict, pkg: ModelPackage) -> list[_Line]:
    """The page's text, top to bottom, each line already wrapped."""
    card = pkg.card
    lines = _para(f"{card.get('task')}: {card.get('description', '')}", size=15, weight="bold")
    lines += _para("fedmi result, model " + str(pkg.version), size=9, color="#444444")
    lines += _para(rec.get("research_use") or _research_use(), size=10, weight="bold", color=RED)
    lines.append(_Line(""))
    if rec["assessable"]:
        iv = rec["interval"]
        lines += _para(str(rec["class"]), size=16, weight="bold")
        lines += _para(
            f"probability {rec['probability']:.3f} (95 % interval {iv['low']:.3f}-"
            f"{iv['high']:.3f}; {iv.get('method', 'MC dropout')}); operating point "
            f"{rec['threshold']:.3f} ({rec['threshold_source']})",
            size=11,
        )
        if iv["crosses_threshold"]:
            lines += _para(
                "Uncertain: the interval crosses the operating point.", weight="bold", color=RED
            )
        regions = rec.get("regions") or []
        if regions:
            lines.append(_Line(""))
            lines += _para("Regions driving the result", size=12, weight="bold")
            lines.append(
                _Line(
                    f"  {'region':44s} {'ratio to ref.':>13s} {'standardised':>12s} "
                    f"{'share of logit':>14s}",
                    8.5,
                    family="monospace",
                    weight="bold",
                )
            )
            for r in regions:
                lines.append(
                    _Line(
                        f"  {r['region'][:44]:44s} {r['suvr']:13.3f} {r['z']:+12.2f} "
                        f"{r['logit_contribution']:+14.3f}",
                        8.5,
                        family="monospace",
                    )
                )
        flags = rec.get("qc_flags") or []
        lines.append(_Line(""))
        lines += _para(f"Quality flags: {', '.join(flags) if flags else 'none'}")
    else:
        lines += _para(f"Not assessable ({rec['reason']})", size=16, weight="bold")
        lines += _para(rec["message"], size=10)
    if rec.get("normative"):
        lines += _normative_lines(rec["normative"])
    return lines


def _research_use() -> str:
    from fedmi.client.research_use import RESEARCH_USE

    return RESEARCH_USE


def report_figure(rec: dict, pkg: ModelPackage, zmap_figure: np.ndarray | None = None):
    """The page as a matplotlib :class:`~matplotlib.figure.Figure` (A4, inches).

    ``zmap_figure``: the RGB z-map (:func:`fedmi.client.anomaly.zmap_figure`), drawn in the
    space the text leaves (and left out, with a note, when too little is left).
    """
    from matplotlib.figure import Figure

    from fedmi.client.anomaly import FIGURE_CAPTION

    fig = Figure(figsize=PAGE)
    w, h = PAGE
    footer = _para(
        f"Model {pkg.version} (device UID {pkg.device_uid}). " + _research_use(),
        size=7,
        color="#444444",
    )
    bottom = MARGIN + sum(_lead(f) for f in footer)
    lines = report_lines(rec, pkg)
    caption: list[_Line] = []
    if zmap_figure is not None and rec.get("normative"):
        caption = _para(FIGURE_CAPTION, size=7.5, color="#444444")
    y = h - MARGIN
    floor = bottom + 0.1
    # the text first, cut with a note where it would reach the footer
    note = _Line("... (cut: the full result is in the JSON record)", 8)
    fits = sum(_lead(line) for line in lines) <= y - floor
    fitted: list[tuple[_Line, float]] = []
    for line in lines:
        if not fits and y - _lead(line) < floor + _lead(note):
            y -= _lead(note)
            fitted.append((note, y))
            caption = []  # no room for the figure either
            break
        y -= _lead(line)
        fitted.append((line, y))
    for line, yy in fitted:
        _text(fig, line, MARGIN / w, yy / h)
    if caption:
        room = y - 0.1 - floor - sum(_lead(c) for c in caption)
        rows, cols = zmap_figure.shape[:2]
        iw = w - 2 * MARGIN
        ih = iw * rows / cols
        if ih > room:
            ih, iw = room, room * cols / rows
        if ih >= 1.5:  # a readable figure, else the note below
            top = y - 0.1
            ax = fig.add_axes(((w - iw) / 2 / w, (top - ih) / h, iw / w, ih / h))
            ax.imshow(np.asarray(zmap_figure, dtype=np.uint8), interpolation="antialiased")
            ax.set_axis_off()
            y = top - ih
            for c in caption:
                y -= _lead(c)
                _text(fig, c, MARGIN / w, y / h)
        else:
            y -= _lead(_Line("", 8))
            _text(fig, _Line("(z-map: see the HTML report)", 8), MARGIN / w, y / h)
    yy = bottom
    for f in footer:
        yy -= _lead(f)
        _text(fig, f, MARGIN / w, yy / h)
    return fig


def _lead(line: _Line) -> float:
    """Line height in inches."""
    return line.size * 1.35 / 72


def _text(fig, line: _Line, x: float, y: float) -> None:
    fig.text(
        x,
        y,
        line.text,
        fontsize=line.size,
        fontweight=line.weight,
        color=line.color,
        family=line.family,
        va="baseline",
        ha="left",
    )


def report_pdf(rec: dict, pkg: ModelPackage, zmap_figure: np.ndarray | None = None) -> bytes:
    """The one-page A4 PDF of one study's record."""
    from matplotlib.backends.backend_pdf import FigureCanvasPdf

    fig = report_figure(rec, pkg, zmap_figure)
    FigureCanvasPdf(fig)
    buf = io.BytesIO()
    fig.savefig(
        buf,
        format="pdf",
        metadata={"Title": "fedmi result (research use only)", "Creator": "fedmi"},
    )
    return buf.getvalue()
