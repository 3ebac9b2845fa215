"""``report.html``: the validation report a clinical reviewer reads, from ``report.json``.

One self-contained file: inline CSS and inline SVG charts drawn in Python, no scripts, no
external fonts, styles or images, so it opens offline and prints. Every number comes from
``report.json`` (which holds only what the sites were allowed to send).

Modules (each imports only those above it; the page imports the sections):

:mod:`~fedmi.server.report.html.common`
    escaping, number and interval formatting, site colours, the meta-analysis sentence.
:mod:`~fedmi.server.report.html.svg`
    :class:`~fedmi.server.report.html.svg.Plot` and the chart helpers (legend, figure,
    ROC chart, forest plot).
:mod:`~fedmi.server.report.html.results`
    sections: results per site, ROC curves, meta-analysis, calibration, predictive values.
:mod:`~fedmi.server.report.html.training`
    sections: training curves, data, privacy, suppressed and missing, leave-one-site-out.
:mod:`~fedmi.server.report.html.extras`
    sections: uncertainty and referral, OOD scans, the MCI biomarker.
:mod:`~fedmi.server.report.html.page`
    :func:`~fedmi.server.report.html.page.render_html`: CSS, navigation, the sections in order.

Public API
----------
:func:`fedmi.server.report.html.page.render_html`
    ``report.json`` (as a dict) → the whole page; also importable from this package.
"""

from __future__ import annotations

from fedmi.server.report.html.page import render_html

__all__ = ["render_html"]
