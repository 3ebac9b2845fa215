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
