"""Sections of ``report.html`` for uncertainty, OOD detection and the MCI biomarker.

Drawn from ``report["uncertainty"]``, ``report["ood"]`` and ``report["biomarker"]`` (each may be
``None``: the section is then left out).
"""

from __future__ import annotations

from fedmi.server.report.html.common import (
    absent_reason,
    esc,
    fmt_ci,
    fmt_num,
    other_sites,
    site_colors,
)
from fedmi.server.report.html.svg import Plot, figure, legend


def _referral_chart(rates: list[float], per_site: dict, pooled: dict) -> tuple[str, dict]:
    """The referral curves per site and pooled (black), and the sites' colours."""
    curves = {k: v.get("accuracy") or [] for k, v in per_site.items()}
    values = [a for acc in curves.values() for a in acc if a is not None]
    values += [a for g in pooled.values() for a in (g.get("accuracy") or []) if a is not None]
    lo = max(0.0, min([*values, 0.5]) - 0.05)
    p = Plot(xlim=(0.0, max(rates or [0.5])), ylim=(lo, 1.0))
    p.axes(
        "fraction referred to a reader (most uncertain first)",
        "accuracy of the scans kept",
        rates,
        [round(lo + i * (1 - lo) / 5, 2) for i in range(6)],
        fmt="{:.2f}",
        xfmt="{:.1f}",
    )
    colors = site_colors(curves)
    for name, acc in curves.items():
        pts = [(r, a) for r, a in zip(rates, acc, strict=False) if a is not None]
        p.line(pts, colors[name], 1.3, title=name)
        p.points(pts, colors[name], 2.5, name)
    if "all" in pooled:
        pts = [
            (r, a) for r, a in zip(rates, pooled["all"]["accuracy"], strict=False) if a is not None
        ]
        p.line(pts, "#000", 2.6, title="pooled")
    return p.svg("Referral curve"), colors


def _referral_table(rates: list[float], per_site: dict, pooled: dict) -> str:
    """ECE and Brier score, plain and MC, and the accuracy at each referral rate."""
    head = (
        "<tr><th class='l'>site</th><th class='l'>role</th><th>n</th><th>ECE plain</th>"
        "<th>ECE MC</th><th>Brier plain</th><th>Brier MC</th>"
        + "".join(f"<th>acc @{r:.1f}</th>" for r in rates)
        + "</tr>"
    )
    rows = []
    entries = [(k, v) for k, v in per_site.items()]
    entries += [(f"pooled {g}", v | {"role": g}) for g, v in pooled.items()]
    for name, v in entries:
        rows.append(
            f"<tr><td class='l'>{esc(name)}</td><td class='l'>{esc(v.get('role', ''))}</td>"
            f"<td>{fmt_num(v.get('n'))}</td><td>{fmt_num(v.get('ece_plain'))}</td>"
            f"<td>{fmt_num(v.get('ece_mc'))}</td><td>{fmt_num(v.get('brier_plain'))}</td>"
            f"<td>{fmt_num(v.get('brier_mc'))}</td>"
            + "".join(f"<td>{fmt_num(a)}</td>" for a in v.get("accuracy") or [])
            + "</tr>"
        )
    return f"<table>{head}{''.join(rows)}</table>"


def section_uncertainty(report: dict) -> str:
    """Referral curve chart (accuracy of kept scans vs referral rate) and an ECE table."""
    u = report.get("uncertainty")
    if not u:
        return ""
    rates = list(u.get("referral_rates") or [])
    per_site = u.get("per_site") or {}
    pooled = u.get("pooled") or {}
    chart, colors = _referral_chart(rates, per_site, pooled)
    passes = next((v.get("mc_passes") for v in per_site.values()), None)
    return (
        '<h2 id="uncertainty">Uncertainty and referral</h2>'
        + figure(
            chart,
            "Accuracy at the operating threshold of the scans the model keeps when the most "
            f"uncertain fraction is referred (MC dropout, {esc(passes)} passes; uncertainty = "
            "predictive entropy of the mean probability). Black: pooled over all sites.",
            legend(colors, [("pooled", "#000")]),
        )
        + _referral_table(rates, per_site, pooled)
        + '<p class="muted">ECE from fixed calibration bins of the plain prediction and of the '
        "MC-dropout mean; both computed from the sites' bin aggregates.</p>"
    )


def section_ood(report: dict) -> str:
    """OOD detection table: flagged fraction and detection AUROC per site."""
    o = report.get("ood")
    if not o:
        return ""
    thr = o.get("threshold") or {}
    head = (
        "<tr><th class='l'>site</th><th class='l'>role</th><th>scans</th><th>flagged</th>"
        "<th>detection AUROC</th><th>±bin</th><th class='l'>reference</th></tr>"
    )
    rows = []
    for site, role in other_sites(report, {r["site_id"] for r in o.get("per_site") or []}):
        rows.append(
            f"<tr><td class='l'>{esc(site)}</td><td class='l'>{esc(role)}</td>"
            f"<td class='l muted' colspan='5'>{esc(absent_reason(report, site, 'OOD scores'))}"
            "</td></tr>"
        )
    for r in o.get("per_site") or []:
        ref = "other training sites" if r.get("role") == "train" else "all training sites"
        rows.append(
            f"<tr><td class='l'>{esc(r['site_id'])}</td><td class='l'>{esc(r.get('role'))}</td>"
            f"<td>{fmt_num(r.get('n'))}</td><td>{fmt_num(r.get('flagged_fraction'))}</td>"
            f"<td>{fmt_num(r.get('detection_auroc'))}</td>"
            f"<td>{fmt_num(r.get('detection_auroc_bound'))}</td>"
            f"<td class='l'>{ref if r.get('reference_sites') else '—'}</td></tr>"
        )
    desc = o.get("description") or {}
    return (
        '<h2 id="ood">Out-of-distribution scans</h2>'
        "<p>How unlike the training scans each site's scans are: the share flagged as "
        "out-of-distribution (about 5 % expected at a training site) and how well the score "
        "tells the site's scans from the training sites' (0.5: not at all).</p>"
        f'<div class="scroll"><table>{head}{"".join(rows)}</table></div>'
        '<p class="muted">OOD score: smallest Mahalanobis distance of a scan\'s embedding to the '
        "training classes' means under a pooled, shrinkage-regularised covariance, learned from "
        f"aggregates of {esc(sum(desc.get('scans_per_class') or []))} training scans. A scan is "
        f"flagged above {fmt_num(thr.get('distance'), 2)} (the {fmt_num(thr.get('quantile'), 2)} "
        "quantile of the training sites' own test scans). Detection AUROC: a site's scans "
        "against the training sites' test scans (0.5 = indistinguishable), from fixed-bin "
        "histograms.</p>"
    )


def _auc(row: dict, marker: str) -> str:
    """The site's exact AUC when sent, else the histogram AUC with its binning bound."""
    exact = row.get(f"auc_{marker}_exact")
    if exact is not None:
        return fmt_num(exact)
    bound = row.get(f"auc_{marker}_histogram_bound")
    return f"{fmt_num(row.get(f'auc_{marker}_histogram'))} <span class='muted'>±{fmt_num(bound)}</span>"


def section_biomarker(report: dict) -> str:
    """Table comparing the model's score with the meta-ROI SUVR as predictors of conversion."""
    b = report.get("biomarker")
    if not b:
        return ""
    head = (
        "<tr><th class='l'>site</th><th>MCI</th><th>converters</th><th>AUC model</th>"
        "<th>AUC SUVR</th><th>AUC difference (95 % CI)</th></tr>"
    )
    rows = []
    for site, _ in other_sites(report, {r["site_id"] for r in b.get("per_site") or []}):
        why = absent_reason(report, site, "MCI conversion statistics (no MCI scans)")
        rows.append(
            f"<tr><td class='l'>{esc(site)}</td><td colspan='5' class='l muted'>{esc(why)}</td></tr>"
        )
    for r in b.get("per_site") or []:
        if not r.get("n"):
            rows.append(
                f"<tr><td class='l'>{esc(r['site_id'])}</td><td>0</td><td>0</td>"
                "<td colspan='3' class='l muted'>no MCI scans at this site</td></tr>"
            )
            continue
        if "auc_model_histogram" not in r:
            rows.append(
                f"<tr><td class='l'>{esc(r['site_id'])}</td><td>{fmt_num(r['n'])}</td>"
                f"<td>{fmt_num(r['n_converters'])}</td>"
                "<td colspan='3' class='l muted'>suppressed: fewer MCI scans of an outcome than "
                "the site's min cell count</td></tr>"
            )
            continue
        rows.append(
            f"<tr><td class='l'>{esc(r['site_id'])}</td><td>{fmt_num(r['n'])}</td>"
            f"<td>{fmt_num(r['n_converters'])}</td>"
            f"<td>{_auc(r, 'model')}</td><td>{_auc(r, 'suvr')}</td>"
            f"<td>{fmt_num(r.get('auc_diff'))}{fmt_ci(r.get('auc_diff_ci'))}</td></tr>"
        )
    pooled = b.get("pooled")
    if pooled:
        d = pooled.get("auc_diff") or {}
        ci = [d.get("ci_low"), d.get("ci_high")] if d else None
        rows.append(
            f"<tr><th class='l'>pooled</th><th>{fmt_num(pooled['n'])}</th>"
            f"<th>{fmt_num(pooled['n_converters'])}</th>"
            f"<th>{fmt_num(pooled['auc_model_histogram'])} <span class='muted'>±"
            f"{fmt_num(pooled.get('auc_model_histogram_bound'))}</span></th>"
            f"<th>{fmt_num(pooled['auc_suvr_histogram'])} <span class='muted'>±"
            f"{fmt_num(pooled.get('auc_suvr_histogram_bound'))}</span></th>"
            f"<th>{fmt_num(d.get('diff'))}{fmt_ci(ci)}</th></tr>"
        )
    return (
        '<h2 id="biomarker">The output as a biomarker (MCI conversion)</h2>'
        "<p>Does the model's score predict which MCI patients convert to AD better than the "
        "standard SUVR measure? AUC 0.5 is chance; a positive difference favours the model.</p>"
        f'<div class="scroll"><table>{head}{"".join(rows)}</table></div>'
        f'<p class="muted">{esc(b.get("outcome"))}. Model: {esc(b.get("model_score"))}. '
        f"Baseline: {esc(b.get('baseline'))}. Site AUCs as computed at the site "
        "(± the binning bound where only the histogram AUC was released); pooled AUCs from "
        "summed fixed-bin histograms, ± the largest error the binning can cause; "
        "the difference and its interval are paired DeLong estimates computed at each site, "
        "pooled by inverse variance.</p>"
    )


def _normative_rows(name: str, r: dict, groups: list[str]) -> str:
    """One table row per disorder of a site (or the pooled holdouts)."""
    rows = []
    for g in groups[1:]:
        auc = (r.get("auc") or {}).get(g) or {}
        match = (r.get("pattern_match") or {}).get(g) or {}
        clf = (r.get("classifier_positive") or {}).get(g) or {}
        rows.append(
            f"<tr><td class='l'>{esc(name)}</td><td class='l'>{esc(g)}</td>"
            f"<td>{fmt_num(auc.get('n'))} / {fmt_num(auc.get('n_normal'))}</td>"
            f"<td>{fmt_num(auc.get('auc_histogram'))}</td><td>{fmt_ci(auc.get('ci'))}</td>"
            f"<td>{fmt_num(match.get('rate'))}</td><td>{fmt_num(clf.get('rate'))}</td></tr>"
        )
    return "".join(rows)


def section_normative(report: dict) -> str:
    """The normative model: anomaly-score AUC per disorder, false positives in normals."""
    nrm = report.get("normative")
    if not nrm:
        return ""
    model = nrm.get("model")
    if not model:
        return (
            '<h2 id="normative">Normative model</h2><p>No normative model was built: no '
            "training site sent usable statistics of its normal scans (see the log).</p>"
        )
    groups = nrm.get("groups") or []
    head = (
        "<tr><th class='l'>site</th><th class='l'>group</th><th>scans / normals</th>"
        "<th>anomaly AUC</th><th>95% CI</th><th>pattern match</th>"
        "<th>classifier positive</th></tr>"
    )
    rows, fp_rows = [], []
    for site, r in sorted((nrm.get("per_site") or {}).items()):
        if r.get("status") != "ok":
            rows.append(
                f"<tr><td class='l'>{esc(site)}</td><td class='l muted' colspan='6'>"
                f"{esc(r.get('status'))}</td></tr>"
            )
            continue
        rows.append(_normative_rows(site, r, groups))
        fp_rows.append((site, r))
    pooled = nrm.get("pooled_holdout")
    if pooled:
        rows.append(_normative_rows("pooled holdout", pooled, groups))
        fp_rows.append(("pooled holdout", pooled))
    fp_head = (
        "<tr><th class='l'>site</th><th>normals</th><th>adjusted</th><th>unadjusted</th>"
        "<th>normals ≥ 80</th><th>adjusted</th><th>unadjusted</th></tr>"
    )
    fp = []
    for site, r in fp_rows:
        a, o = r.get("false_positive_rate") or {}, r.get("false_positive_rate_over_80") or {}
        fp.append(
            f"<tr><td class='l'>{esc(site)}</td><td>{fmt_num(a.get('n'))}</td>"
            f"<td>{fmt_num(a.get('adjusted'))}</td><td>{fmt_num(a.get('unadjusted'))}</td>"
            f"<td>{fmt_num(o.get('n'))}</td><td>{fmt_num(o.get('adjusted'))}</td>"
            f"<td>{fmt_num(o.get('unadjusted'))}</td></tr>"
        )
    dp = " The fit's statistics carried DP noise." if model.get("dp") else ""
    ok = [r for r in (nrm.get("per_site") or {}).values() if r.get("status") == "ok"]
    own = sorted({bool(r.get("site_offset")) for r in ok})
    offset = {
        (True,): " Each holdout scored its scans after its own site offset, estimated from "
        "its normals (each normal left out of its own), as fedmi-site predict does.",
        (False,): " Each holdout scored its scans against the population model (under DP, "
        "without its own site offset).",
        (False, True): " Holdouts without DP scored their scans after their own site offset "
        "from their normals; holdouts under DP against the population model.",
    }.get(tuple(own), "")
    noise = model.get("dp_noise") or {}
    warn = ""
    if noise.get("noise_dominated"):
        warn = (
            '<p class="warn"><b>The DP noise dominates this normative model:</b> the sites\' '
            "noise alone moves the expected normal values by "
            f"{fmt_num(noise.get('relative_to_sigma'), 1)}× the normal variation between "
            "people, so its z-scores and anomaly scores mostly measure noise. More normal scans "
            "per site or a larger share of the sites' budget for this release is needed "
            "(docs/normative-model.md).</p>"
        )
    return (
        '<h2 id="normative">Normative model</h2>'
        f"{warn}"
        "<p>How far each holdout scan departs from the federation's model of normal scans at "
        "its age and sex, and whether that finds the disorders no classifier was trained on. "
        "Anomaly AUC: each disorder's scans against the site's normals (0.5: not at all); "
        "pattern match: share of scans whose lowest regions lie in the disorder's expected "
        "pattern; classifier positive: share the supervised model calls positive at its "
        "operating point.</p>"
        f'<div class="scroll"><table>{head}{"".join(rows)}</table></div>'
        "<p>Regional false-positive rate in normals (mean share of regions with z &lt; −2; "
        "0.023 for a perfect model), age-adjusted and against the same model without age.</p>"
        f'<div class="scroll"><table>{fp_head}{"".join(fp)}</table></div>'
        f'<p class="muted">Model: {esc(model.get("n_scans"))} normal scans of '
        f"{esc(len(model.get('sites') or []))} training site(s), {esc(model.get('regions'))} "
        f"regions; score: {esc(nrm.get('score'))}. AUCs from fixed-bin histograms with "
        f"Hanley–McNeil intervals.{dp}{offset}</p>"
    )
