"""Sections of ``report.html`` on the validation results: per site, ROC curves, site AUCs with
their meta-analysis (forest plot), calibration and predictive values."""

from __future__ import annotations

import math

from fedmi.server.report.html.common import esc, fmt_ci, fmt_num, meta_text, site_colors
from fedmi.server.report.html.svg import Plot, figure, forest_plot, legend, roc_chart


def _noisy(r: dict) -> str:
    """A note on an AUC released under differential privacy (noise added at the site)."""
    if r.get("auc_method") != "mann-whitney+gaussian-noise":
        return ""
    return f'<br><span class="muted">DP noise sd {fmt_num(r.get("auc_noise_sd"))}</span>'


def _site_row(r: dict) -> str:
    """One site's row: its AUC with interval, operating-point metrics, calibration."""
    if r.get("status", "ok") == "suppressed":
        return (
            f'<tr><td class="l">{esc(r["site_id"])}</td><td class="l">{esc(r.get("role"))}</td>'
            f"<td>{fmt_num(r.get('n'))}</td><td>{fmt_num(r.get('n_positive'))}</td>"
            f'<td class="l warn" colspan="6">suppressed at the site: fewer than '
            f"{fmt_num(r.get('min_cell_count'))} cases (or of one class); counts only</td></tr>"
        )
    bound = r.get("auc_histogram_bound")
    return (
        f'<tr><td class="l">{esc(r["site_id"])}</td><td class="l">{esc(r.get("role"))}</td>'
        f"<td>{fmt_num(r.get('n'))}</td><td>{fmt_num(r.get('n_positive'))}</td>"
        f"<td>{fmt_num(r.get('auc'))}{fmt_ci(r.get('auc_ci'))}{_noisy(r)}"
        f'<br><span class="muted">histogram {fmt_num(r.get("auc_histogram"))} '
        f"± {fmt_num(bound)}</span></td>"
        f"<td>{fmt_num(r.get('sensitivity'))}{fmt_ci(r.get('sensitivity_ci'))}</td>"
        f"<td>{fmt_num(r.get('specificity'))}{fmt_ci(r.get('specificity_ci'))}</td>"
        f"<td>{fmt_num(r.get('brier'))}</td><td>{fmt_num(r.get('ece'))}</td>"
        f"<td>{fmt_num(r.get('suppressed_cells', 0))}</td></tr>"
    )


def _pooled_row(role: str, pooled: dict) -> str:
    """The row of the sites of one role pooled (histogram AUC only: no site scores)."""
    return (
        f'<tr style="font-weight:600"><td class="l">pooled ({esc(role)})</td>'
        f'<td class="l">{esc(", ".join(pooled.get("sites", [])))}</td>'
        f"<td>{fmt_num(pooled.get('n'))}</td><td>{fmt_num(pooled.get('n_positive'))}</td>"
        f'<td><span class="muted">histogram</span> {fmt_num(pooled.get("auc_histogram"))}'
        f'<br><span class="muted">± {fmt_num(pooled.get("auc_histogram_bound"))}</span></td>'
        f"<td>{fmt_num(pooled.get('sensitivity'))}</td>"
        f"<td>{fmt_num(pooled.get('specificity'))}</td>"
        f"<td>{fmt_num(pooled.get('brier'))}</td><td>{fmt_num(pooled.get('ece'))}</td>"
        "<td></td></tr>"
    )


def _missing_row(m: dict) -> str:
    return (
        f'<tr><td class="l">{esc(m["site_id"])}</td><td class="l">{esc(m.get("role", "?"))}</td>'
        f'<td class="l bad" colspan="8">missing from the validation: '
        f"{esc(m.get('reason', ''))}</td></tr>"
    )


def section_sites(report: dict) -> str:
    """Results per site: one row per site, the pooled rows, then the missing sites."""
    final = report.get("final", {})
    rows = [_site_row(r) for r in final.get("per_site", [])]
    rows += [
        _pooled_row(role, pooled)
        for role, pooled in (report.get("validation", {}).get("pooled") or {}).items()
        if pooled
    ]
    rows += [_missing_row(m) for m in final.get("missing", [])]
    thr = report.get("validation", {}).get("threshold", 0.5)
    return (
        '<h2 id="sites">Results per site</h2>'
        "<table><tr><th class='l'>site</th><th class='l'>role</th><th>n</th><th>positive</th>"
        "<th>AUC (95 % CI)</th><th>sensitivity (95 % CI)</th><th>specificity (95 % CI)</th>"
        "<th>Brier</th><th>ECE</th><th>merged cells</th></tr>" + "".join(rows) + "</table>"
        f'<p class="muted">Sensitivity and specificity at the pre-specified threshold {thr} '
        "(Wilson intervals). AUC: the Mann–Whitney AUC computed at the site on its own scores, "
        "with its DeLong 95 % interval (under DP: with noise added at the site, and an interval "
        "that includes the noise); below it, the AUC from the score histogram the site released (± the largest "
        "error binning and small-cell merging can cause), which the pooled rows and ROC curves "
        "use. "
        "Training sites are evaluated on their held-out test split, holdout sites on all their "
        "scans. Only the intervals, never the scores, left the sites.</p>"
    )


def section_roc(report: dict) -> str:
    """ROC curves per site from the released histograms, pooled over all sites and per role."""
    val = report.get("validation", {})
    roc = val.get("roc", {})
    per_site = roc.get("per_site", {})
    if not per_site:
        return '<h2 id="roc">ROC curves</h2><p class="muted">No site released a histogram.</p>'
    colors = site_colors(per_site)
    pooled = roc.get("pooled", {})
    positives = {
        r["site_id"]: int(r.get("n_positive") or 0)
        for r in report.get("final", {}).get("per_site", [])
    }
    pooled_pos = {
        g: int((s or {}).get("n_positive") or 0) for g, s in (val.get("pooled") or {}).items()
    }
    points = ", ".join(f"{esc(k)} {len(v)}" for k, v in sorted(per_site.items()))
    band = (
        " Shaded: pointwise Wilson 95 % interval of the sensitivity at each point. Points: "
        f"one per released histogram bin edge that moves the curve ({points}); a site whose "
        "bins were merged under its small-cell rule, or released under DP, has few."
    )
    figs = [
        figure(
            roc_chart(
                "ROC per site",
                per_site,
                colors,
                pooled.get("all"),
                positives,
                pooled_pos.get("all"),
            ),
            "ROC per site (coloured) and pooled over all sites from summed histograms (black)."
            + band,
            legend(colors, [("pooled", "#000")]),
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
                figure(
                    roc_chart(
                        f"ROC {role}", curves, colors, pooled[role], positives, pooled_pos.get(role)
                    ),
                    f"{role} sites and their pooled ROC (black), with Wilson 95 % bands.",
                )
            )
    return '<h2 id="roc">ROC curves</h2><div class="charts">' + "".join(figs) + "</div>"


def _role_of(report: dict, site: str) -> str | None:
    """The role of ``site`` in the final per-site results, or ``None``."""
    for r in report.get("final", {}).get("per_site", []):
        if r["site_id"] == site:
            return r.get("role")
    return None


def section_forest(report: dict) -> str:
    """Forest plot of the site AUCs and the random-effects meta-analysis per group."""
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
    caption = (
        "Squares: AUC computed at each site on its own scores (size ∝ cases) with its 95 % "
        "interval (DeLong; under DP, including the noise)."
    )
    if meta:
        caption += (
            " Red diamond: DerSimonian–Laird random-effects estimate and its 95 % CI, pooled on "
            "the logit scale."
        )
        if meta.get("pi_low") is not None:
            caption += " Dashed red: 95 % prediction interval for a new site."
    out.append(figure(forest_plot(rows, meta, "Forest plot of site AUCs"), caption))
    for group, m in (val.get("meta_analysis") or {}).items():
        if m:
            out.append(f"<p><b>{esc(group)}</b>: {esc(meta_text(m))}</p>")
    if not meta:
        out.append('<p class="muted">Meta-analysis needs at least two sites with an AUC.</p>')
    return "".join(out)


def section_calibration(report: dict) -> str:
    """Reliability diagram per site and pooled ("" without calibration bins)."""
    cal = report.get("validation", {}).get("calibration", {})
    per_site = {k: v for k, v in (cal.get("per_site") or {}).items() if v}
    if not per_site:
        return ""
    colors = site_colors(per_site)
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
    return '<h2 id="calibration">Calibration</h2>' + figure(
        p.svg("Reliability diagram"),
        f"Reliability diagram from {bins} fixed probability bins (point size ∝ cases); "
        "black: pooled. Bins the sites merged under the small-cell rule appear as one point.",
        legend(colors, [("pooled", "#000")]),
    )


def section_predictive(report: dict) -> str:
    """PPV and NPV per site at its own and at the given prevalences ("" without any)."""
    pv = report.get("validation", {}).get("predictive_values", {})
    table = pv.get("per_site") or []
    if not table:
        return ""
    head = (
        "<tr><th class='l'>site</th><th>prevalence</th><th>PPV (range)</th>"
        "<th>NPV (range)</th></tr>"
    )
    rows = []
    for site in table:
        for i, v in enumerate(site["values"]):
            label = "site's own" if v.get("source") == "site" else "given"
            rows.append(
                f"<tr><td class='l'>{esc(site['site_id']) if i == 0 else ''}</td>"
                f"<td>{v['prevalence']:.3f} <span class='muted'>{label}</span></td>"
                f"<td>{fmt_num(v.get('ppv'))}{fmt_ci(v.get('ppv_ci'))}</td>"
                f"<td>{fmt_num(v.get('npv'))}{fmt_ci(v.get('npv_ci'))}</td></tr>"
            )
    return (
        '<h2 id="pv">Predictive values</h2>'
        f"<table>{head}{''.join(rows)}</table>"
        "<p class=\"muted\">PPV and NPV at the operating threshold by Bayes' rule from the site's "
        "sensitivity and specificity, at its own prevalence and at the prevalences given in the "
        "run config (report-prevalences): a screening population is not a memory clinic. Ranges "
        "combine the ends of the Wilson intervals.</p>"
    )
