"""Sections of ``report.html`` on how the run went: training curves, data per site, privacy,
what was suppressed or missing, and the leave-one-site-out validation (one federation
trained per left-out site)."""

from __future__ import annotations

import math

from fedmi.server.report.html.common import (
    esc,
    fmt_ci,
    fmt_num,
    linear_ticks,
    meta_text,
    site_colors,
)
from fedmi.server.report.html.svg import Plot, figure, forest_plot, legend


def _round_series(rounds: list[dict]) -> tuple[dict, dict, dict]:
    """Per site, ``(round, value)`` points of train loss, test log-loss and test AUC."""
    loss: dict[str, list] = {}
    test_loss: dict[str, list] = {}
    auc: dict[str, list] = {}
    for r in rounds:
        for site, t in (r.get("train") or {}).items():
            if t.get("train-loss") is not None:
                loss.setdefault(site, []).append((r["round"], t["train-loss"]))
        for site, e in (r.get("evaluate") or {}).items():
            value = e.get("auc")
            if value is not None:
                auc.setdefault(site, []).append((r["round"], value))
            if e.get("mean_loss") is not None:
                test_loss.setdefault(site, []).append((r["round"], e["mean_loss"]))
    return loss, test_loss, auc


def _round_axis(rounds: list[dict]) -> tuple[tuple[float, float], list[int]]:
    """x limits and at most about 8 integer ticks for the rounds reported."""
    last = max(r["round"] for r in rounds)
    first = min(r["round"] for r in rounds)
    xlim = (float(first) - 0.5, float(last) + 0.5) if first == last else (float(first), float(last))
    step = max(1, math.ceil((last - first + 1) / 8))
    return xlim, list(range(first, last + 1, step))


def _curves(
    series: dict[str, list],
    colors: dict[str, str],
    axis: tuple[tuple[float, float], list[int]],
    ylabel: str,
    ylim: tuple[float, float],
    yticks: list[float],
    yfmt: str,
) -> Plot:
    """One line with points per site over the rounds."""
    xlim, xticks = axis
    p = Plot(xlim=xlim, ylim=ylim)
    p.axes("round", ylabel, xticks, yticks, yfmt, "{:.0f}")
    for name, pts in series.items():
        p.line(pts, colors[name], title=name)
        p.points(pts, colors[name], 2.5, name)
    return p


def section_training(report: dict) -> str:
    """Training loss, test log-loss and test AUC per round and site."""
    rounds = report.get("rounds") or []
    loss, test_loss, auc = _round_series(rounds)
    if not loss and not auc and not test_loss:
        return ""
    colors = site_colors(set(loss) | set(auc) | set(test_loss))
    axis = _round_axis(rounds)
    figs = []
    for series, ylabel, caption in (
        (loss, "train loss", "Mean training loss per round and site (as each site reported it)."),
        (test_loss, "test log-loss", "Mean log-loss of the global model on each test split."),
    ):
        if not series:
            continue
        top = max(v for pts in series.values() for _, v in pts) * 1.1 or 1.0
        p = _curves(series, colors, axis, ylabel, (0.0, top), linear_ticks(0, top), "{:.2f}")
        figs.append(figure(p.svg(ylabel), caption))
    if auc:
        p = _curves(
            auc, colors, axis, "test AUC", (0.0, 1.0), [0, 0.2, 0.4, 0.6, 0.8, 1.0], "{:.1f}"
        )
        figs.append(
            figure(
                p.svg("Test AUC"),
                "AUC of the global model on each training site's test split "
                "(computed at the site).",
            )
        )
    return (
        '<h2 id="training">Training curves</h2><div>'
        + legend(colors)
        + '</div><div class="charts">'
        + "".join(figs)
        + "</div>"
    )


def section_data(report: dict) -> str:
    """Scans per site, and the released counts per tracer, manufacturer and scanner model."""
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
                    "<br>".join(f"{esc(n)}: {c}" for n, c in cats.items())
                    or "<span class='muted'>—</span>"
                )
                + "</td>"
            )
        rows.append(
            f"<tr><td class='l'>{esc(site)}</td><td class='l'>{esc(role_of.get(site, ''))}</td>"
            + "".join(cells)
            + f"<td>{fmt_num(k_of.get(site))}</td></tr>"
        )
    sites = {s["site_id"]: s for s in report.get("sites", [])}
    counts_rows = "".join(
        f"<tr><td class='l'>{esc(k)}</td><td>{s.get('num_examples')}</td>"
        f"<td>{s.get('num_train')}</td>"
        f"<td>{s.get('num_test')}</td><td>{s.get('num_positive')}</td></tr>"
        for k, s in sorted(sites.items())
    )
    return (
        '<h2 id="data">Data per site, tracer and scanner</h2>'
        "<table><tr><th class='l'>site</th><th>labelled scans</th><th>train</th><th>test</th>"
        f"<th>positive</th></tr>{counts_rows}</table>"
        "<table><tr><th class='l'>site</th><th class='l'>role</th><th class='l'>tracer</th>"
        "<th class='l'>manufacturer</th><th class='l'>scanner model</th>"
        "<th>min cell count</th></tr>" + "".join(rows) + "</table>"
        '<p class="muted">Accepted series per tracer and scanner (DICOM (0008,0070) Manufacturer, '
        "(0008,1090) Manufacturer's Model Name) as released by each site; categories with fewer "
        "scans than the site's min cell count are pooled into “other” or withheld.</p>"
    )


def section_suppression(report: dict) -> str:
    """What the sites suppressed (small cells) and which sites are missing."""
    val = report.get("validation", {})
    items = val.get("suppressed") or []
    missing = report.get("final", {}).get("missing") or []
    lis = [
        f"<li>{esc(s['site_id'])} ({esc(s.get('role'))}): {esc(s['what'])}"
        f" (min cell count {fmt_num(s.get('min_cell_count'))})</li>"
        for s in items
    ] + [
        f'<li class="bad">{esc(m["site_id"])} ({esc(m.get("role", "?"))}) is missing: '
        f"{esc(m.get('reason', ''))}</li>"
        for m in missing
    ]
    body = f"<ul>{''.join(lis)}</ul>" if lis else "<p>Nothing suppressed; every site answered.</p>"
    return '<h2 id="gaps">Suppressed and missing</h2>' + body


def section_loso(report: dict) -> str:
    """Leave-one-site-out folds: table, forest plot and meta-analysis ("" without LOSO)."""
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
                f"<tr><td class='l'>{esc(f['left_out'])}</td><td class='l warn' colspan='5'>"
                f"{esc(status)}</td></tr>"
            )
            continue
        forest_rows.append({**r, "site_id": f["left_out"], "role": "left out"})
        rows.append(
            f"<tr><td class='l'>{esc(f['left_out'])}</td><td>{fmt_num(r.get('n'))}</td>"
            f"<td>{fmt_num(r.get('auc'))}{fmt_ci(r.get('auc_ci'))}</td>"
            f"<td>{fmt_num(r.get('sensitivity'))}{fmt_ci(r.get('sensitivity_ci'))}</td>"
            f"<td>{fmt_num(r.get('specificity'))}{fmt_ci(r.get('specificity_ci'))}</td>"
            f"<td>{fmt_num(r.get('brier'))}</td></tr>"
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
            figure(
                forest_plot(forest_rows, meta, "LOSO forest plot"),
                "Left-out site AUCs with the sites' DeLong intervals and their random-effects "
                "pooling.",
            )
        )
    if meta:
        parts.append(f"<p>{esc(meta_text(meta))}</p>")
    return "".join(parts)
