"""``report.html``: the validation report a clinical reviewer reads, from ``report.json``.

One self-contained file: inline CSS and inline SVG charts drawn here in Python, no
scripts, no external fonts, styles or images, so it opens offline and prints. Every
number comes from ``report.json`` (which holds only what the sites were allowed to send).
"""

from __future__ import annotations

import html
import math
from collections.abc import Iterable, Sequence

PALETTE = (
    "#1f77b4",
    "#d62728",
    "#2ca02c",
    "#9467bd",
    "#ff7f0e",
    "#17becf",
    "#8c564b",
    "#e377c2",
    "#7f7f7f",
    "#bcbd22",
)

CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,Helvetica,Arial,sans-serif;
margin:24px auto;max-width:1100px;color:#222;line-height:1.4;padding:0 16px}
h1{font-size:1.6em;margin-bottom:0}h2{border-bottom:2px solid #ddd;padding-bottom:4px;
margin-top:2em}h3{margin-bottom:4px}
table{border-collapse:collapse;margin:8px 0;font-size:.9em}
th,td{border:1px solid #ccc;padding:3px 8px;text-align:right}
th{background:#f2f2f2}td.l,th.l{text-align:left}
.muted{color:#666;font-size:.9em}.warn{color:#a60}.bad{color:#b00}
.charts{display:flex;flex-wrap:wrap;gap:16px}
figure{margin:0}figcaption{font-size:.85em;color:#444;max-width:460px}
.sw{display:inline-block;width:10px;height:10px;margin-right:4px;vertical-align:middle}
nav a{margin-right:12px}
svg text{font-family:inherit}
"""


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


def _num(x: object, digits: int = 3) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "—"
    if isinstance(x, float):
        return f"{x:.{digits}f}"
    return _e(x)


def _ci(pair: Sequence[float] | None, digits: int = 3) -> str:
    if not pair or pair[0] is None or pair[1] is None:
        return ""
    return f' <span class="muted">({pair[0]:.{digits}f}–{pair[1]:.{digits}f})</span>'


def _colors(names: Iterable[str]) -> dict[str, str]:
    return {n: PALETTE[i % len(PALETTE)] for i, n in enumerate(sorted(names))}


# --- SVG helpers --------------------------------------------------------------------------


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
                f"{_e((xfmt or fmt).format(t))}</text>"
            )
        for t in yticks or []:
            yy = self.y(t)
            self.parts.append(
                f'<line x1="{x0:.1f}" y1="{yy:.1f}" x2="{x1:.1f}" y2="{yy:.1f}" stroke="#eee"/>'
                f'<text x="{x0 - 5:.1f}" y="{yy + 4:.1f}" font-size="11" text-anchor="end">'
                f"{_e(fmt.format(t))}</text>"
            )
        self.parts.append(
            f'<text x="{(x0 + x1) / 2:.1f}" y="{self.h - 10}" font-size="12" '
            f'text-anchor="middle">{_e(xlabel)}</text>'
            f'<text x="14" y="{(y0 + y1) / 2:.1f}" font-size="12" text-anchor="middle" '
            f'transform="rotate(-90 14 {(y0 + y1) / 2:.1f})">{_e(ylabel)}</text>'
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
            f"{dash_attr}><title>{_e(title)}</title></polyline>"
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
                f'fill-opacity="0.75"><title>{_e(title)}</title></circle>'
            )

    def raw(self, svg: str) -> None:
        self.parts.append(svg)

    def svg(self, label: str) -> str:
        return (
            f'<svg viewBox="0 0 {self.w} {self.h}" width="{self.w}" height="{self.h}" '
            f'role="img" aria-label="{_e(label)}">' + "".join(self.parts) + "</svg>"
        )


def _legend(colors: dict[str, str], extra: Sequence[tuple[str, str]] = ()) -> str:
    items = [(n, c) for n, c in colors.items()] + list(extra)
    return " ".join(
        f'<span><span class="sw" style="background:{c}"></span>{_e(n)}</span>' for n, c in items
    )


def _figure(svg: str, caption: str, legend: str = "") -> str:
    leg = f"<div>{legend}</div>" if legend else ""
    return f"<figure>{svg}{leg}<figcaption>{caption}</figcaption></figure>"


# --- sections -----------------------------------------------------------------------------


def _roc_chart(title: str, curves: dict[str, list], colors: dict[str, str], pooled=None) -> str:
    p = Plot()
    ticks = [0, 0.2, 0.4, 0.6, 0.8, 1.0]
    p.axes("1 − specificity", "sensitivity", ticks, ticks)
    p.line([(0, 0), (1, 1)], "#bbb", 1, "4 3", "chance")
    for name, pts in curves.items():
        p.line(pts, colors.get(name, "#555"), title=name)
    if pooled:
        p.line(pooled, "#000", 2.6, title="pooled")
    return p.svg(title)


def section_sites(report: dict) -> str:
    final = report.get("final", {})
    rows = []
    for r in final.get("per_site", []):
        status = r.get("status", "ok")
        if status == "suppressed":
            rows.append(
                f'<tr><td class="l">{_e(r["site_id"])}</td><td class="l">{_e(r.get("role"))}</td>'
                f"<td>{_num(r.get('n'))}</td><td>{_num(r.get('n_positive'))}</td>"
                f'<td class="l warn" colspan="6">suppressed at the site: fewer than '
                f"{_num(r.get('min_cell_count'))} cases (or of one class); counts only</td></tr>"
            )
            continue
        bound = r.get("auc_bound")
        rows.append(
            f'<tr><td class="l">{_e(r["site_id"])}</td><td class="l">{_e(r.get("role"))}</td>'
            f"<td>{_num(r.get('n'))}</td><td>{_num(r.get('n_positive'))}</td>"
            f"<td>{_num(r.get('auc_exact'))}{_ci(r.get('auc_ci'))}"
            f'<br><span class="muted">histogram {_num(r.get("auc"))} ± {_num(bound)}</span></td>'
            f"<td>{_num(r.get('sensitivity'))}{_ci(r.get('sensitivity_ci'))}</td>"
            f"<td>{_num(r.get('specificity'))}{_ci(r.get('specificity_ci'))}</td>"
            f"<td>{_num(r.get('brier'))}</td><td>{_num(r.get('ece'))}</td>"
            f"<td>{_num(r.get('suppressed_cells', 0))}</td></tr>"
        )
    for role, pooled in (report.get("validation", {}).get("pooled") or {}).items():
        if not pooled:
            continue
        rows.append(
            f'<tr style="font-weight:600"><td class="l">pooled ({_e(role)})</td>'
            f'<td class="l">{_e(", ".join(pooled.get("sites", [])))}</td>'
            f"<td>{_num(pooled.get('n'))}</td><td>{_num(pooled.get('n_positive'))}</td>"
            f'<td><span class="muted">histogram</span> {_num(pooled.get("auc"))}'
            f'<br><span class="muted">± {_num(pooled.get("auc_bound"))}</span></td>'
            f"<td>{_num(pooled.get('sensitivity'))}</td><td>{_num(pooled.get('specificity'))}</td>"
            f"<td>{_num(pooled.get('brier'))}</td><td>{_num(pooled.get('ece'))}</td><td></td></tr>"
        )
    for m in final.get("missing", []):
        rows.append(
            f'<tr><td class="l">{_e(m["site_id"])}</td><td class="l">{_e(m.get("role", "?"))}</td>'
            f'<td class="l bad" colspan="8">missing from the validation: {_e(m.get("reason", ""))}'
            "</td></tr>"
        )
    thr = report.get("validation", {}).get("threshold", 0.5)
    return (
        '<h2 id="sites">Results per site</h2>'
        "<table><tr><th class='l'>site</th><th class='l'>role</th><th>n</th><th>positive</th>"
        "<th>AUC (95 % CI)</th><th>sensitivity (95 % CI)</th><th>specificity (95 % CI)</th>"
        "<th>Brier</th><th>ECE</th><th>merged cells</th></tr>" + "".join(rows) + "</table>"
        f'<p class="muted">Sensitivity and specificity at the pre-specified threshold {thr} '
        "(Wilson intervals). AUC: computed at the site on its own scores, with its DeLong 95 % "
        "interval; below it, the AUC from the score histogram the site released (± the largest "
        "error binning and small-cell merging can cause), which the pooled rows and ROC curves "
        "use. "
        "Training sites are evaluated on their held-out test split, holdout sites on all their "
        "scans. Only the intervals, never the scores, left the sites.</p>"
    )


def section_roc(report: dict) -> str:
    val = report.get("validation", {})
    roc = val.get("roc", {})
    per_site = roc.get("per_site", {})
    if not per_site:
        return '<h2 id="roc">ROC curves</h2><p class="muted">No site released a histogram.</p>'
    colors = _colors(per_site)
    pooled = roc.get("pooled", {})
    figs = [
        _figure(
            _roc_chart("ROC per site", per_site, colors, pooled.get("all")),
            "ROC per site (coloured) and pooled over all sites from summed histograms (black).",
            _legend(colors, [("pooled", "#000")]),
        )
    ]
    for role in ("train", "holdout"):
        if role in pooled:
            curves = {
                k: v
                for k, v in per_site.items()
                if _role_of(report, k) == role  # type: ignore[comparison-overlap]
            }
            figs.append(
                _figure(
                    _roc_chart(f"ROC {role}", curves, colors, pooled[role]),
                    f"{role} sites and their pooled ROC (black).",
                )
            )
    return '<h2 id="roc">ROC curves</h2><div class="charts">' + "".join(figs) + "</div>"


def _role_of(report: dict, site: str) -> str | None:
    for r in report.get("final", {}).get("per_site", []):
        if r["site_id"] == site:
            return r.get("role")
    return None


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
    for i, r in enumerate(rows):
        yv = n - i
        lo, hi = (r.get("auc_ci") or [None, None])[:2]
        if lo is not None and hi is not None:
            p.line([(lo, yv), (hi, yv)], "#333", 1.5, title=f"{r['site_id']} 95 % CI")
        auc = r.get("auc_exact") if r.get("auc_exact") is not None else r["auc"]
        size = 3 + 5 * math.sqrt(max(r.get("n", 1), 1) / max(max(x.get("n", 1) for x in rows), 1))
        p.raw(
            f'<rect x="{p.x(auc) - size:.1f}" y="{p.y(yv) - size:.1f}" width="{2 * size:.1f}" '
            f'height="{2 * size:.1f}" fill="#1f77b4"><title>{_e(r["site_id"])}</title></rect>'
        )
        ci_txt = f"{lo:.2f}–{hi:.2f}" if lo is not None and hi is not None else ""
        p.raw(
            f'<text x="6" y="{p.y(yv) + 4:.1f}" font-size="12">{_e(r["site_id"])} '
            f"({_e(r.get('role', ''))})</text>"
            f'<text x="{p.w - 4}" y="{p.y(yv) - 8:.1f}" font-size="10" text-anchor="end" '
            f'fill="#555">{auc:.2f} {ci_txt}</text>'
        )
    if meta:
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
    return p.svg(title)


def _meta_text(meta: dict) -> str:
    if meta.get("pi_low") is not None:
        lo, hi = max(0.0, meta["pi_low"]), min(1.0, meta["pi_high"])
        clipped = " (clipped to [0, 1])" if (lo, hi) != (meta["pi_low"], meta["pi_high"]) else ""
        pi = f"95 % prediction interval {lo:.3f} to {hi:.3f}{clipped}"
    else:
        pi = "no prediction interval (fewer than 3 sites)"
    return (
        f"Random-effects AUC {meta['estimate']:.3f} (95 % CI {meta['ci_low']:.3f}–"
        f"{meta['ci_high']:.3f}) over {meta['k']} sites; τ² = {meta['tau2']:.4f}, "
        f"I² = {100 * meta['i2']:.0f} %, Q = {meta['q']:.2f} (p = {meta['q_pvalue']:.3f}); {pi}."
    )


def section_forest(report: dict) -> str:
    val = report.get("validation", {})
    rows = [
        r
        for r in report.get("final", {}).get("per_site", [])
        if r.get("status", "ok") == "ok" and r.get("auc") is not None
    ]
    out = ['<h2 id="forest">Site AUCs and meta-analysis</h2>']
    if not rows:
        return out[0] + '<p class="muted">No site released an AUC.</p>'
    meta = (val.get("meta_analysis") or {}).get("all")
    out.append(
        _figure(
            forest_plot(rows, meta, "Forest plot of site AUCs"),
            "Squares: AUC computed at each site (size ∝ cases) with its DeLong 95 % interval. "
            "Diamond: "
            "DerSimonian–Laird random-effects estimate and 95 % CI; dashed red: 95 % "
            "prediction interval for a new site.",
        )
    )
    for group, m in (val.get("meta_analysis") or {}).items():
        if m:
            out.append(f"<p><b>{_e(group)}</b>: {_e(_meta_text(m))}</p>")
    if not meta:
        out.append('<p class="muted">Meta-analysis needs at least two sites with an AUC.</p>')
    return "".join(out)


def section_calibration(report: dict) -> str:
    cal = report.get("validation", {}).get("calibration", {})
    per_site = {k: v for k, v in (cal.get("per_site") or {}).items() if v}
    if not per_site:
        return ""
    colors = _colors(per_site)
    p = Plot()
    ticks = [0, 0.2, 0.4, 0.6, 0.8, 1.0]
    p.axes("mean predicted probability", "observed fraction positive", ticks, ticks)
    p.line([(0, 0), (1, 1)], "#bbb", 1, "4 3", "perfect calibration")
    nmax = max(pt["n"] for pts in per_site.values() for pt in pts)
    for name, pts in per_site.items():
        xy = [(pt["mean_predicted"], pt["observed"]) for pt in pts]
        p.line(xy, colors[name], 1.2, title=name)
        p.points(xy, colors[name], [2 + 4 * math.sqrt(pt["n"] / nmax) for pt in pts], name)
    pooled = (cal.get("pooled") or {}).get("all")
    if pooled:
        p.line(
            [(pt["mean_predicted"], pt["observed"]) for pt in pooled], "#000", 2.4, title="pooled"
        )
    bins = report.get("validation", {}).get("calibration_bins", 10)
    return '<h2 id="calibration">Calibration</h2>' + _figure(
        p.svg("Reliability diagram"),
        f"Reliability diagram from {bins} fixed probability bins (point size ∝ cases); "
        "black: pooled. Bins the sites merged under the small-cell rule appear as one point.",
        _legend(colors, [("pooled", "#000")]),
    )


def section_predictive(report: dict) -> str:
    pv = report.get("validation", {}).get("predictive_values", {})
    table = pv.get("per_site") or []
    if not table:
        return ""
    head = "<tr><th class='l'>site</th><th>prevalence</th><th>PPV (range)</th><th>NPV (range)</th></tr>"
    rows = []
    for site in table:
        for i, v in enumerate(site["values"]):
            label = "site's own" if v.get("source") == "site" else "given"
            rows.append(
                f"<tr><td class='l'>{_e(site['site_id']) if i == 0 else ''}</td>"
                f"<td>{v['prevalence']:.3f} <span class='muted'>{label}</span></td>"
                f"<td>{_num(v.get('ppv'))}{_ci(v.get('ppv_ci'))}</td>"
                f"<td>{_num(v.get('npv'))}{_ci(v.get('npv_ci'))}</td></tr>"
            )
    return (
        '<h2 id="pv">Predictive values</h2>'
        f"<table>{head}{''.join(rows)}</table>"
        "<p class=\"muted\">PPV and NPV at the operating threshold by Bayes' rule from the site's "
        "sensitivity and specificity, at its own prevalence and at the prevalences given in the "
        "run config (report-prevalences): a screening population is not a memory clinic. Ranges "
        "combine the ends of the Wilson intervals.</p>"
    )


def section_training(report: dict) -> str:
    rounds = report.get("rounds") or []
    loss: dict[str, list] = {}
    test_loss: dict[str, list] = {}
    auc: dict[str, list] = {}
    for r in rounds:
        for site, t in (r.get("train") or {}).items():
            if t.get("train-loss") is not None:
                loss.setdefault(site, []).append((r["round"], t["train-loss"]))
        for site, e in (r.get("evaluate") or {}).items():
            value = e.get("auc_exact") if e.get("auc_exact") is not None else e.get("auc")
            if value is not None:
                auc.setdefault(site, []).append((r["round"], value))
            if e.get("mean_loss") is not None:
                test_loss.setdefault(site, []).append((r["round"], e["mean_loss"]))
    if not loss and not auc and not test_loss:
        return ""
    colors = _colors(set(loss) | set(auc) | set(test_loss))
    last = max(r["round"] for r in rounds)
    first = min(r["round"] for r in rounds)
    xlim = (float(first) - 0.5, float(last) + 0.5) if first == last else (float(first), float(last))
    step = max(1, math.ceil((last - first + 1) / 8))
    xticks = list(range(first, last + 1, step))
    figs = []
    for series, ylabel, caption in (
        (loss, "train loss", "Mean training loss per round and site (as each site reported it)."),
        (test_loss, "test log-loss", "Mean log-loss of the global model on each test split."),
    ):
        if not series:
            continue
        top = max(v for pts in series.values() for _, v in pts) * 1.1 or 1.0
        p = Plot(xlim=xlim, ylim=(0.0, top))
        p.axes("round", ylabel, xticks, _ticks(0, top), "{:.2f}", "{:.0f}")
        for name, pts in series.items():
            p.line(pts, colors[name], title=name)
            p.points(pts, colors[name], 2.5, name)
        figs.append(_figure(p.svg(ylabel), caption))
    if auc:
        p = Plot(xlim=xlim)
        p.axes("round", "test AUC", xticks, [0, 0.2, 0.4, 0.6, 0.8, 1.0], "{:.1f}", "{:.0f}")
        for name, pts in auc.items():
            p.line(pts, colors[name], title=name)
            p.points(pts, colors[name], 2.5, name)
        figs.append(
            _figure(
                p.svg("Test AUC"),
                "AUC of the global model on each training site's test split (computed at the site).",
            )
        )
    return (
        '<h2 id="training">Training curves</h2><div>'
        + _legend(colors)
        + '</div><div class="charts">'
        + "".join(figs)
        + "</div>"
    )


def _ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    return [lo + (hi - lo) * i / n for i in range(n + 1)]


def _generic_table(value: object) -> str:
    """Any JSON value as nested tables (used for sections other modules add)."""
    if isinstance(value, dict):
        if not value:
            return '<span class="muted">—</span>'
        rows = "".join(
            f"<tr><th class='l'>{_e(k)}</th><td class='l'>{_generic_table(v)}</td></tr>"
            for k, v in value.items()
        )
        return f"<table>{rows}</table>"
    if isinstance(value, list):
        if value and all(isinstance(v, dict) for v in value):
            keys: list[str] = []
            for v in value:
                keys += [k for k in v if k not in keys]
            head = "".join(f"<th class='l'>{_e(k)}</th>" for k in keys)
            body = "".join(
                "<tr>"
                + "".join(f"<td class='l'>{_generic_table(v.get(k))}</td>" for k in keys)
                + "</tr>"
                for v in value
            )
            return f"<table><tr>{head}</tr>{body}</table>"
        return _e(", ".join(_num(v) for v in value))
    return _num(value, 4)


def section_privacy(report: dict) -> str:
    privacy = report.get("privacy")
    body = (
        _generic_table(privacy)
        if privacy
        else '<p class="muted">No differential-privacy accounting in this run.</p>'
    )
    return '<h2 id="privacy">Privacy</h2>' + body


def section_data(report: dict) -> str:
    dc = report.get("data_counts") or {}
    per_site = {k: v for k, v in (dc.get("per_site") or {}).items()}
    k_of = {s["site_id"]: s.get("min_cell_count") for s in report.get("sites", [])}
    role_of = {s["site_id"]: s.get("role") for s in report.get("sites", [])}
    rows = []
    for site in sorted(set(per_site) | set(k_of)):
        counts = per_site.get(site) or {}
        cells = []
        for field in ("tracer", "manufacturer", "model"):
            cats = counts.get(field) or {}
            cells.append(
                "<td class='l'>"
                + (
                    "<br>".join(f"{_e(n)}: {c}" for n, c in cats.items())
                    or "<span class='muted'>—</span>"
                )
                + "</td>"
            )
        rows.append(
            f"<tr><td class='l'>{_e(site)}</td><td class='l'>{_e(role_of.get(site, ''))}</td>"
            + "".join(cells)
            + f"<td>{_num(k_of.get(site))}</td></tr>"
        )
    sites = {s["site_id"]: s for s in report.get("sites", [])}
    counts_rows = "".join(
        f"<tr><td class='l'>{_e(k)}</td><td>{s.get('num_examples')}</td><td>{s.get('num_train')}</td>"
        f"<td>{s.get('num_test')}</td><td>{s.get('num_positive')}</td></tr>"
        for k, s in sorted(sites.items())
    )
    return (
        '<h2 id="data">Data per site, tracer and scanner</h2>'
        "<table><tr><th class='l'>site</th><th>labelled scans</th><th>train</th><th>test</th>"
        f"<th>positive</th></tr>{counts_rows}</table>"
        "<table><tr><th class='l'>site</th><th class='l'>role</th><th class='l'>tracer</th>"
        "<th class='l'>manufacturer</th><th class='l'>scanner model</th><th>min cell count</th></tr>"
        + "".join(rows)
        + "</table>"
        '<p class="muted">Accepted series per tracer and scanner (DICOM (0008,0070) Manufacturer, '
        "(0008,1090) Manufacturer's Model Name) as released by each site; categories with fewer "
        "scans than the site's min cell count are pooled into “other” or withheld.</p>"
    )


def section_suppression(report: dict) -> str:
    val = report.get("validation", {})
    items = val.get("suppressed") or []
    missing = report.get("final", {}).get("missing") or []
    lis = [
        f"<li>{_e(s['site_id'])} ({_e(s.get('role'))}): {_e(s['what'])}"
        f" (min cell count {_num(s.get('min_cell_count'))})</li>"
        for s in items
    ] + [
        f'<li class="bad">{_e(m["site_id"])} ({_e(m.get("role", "?"))}) is missing: '
        f"{_e(m.get('reason', ''))}</li>"
        for m in missing
    ]
    body = f"<ul>{''.join(lis)}</ul>" if lis else "<p>Nothing suppressed; every site answered.</p>"
    return '<h2 id="gaps">Suppressed and missing</h2>' + body


def section_loso(report: dict) -> str:
    loso = report.get("loso")
    if not loso:
        return ""
    rows = []
    forest_rows = []
    for f in loso.get("folds", []):
        r = f.get("result") or {}
        status = f.get("status", "ok")
        if status != "ok" or r.get("auc") is None:
            rows.append(
                f"<tr><td class='l'>{_e(f['left_out'])}</td><td class='l warn' colspan='5'>"
                f"{_e(status)}</td></tr>"
            )
            continue
        forest_rows.append({**r, "site_id": f["left_out"], "role": "left out"})
        rows.append(
            f"<tr><td class='l'>{_e(f['left_out'])}</td><td>{_num(r.get('n'))}</td>"
            f"<td>{_num(r.get('auc_exact', r.get('auc')))}{_ci(r.get('auc_ci'))}</td>"
            f"<td>{_num(r.get('sensitivity'))}{_ci(r.get('sensitivity_ci'))}</td>"
            f"<td>{_num(r.get('specificity'))}{_ci(r.get('specificity_ci'))}</td>"
            f"<td>{_num(r.get('brier'))}</td></tr>"
        )
    summary = loso.get("summary") or {}
    meta = summary.get("meta_analysis")
    parts = [
        '<h2 id="loso">Leave-one-site-out validation</h2>',
        "<p>Each training site in turn is left out of training and evaluated, on all its "
        "scans, by the federation trained without it.</p>",
        "<table><tr><th class='l'>left-out site</th><th>n</th><th>AUC (95 % CI)</th>"
        "<th>sensitivity</th><th>specificity</th><th>Brier</th></tr>" + "".join(rows) + "</table>",
    ]
    if summary.get("mean_auc") is not None:
        parts.append(
            f"<p>Mean left-out AUC {summary['mean_auc']:.3f} over {summary['folds_with_auc']} "
            f"fold(s) (range {summary['min_auc']:.3f}–{summary['max_auc']:.3f}).</p>"
        )
    if forest_rows:
        parts.append(
            _figure(
                forest_plot(forest_rows, meta, "LOSO forest plot"),
                "Left-out site AUCs with the sites' DeLong intervals and their random-effects "
                "pooling.",
            )
        )
    if meta:
        parts.append(f"<p>{_e(_meta_text(meta))}</p>")
    return "".join(parts)


def render_html(report: dict) -> str:
    """The whole report as one self-contained HTML document."""
    from fedmi.server.report.html_extras import NAV as UNCERTAINTY_NAV
    from fedmi.server.report.html_extras import sections as uncertainty_sections

    cfg = report.get("run_config", {})
    n_rounds = len(report.get("rounds") or [])
    meta_line = (
        f"task <b>{_e(report.get('task'))}</b> · method <b>{_e(report.get('method'))}</b> · "
        f"{n_rounds} round(s) reported · seed {_e(cfg.get('seed', '—'))}"
    )
    sections = [
        section_sites(report),
        section_roc(report),
        section_forest(report),
        section_calibration(report),
        section_predictive(report),
        section_loso(report),
        *uncertainty_sections(report),  # uncertainty, OOD, biomarker
        section_training(report),
        section_data(report),
        section_privacy(report),
        section_suppression(report),
    ]
    nav = " ".join(
        f'<a href="#{a}">{t}</a>'
        for a, t in (
            ("sites", "Sites"),
            ("roc", "ROC"),
            ("forest", "Meta-analysis"),
            ("calibration", "Calibration"),
            ("pv", "PPV/NPV"),
            ("loso", "LOSO"),
            *UNCERTAINTY_NAV,
            ("training", "Training"),
            ("data", "Data"),
            ("privacy", "Privacy"),
            ("gaps", "Gaps"),
        )
        if f'id="{a}"' in "".join(sections)
    )
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        f"<title>fedmi validation report — {_e(report.get('task'))}</title>"
        f"<style>{CSS}</style></head><body>"
        f"<h1>fedmi validation report</h1><p>{meta_line}</p><nav>{nav}</nav>"
        + "".join(sections)
        + '<p class="muted">Generated by fedmi from report.json. Every statistic was computed '
        "from what the sites were allowed to send (declared in shared/contract.py).</p>"
        "</body></html>\n"
    )
