"""The SVG charts of ``report.html``, drawn in Python: a :class:`Plot` with linear axes, the
legend and figure wrappers, and the ROC and forest charts more than one section draws."""

from __future__ import annotations

import math
from collections.abc import Sequence

from fedmi.server.report.html.common import esc
from fedmi.shared.stats import wilson_interval


class Plot:
    """A rectangular SVG chart with linear axes."""

    def __init__(
        self,
        width: int = 440,
        height: int = 340,
        xlim: tuple[float, float] = (0.0, 1.0),
        ylim: tuple[float, float] = (0.0, 1.0),
        margin: tuple[int, int, int, int] = (20, 20, 48, 56),  # top, right, bottom, left
    ) -> None:
        self.w, self.h, self.xlim, self.ylim = width, height, xlim, ylim
        self.top, self.right, self.bottom, self.left = margin
        self.parts: list[str] = []

    def x(self, v: float) -> float:
        lo, hi = self.xlim
        return self.left + (v - lo) / ((hi - lo) or 1.0) * (self.w - self.left - self.right)

    def y(self, v: float) -> float:
        lo, hi = self.ylim
        return (
            self.h - self.bottom - (v - lo) / ((hi - lo) or 1.0) * (self.h - self.top - self.bottom)
        )

    def axes(
        self,
        xlabel: str,
        ylabel: str,
        xticks: Sequence[float] | None = None,
        yticks: Sequence[float] | None = None,
        fmt: str = "{:.1f}",
        xfmt: str | None = None,
    ) -> None:
        x0, x1, y0, y1 = (
            self.x(self.xlim[0]),
            self.x(self.xlim[1]),
            self.y(self.ylim[0]),
            self.y(self.ylim[1]),
        )
        self.parts.append(
            f'<rect x="{x0:.1f}" y="{y1:.1f}" width="{x1 - x0:.1f}" height="{y0 - y1:.1f}" '
            'fill="#fff" stroke="#999"/>'
        )
        for t in xticks or []:
            xx = self.x(t)
            self.parts.append(
                f'<line x1="{xx:.1f}" y1="{y1:.1f}" x2="{xx:.1f}" y2="{y0:.1f}" stroke="#eee"/>'
                f'<text x="{xx:.1f}" y="{y0 + 15:.1f}" font-size="11" text-anchor="middle">'
                f"{esc((xfmt or fmt).format(t))}</text>"
            )
        for t in yticks or []:
            yy = self.y(t)
            self.parts.append(
                f'<line x1="{x0:.1f}" y1="{yy:.1f}" x2="{x1:.1f}" y2="{yy:.1f}" stroke="#eee"/>'
                f'<text x="{x0 - 5:.1f}" y="{yy + 4:.1f}" font-size="11" text-anchor="end">'
                f"{esc(fmt.format(t))}</text>"
            )
        self.parts.append(
            f'<text x="{(x0 + x1) / 2:.1f}" y="{self.h - 10}" font-size="12" '
            f'text-anchor="middle">{esc(xlabel)}</text>'
            f'<text x="14" y="{(y0 + y1) / 2:.1f}" font-size="12" text-anchor="middle" '
            f'transform="rotate(-90 14 {(y0 + y1) / 2:.1f})">{esc(ylabel)}</text>'
        )

    def line(
        self,
        pts: Sequence[Sequence[float]],
        color: str,
        width: float = 1.6,
        dash: str = "",
        title: str = "",
    ) -> None:
        if len(pts) < 2:
            return self.points(pts, color, title=title)
        d = " ".join(f"{self.x(a):.1f},{self.y(b):.1f}" for a, b in pts)
        dash_attr = f' stroke-dasharray="{dash}"' if dash else ""
        self.parts.append(
            f'<polyline points="{d}" fill="none" stroke="{color}" stroke-width="{width}"'
            f"{dash_attr}><title>{esc(title)}</title></polyline>"
        )

    def points(
        self,
        pts: Sequence[Sequence[float]],
        color: str,
        radius: float | Sequence[float] = 3.0,
        title: str = "",
    ) -> None:
        for i, (a, b) in enumerate(pts):
            r = radius[i] if isinstance(radius, Sequence) else radius
            self.parts.append(
                f'<circle cx="{self.x(a):.1f}" cy="{self.y(b):.1f}" r="{r:.1f}" fill="{color}" '
                f'fill-opacity="0.75"><title>{esc(title)}</title></circle>'
            )

    def raw(self, svg: str) -> None:
        self.parts.append(svg)

    def svg(self, label: str) -> str:
        return (
            f'<svg viewBox="0 0 {self.w} {self.h}" width="{self.w}" height="{self.h}" '
            f'role="img" aria-label="{esc(label)}">' + "".join(self.parts) + "</svg>"
        )


def legend(colors: dict[str, str], extra: Sequence[tuple[str, str]] = ()) -> str:
    """Colour swatches with names, for ``colors`` and then the ``extra`` pairs."""
    items = [(n, c) for n, c in colors.items()] + list(extra)
    return " ".join(
        f'<span><span class="sw" style="background:{c}"></span>{esc(n)}</span>' for n, c in items
    )


def figure(svg: str, caption: str, legend: str = "") -> str:
    """A chart in a ``<figure>`` with its legend and caption."""
    leg = f"<div>{legend}</div>" if legend else ""
    return f"<figure>{svg}{leg}<figcaption>{caption}</figcaption></figure>"


def sensitivity_band(
    pts: Sequence[Sequence[float]], n_positive: int
) -> list[tuple[float, float, float]]:
    """``(fpr, low, high)``: the Wilson 95 % interval of the sensitivity at each ROC point."""
    if n_positive < 1:
        return []
    out = []
    for fpr, tpr in pts:
        lo, hi = wilson_interval(round(tpr * n_positive), n_positive)
        out.append((float(fpr), lo, hi))
    return out


def _band(p: Plot, band: list[tuple[float, float, float]], color: str, title: str) -> None:
    """A shaded band from the upper ends (left to right) back along the lower ends."""
    if len(band) < 2:
        return
    upper = [f"{p.x(f):.1f},{p.y(hi):.1f}" for f, _, hi in band]
    lower = [f"{p.x(f):.1f},{p.y(lo):.1f}" for f, lo, _ in reversed(band)]
    p.raw(
        f'<polygon points="{" ".join(upper + lower)}" fill="{color}" fill-opacity="0.12" '
        f'stroke="none"><title>{esc(title)}</title></polygon>'
    )


def roc_chart(
    title: str,
    curves: dict[str, list],
    colors: dict[str, str],
    pooled=None,
    positives: dict[str, int] | None = None,
    pooled_positives: int | None = None,
) -> str:
    """ROC curves (one per site, coloured) on the chance diagonal, ``pooled`` in black; with
    ``positives`` (site → positive cases) each curve gets its Wilson 95 % sensitivity band."""
    p = Plot()
    ticks = [0, 0.2, 0.4, 0.6, 0.8, 1.0]
    p.axes("1 − specificity", "sensitivity", ticks, ticks)
    p.line([(0, 0), (1, 1)], "#bbb", 1, "4 3", "chance")
    for name, pts in curves.items():
        n_pos = (positives or {}).get(name)
        if n_pos:
            _band(p, sensitivity_band(pts, n_pos), colors.get(name, "#555"), f"{name} 95 % band")
    if pooled and pooled_positives:
        _band(p, sensitivity_band(pooled, pooled_positives), "#000", "pooled 95 % band")
    for name, pts in curves.items():
        p.line(pts, colors.get(name, "#555"), title=name)
        p.points(pts, colors.get(name, "#555"), 1.8, title=name)
    if pooled:
        p.line(pooled, "#000", 2.6, title="pooled")
    return p.svg(title)


def _forest_site(p: Plot, r: dict, yv: float, nmax: int) -> None:
    """One site's square (size ∝ cases), its interval and its label at height ``yv``."""
    lo, hi = (r.get("auc_ci") or [None, None])[:2]
    if lo is not None and hi is not None:
        p.line([(lo, yv), (hi, yv)], "#333", 1.5, title=f"{r['site_id']} 95 % CI")
    auc = r["auc"]
    size = 3 + 5 * math.sqrt(max(r.get("n", 1), 1) / nmax)
    p.raw(
        f'<rect x="{p.x(auc) - size:.1f}" y="{p.y(yv) - size:.1f}" width="{2 * size:.1f}" '
        f'height="{2 * size:.1f}" fill="#1f77b4"><title>{esc(r["site_id"])}</title></rect>'
    )
    ci_txt = f"{lo:.2f}–{hi:.2f}" if lo is not None and hi is not None else ""
    p.raw(
        f'<text x="6" y="{p.y(yv) + 4:.1f}" font-size="12">{esc(r["site_id"])} '
        f"({esc(r.get('role', ''))})</text>"
        f'<text x="{p.w - 4}" y="{p.y(yv) - 8:.1f}" font-size="10" text-anchor="end" '
        f'fill="#555">{auc:.2f} {ci_txt}</text>'
    )


def _forest_meta(p: Plot, meta: dict) -> None:
    """The random-effects diamond, its prediction interval (dashed) and label, at the bottom."""
    yv = 1.0
    est, lo, hi = meta["estimate"], meta["ci_low"], meta["ci_high"]
    d = (
        f"{p.x(lo):.1f},{p.y(yv):.1f} {p.x(est):.1f},{p.y(yv) - 8:.1f} "
        f"{p.x(hi):.1f},{p.y(yv):.1f} {p.x(est):.1f},{p.y(yv) + 8:.1f}"
    )
    p.raw(f'<polygon points="{d}" fill="#d62728"><title>random-effects AUC</title></polygon>')
    if meta.get("pi_low") is not None:
        pl, ph = max(0.0, meta["pi_low"]), min(1.0, meta["pi_high"])
        p.line([(pl, yv - 0.45), (ph, yv - 0.45)], "#d62728", 2, "5 3", "prediction interval")
    p.raw(
        f'<text x="6" y="{p.y(yv) + 4:.1f}" font-size="12" font-weight="600">'
        "random effects (DL)</text>"
        f'<text x="{p.w - 4}" y="{p.y(yv) - 10:.1f}" font-size="10" text-anchor="end" '
        f'fill="#555">{est:.2f} {lo:.2f}–{hi:.2f}</text>'
    )


def forest_plot(rows: Sequence[dict], meta: dict | None, title: str) -> str:
    """Site AUCs with intervals, the random-effects estimate (diamond) and prediction interval."""
    n = len(rows) + (2 if meta else 0)
    row_h, top = 26, 24
    p = Plot(
        width=640,
        height=top + row_h * (n + 1) + 40,
        xlim=(0.0, 1.0),
        ylim=(0.0, float(n + 1)),
        margin=(top, 30, 40, 170),
    )
    ticks = [0, 0.2, 0.4, 0.6, 0.8, 1.0]
    p.axes("AUC", "", ticks, [], xfmt="{:.1f}")
    p.line([(0.5, 0.2), (0.5, n + 0.8)], "#bbb", 1, "4 3", "chance")
    nmax = max(max(x.get("n", 1) for x in rows), 1)
    for i, r in enumerate(rows):
        _forest_site(p, r, n - i, nmax)
    if meta:
        _forest_meta(p, meta)
    return p.svg(title)
