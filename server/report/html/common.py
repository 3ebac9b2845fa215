"""Helpers every part of ``report.html`` uses: escaping, numbers, intervals, site colours."""

from __future__ import annotations

import html
import math
from collections.abc import Iterable, Sequence

#: site colours, in the order :func:`site_colors` assigns them
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


def esc(value: object) -> str:
    """``value`` as text, HTML-escaped (quotes included)."""
    return html.escape(str(value), quote=True)


def fmt_num(x: object, digits: int = 3) -> str:
    """A float with ``digits`` decimals, "—" for missing or non-finite, anything else escaped."""
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "—"
    if isinstance(x, float):
        return f"{x:.{digits}f}"
    return esc(x)


def fmt_ci(pair: Sequence[float] | None, digits: int = 3) -> str:
    """`` (lo–hi)`` in muted type after a value, or "" without both ends."""
    if not pair or pair[0] is None or pair[1] is None:
        return ""
    return f' <span class="muted">({pair[0]:.{digits}f}–{pair[1]:.{digits}f})</span>'


def site_colors(names: Iterable[str]) -> dict[str, str]:
    """One palette colour per name, assigned in sorted order (stable across charts)."""
    return {n: PALETTE[i % len(PALETTE)] for i, n in enumerate(sorted(names))}


def linear_ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    """``n + 1`` evenly spaced ticks from ``lo`` to ``hi``."""
    return [lo + (hi - lo) * i / n for i in range(n + 1)]


def meta_text(meta: dict) -> str:
    """The random-effects meta-analysis of ``validation.meta_analysis`` as one sentence."""
    if meta.get("pi_low") is not None:
        pi = f"95 % prediction interval {meta['pi_low']:.3f} to {meta['pi_high']:.3f}"
    else:
        pi = "no prediction interval (fewer than 3 sites)"
    return (
        f"Random-effects AUC {meta['estimate']:.3f} (95 % CI {meta['ci_low']:.3f}–"
        f"{meta['ci_high']:.3f}) over {meta['k']} sites, pooled on the logit scale; "
        f"τ² (logit) = {meta['tau2']:.4f}, "
        f"I² = {100 * meta['i2']:.0f} %, Q = {meta['q']:.2f} (p = {meta['q_pvalue']:.3f}); {pi}."
    )


def absent_reason(report: dict, site: str, what: str) -> str:
    """Why ``site`` has no ``what`` in the report: missing, suppressed, or sent none."""
    for m in (report.get("final") or {}).get("missing") or []:
        if m["site_id"] == site:
            return f"missing from the final evaluation: {m.get('reason', '?')}"
    for r in (report.get("final") or {}).get("per_site") or []:
        if r["site_id"] == site and r.get("status") == "suppressed":
            return "suppressed at the site (fewer cases than its min cell count)"
    return f"the site sent no {what}"


def other_sites(report: dict, shown: set[str]) -> list[tuple[str, str]]:
    """``(site_id, role)`` of the run's sites not in ``shown``, sorted."""
    return sorted(
        (s["site_id"], str(s.get("role", "?")))
        for s in report.get("sites") or []
        if s["site_id"] not in shown
    )
