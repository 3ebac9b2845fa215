"""The top of ``report.html``: whether the run did its job, the headline numbers, and the
per-site privacy table."""

from __future__ import annotations

from fedmi.server.report.html.common import esc, fmt_ci, fmt_num


def fmt_sci(x: object) -> str:
    """A small probability such as δ in scientific notation (``1.0e-05``), "—" if missing."""
    if isinstance(x, (int, float)) and not isinstance(x, bool):
        return f"{float(x):.1e}"
    return "—"


def section_outcome(report: dict) -> str:
    """A red box at the top when the run failed (trained nothing or evaluated no site)."""
    outcome = report.get("outcome") or {}
    if outcome.get("status") != "failed":
        return ""
    reasons = "".join(f"<li>{esc(r)}</li>" for r in outcome.get("reasons") or [])
    return (
        '<div class="failed" id="outcome"><b>This run failed.</b> Its numbers below are not '
        f"those of a trained, validated model.<ul>{reasons}</ul></div>"
    )


def _auc_line(report: dict) -> str:
    """Pooled random-effects AUC (logit scale) and each holdout site's own AUC."""
    parts = []
    meta = ((report.get("validation") or {}).get("meta_analysis") or {}).get("all")
    if meta:
        parts.append(
            f"<b>{fmt_num(meta.get('estimate'))}</b>"
            f"{fmt_ci([meta.get('ci_low'), meta.get('ci_high')])} pooled over "
            f"{meta.get('k')} sites (random effects, logit scale)"
        )
    for r in (report.get("final") or {}).get("per_site", []):
        if r.get("role") == "holdout" and r.get("auc") is not None:
            noisy = (
                " under DP noise" if r.get("auc_method") == "mann-whitney+gaussian-noise" else ""
            )
            parts.append(
                f"<b>{fmt_num(r['auc'])}</b>{fmt_ci(r.get('auc_ci'))} at holdout "
                f"{esc(r['site_id'])}{noisy}"
            )
    return "; ".join(parts) or "no site released an AUC"


def _operating_point_line(report: dict) -> str:
    """Sensitivity and specificity at the federation's operating point (``report["operating_point"]``)
    when the run chose one, else the pooled holdout values at the pre-specified threshold."""
    op = report.get("operating_point")
    if op:
        pooled = op.get("pooled") if isinstance(op.get("pooled"), dict) else op
        where = ""
        for role in ("holdout", "train"):  # per-role pooled entries: the holdouts first
            if isinstance(pooled.get(role), dict):
                pooled, where = pooled[role], f" (pooled {role} sites)"
                break
        sens, sens_ci = _rate(pooled, "sensitivity")
        spec, spec_ci = _rate(pooled, "specificity")
        if op.get("criterion") == "fixed":  # the federation could not choose one
            why = f" ({esc(op['reason'])})" if op.get("reason") else ""
            return (
                f"no federated operating point in this run{why}; at the fixed threshold "
                f"{fmt_num(op.get('threshold'))}{where}: sensitivity "
                f"<b>{fmt_num(sens)}</b>{fmt_ci(sens_ci)}, "
                f"specificity <b>{fmt_num(spec)}</b>{fmt_ci(spec_ci)}"
            )
        return (
            f"threshold {fmt_num(op.get('threshold'))}{where}: sensitivity "
            f"<b>{fmt_num(sens)}</b>{fmt_ci(sens_ci)}, "
            f"specificity <b>{fmt_num(spec)}</b>{fmt_ci(spec_ci)}"
        )
    thr = (report.get("validation") or {}).get("threshold", 0.5)
    pooled = ((report.get("final") or {}).get("pooled") or {}).get("holdout")
    if not pooled:
        return f"no operating point chosen; no pooled holdout result at threshold {thr}"
    return (
        f"no federated operating point in this run; at the pre-specified threshold {thr}, "
        f"pooled holdout sensitivity <b>{fmt_num(pooled.get('sensitivity'))}</b>, "
        f"specificity <b>{fmt_num(pooled.get('specificity'))}</b>"
    )


def _rate(entry: dict, name: str) -> tuple[object, object]:
    """``(value, ci)`` of a rate given as a number (with ``name_ci``) or as
    ``{"value", "ci"}``."""
    v = entry.get(name)
    if isinstance(v, dict):
        return v.get("value"), v.get("ci")
    return v, entry.get(f"{name}_ci")


def _epsilon_line(report: dict) -> str:
    """ε spent of its budget per site (DP-SGD and statistic releases), or "DP off"."""
    privacy = report.get("privacy") or {}
    rows = _privacy_rows(privacy)
    if not rows:
        return "no differential privacy in this run"
    return ", ".join(_epsilon_of(r) for r in rows)


def _epsilon_of(r: dict) -> str:
    """``site ε of budget``; a site that only refused says so."""
    name = esc(r["site_id"])
    if r["dp"] != "on":
        return f"{name} DP {esc(r['dp'])}"
    if r["epsilon"] is None:
        statuses = sorted(
            {s for k in (r.get("refused") or {}).values() for s in k}
            | set(r.get("refused_rounds") or {})
        )
        return f"{name} ε not reported" + (f" ({esc(', '.join(statuses))})" if statuses else "")
    budget = fmt_num(r["budget"], 2) if r["budget"] is not None else "(budget not reported)"
    return f"{name} {fmt_num(r['epsilon'], 2)} of {budget}"


def section_headline(report: dict) -> str:
    """The headline block: AUC with CI, the operating point, ε per site."""
    return (
        '<div class="headline" id="headline"><table class="kv">'
        f"<tr><th class='l'>AUC (95 % CI)</th><td class='l'>{_auc_line(report)}</td></tr>"
        f"<tr><th class='l'>Operating point</th><td class='l'>{_operating_point_line(report)}"
        "</td></tr>"
        f"<tr><th class='l'>Privacy (ε spent of budget)</th><td class='l'>"
        f"{_epsilon_line(report)}</td></tr></table></div>"
    )


def _privacy_rows(privacy: dict) -> list[dict]:
    """One row per site from the DP-SGD and release accounts of ``report["privacy"]``."""
    rows: dict[str, dict] = {}
    for p in privacy.get("per_site") or []:
        rows[p["site_id"]] = {
            "site_id": p["site_id"],
            "dp": p.get("dp", "unknown"),
            "epsilon": p.get("epsilon"),
            "budget": p.get("epsilon_budget"),
            "delta": p.get("delta"),
            "refused_rounds": p.get("refused_rounds") or {},
            "released": {},
            "refused": {},
        }
    for rel in privacy.get("releases") or []:
        row = rows.setdefault(
            rel["site_id"],
            {
                "site_id": rel["site_id"],
                "dp": "on",
                "epsilon": None,
                "budget": None,
                "delta": None,
                "refused_rounds": {},
            },
        )
        row["released"] = rel.get("released") or {}
        row["refused"] = rel.get("refused") or {}
        if rel.get("epsilon") is not None:
            row["epsilon"] = max(float(row["epsilon"] or 0.0), float(rel["epsilon"]))
            row["dp"] = "on"
    return [rows[k] for k in sorted(rows)]


def _counts(d: dict) -> str:
    return ", ".join(f"{esc(k)} {v}" for k, v in sorted(d.items())) or "—"


def section_privacy(report: dict) -> str:
    """Per site: DP on/off, ε spent of its budget, δ, statistic releases and refusals by kind."""
    privacy = report.get("privacy") or {}
    rows = _privacy_rows(privacy)
    if not rows:
        return (
            '<h2 id="privacy">Privacy</h2>'
            '<p class="muted">No differential-privacy accounting in this run.</p>'
            + _pretraining_line(report)
        )
    body = "".join(
        f"<tr><td class='l'>{esc(r['site_id'])}</td><td class='l'>{esc(r['dp'])}</td>"
        f"<td>{fmt_num(r['epsilon'], 2)}</td><td>{fmt_num(r['budget'], 2)}</td>"
        f"<td>{fmt_sci(r['delta'])}</td><td class='l'>{_counts(r.get('released') or {})}</td>"
        f"<td class='l'>{_refusals(r)}</td></tr>"
        for r in rows
    )
    central = privacy.get("central") or {}
    central_line = _pretraining_line(report) + (
        f"<p>Central (client-level) DP: ε {fmt_num(central.get('epsilon'), 2)} at δ "
        f"{fmt_sci(central.get('delta'))} over {central.get('released_rounds')} released rounds "
        f"(σ {fmt_num(central.get('noise_multiplier'), 2)}).</p>"
        if central.get("mode") not in (None, "off")
        else ""
    )
    return (
        '<h2 id="privacy">Privacy</h2><div class="scroll"><table>'
        "<tr><th class='l'>site</th><th class='l'>DP</th><th>ε spent</th><th>ε budget</th>"
        "<th>δ</th><th class='l'>releases by kind</th><th class='l'>refused</th></tr>"
        + body
        + "</table></div>"
        + central_line
        + '<p class="muted">ε: the site\'s cumulative spend on its dataset (DP-SGD training and '
        "statistic releases, across runs, from its own ledger), of the budget the site set; "
        "releases: evaluation statistics released under DP this run, by kind; refused: "
        "rounds or releases the site declined (its budget or its query policy).</p>"
    )


def _pretraining_line(report: dict) -> str:
    """One line on the run's self-supervised pretraining, naming the holdouts whose
    unlabelled scans it used ("" when the run did not pretrain)."""
    pre = report.get("pretraining")
    if not pre:
        return ""
    sites = [r for r in pre.get("per_site") or [] if r.get("rounds_pretrained")]
    holdouts = pre.get("holdouts_contributed") or []
    if not pre.get("holdouts_enabled"):
        who = "holdout sites did not take part (pretrain-holdouts off)"
    elif holdouts:
        who = "holdouts that contributed unlabelled scans: " + ", ".join(esc(h) for h in holdouts)
    else:
        who = "no holdout contributed unlabelled scans"
    probe = int(pre.get("linear_probe_rounds") or 0)
    then = (
        f" Training rounds 1–{probe} trained only the encoder's projection and the head "
        "(linear probe, pretrained stages frozen), later rounds every weight."
        if probe
        else ""
    )
    return (
        f"<p>Self-supervised pretraining: {pre.get('completed_rounds')} of {pre.get('rounds')} "
        f"round(s), {len(sites)} site(s) pretrained on scans without labels; {who}.{then}</p>"
    )


def _refusals(r: dict) -> str:
    parts = [f"training {esc(s)}: rounds {v}" for s, v in sorted(r["refused_rounds"].items())]
    for kind, statuses in sorted((r.get("refused") or {}).items()):
        parts += [f"{esc(kind)} {esc(s)} ×{n}" for s, n in sorted(statuses.items())]
    return "<br>".join(parts) or "—"
