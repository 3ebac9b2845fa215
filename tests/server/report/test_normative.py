"""The report's normative section from declared holdout aggregates (exact numbers)."""

from __future__ import annotations

import numpy as np
import pytest

from fedmi.server.history import RunHistory
from fedmi.server.report.html.extras import section_normative
from fedmi.server.report.normative import histogram_noise_variance, normative_section, summarise
from fedmi.shared import contract

GROUPS = ("CN", "AD", "FTD", "DLB")


def _metrics(**over):
    g, b = contract.NORMATIVE_GROUPS, contract.NORMATIVE_BINS
    hist = np.zeros((g, b), dtype=int)
    hist[0, 10], hist[0, 12] = 8, 2  # normals
    hist[1, 12], hist[1, 30] = 2, 8  # AD: 8 above every normal, 2 tied with 2 normals
    hist[2, 40] = 10  # FTD: all above
    hist[3, 10] = 10  # DLB: all tied with 8 normals, below 2
    return {
        "num-examples": 40,
        "min-cell-count": 1,
        "nrm-hist": hist.ravel().tolist(),
        "nrm-old-count": 4.0,
        "nrm-old-fp": [0.2, 0.6],
        "nrm-fp": [0.5, 1.0],
        "nrm-match": [0, 7, 9, 6],
        "nrm-clf-positive": [1, 9, 2, 8],
        **over,
    }


def test_aucs_rates_and_shares_are_what_they_say():
    s = summarise(_metrics(), GROUPS)
    assert s["n"] == {"CN": 10, "AD": 10, "FTD": 10, "DLB": 10}
    # AD: pairs (8×10 above) + (2 AD × 8 normals below) + half of (2×2 tied) = 98/100
    assert s["auc"]["AD"]["auc_histogram"] == pytest.approx(0.98)
    assert s["auc"]["AD"]["bound"] == pytest.approx(0.02)
    assert s["auc"]["FTD"]["auc_histogram"] == 1.0 and s["auc"]["FTD"]["ci"][0] < 0.99
    assert s["auc"]["DLB"]["auc_histogram"] == pytest.approx(0.4)  # 8×10 tied / 2 / 100
    assert s["false_positive_rate"] == {"n": 10, "adjusted": 0.05, "unadjusted": 0.1}
    assert s["false_positive_rate_over_80"] == {"n": 4, "adjusted": 0.05, "unadjusted": 0.15}
    assert s["pattern_match"]["FTD"]["rate"] == 0.9 and s["pattern_match"]["FTD"]["n"] == 10
    assert s["classifier_positive"]["CN"]["rate"] == 0.1
    assert not s["noisy"] and s["auc"]["AD"]["noise_sd"] is None


def test_histogram_noise_variance_matches_a_numerical_gradient():
    rng = np.random.default_rng(0)
    pos, neg = rng.integers(0, 5, 30).astype(float), rng.integers(0, 5, 30).astype(float)
    var = np.full(30, 2.0)

    def auc(p, n):
        below = np.concatenate([[0.0], np.cumsum(n)[:-1]])
        return float((p * (below + 0.5 * n)).sum() / (p.sum() * n.sum()))

    eps, grad2 = 1e-6, 0.0
    for k in range(30):
        for which in (0, 1):
            p, n = pos.copy(), neg.copy()
            (p if which == 0 else n)[k] += eps
            grad2 += ((auc(p, n) - auc(pos, neg)) / eps) ** 2
    assert histogram_noise_variance(pos, neg, var) == pytest.approx(2.0 * grad2, rel=1e-4)


def test_section_keeps_refusals_and_pools_the_rest():
    history = RunHistory()
    history.normative = {
        "model": {"sites": ["site-a"], "n_scans": 40, "regions": 52, "dp": False},
        "sites": {
            "site-d": {"status": "ok", "metrics": _metrics()},
            "site-e": {"status": "ok", "metrics": _metrics()},
            "site-f": {"status": "budget-exhausted", "metrics": {}},
        },
    }
    section = normative_section(history, "fdg-ad")
    assert section["per_site"]["site-f"] == {"status": "budget-exhausted"}
    # an exact release was scored after the site's own offset (client/normative.py)
    assert section["per_site"]["site-d"]["site_offset"] is True
    assert section["per_site"]["site-d"]["dp"] is False
    assert section["pooled_holdout"]["n"]["FTD"] == 20
    assert section["pooled_holdout"]["auc"]["AD"]["auc_histogram"] == pytest.approx(0.98)
    html = section_normative({"normative": section})
    assert "Normative model" in html and "budget-exhausted" in html and "dominates" not in html
    assert "after its own site offset" in html
    history.normative["sites"]["site-e"]["metrics"] = {**_metrics(), "epsilon": 1.0}
    dp_site = normative_section(history, "fdg-ad")["per_site"]["site-e"]
    assert dp_site["dp"] is True and dp_site["site_offset"] is False
    assert "holdouts under DP against the population model" in section_normative(
        {"normative": normative_section(history, "fdg-ad")}
    )
    history.normative["sites"]["site-e"]["metrics"] = _metrics()
    history.normative["model"]["dp_noise"] = {"noise_dominated": True, "relative_to_sigma": 9.0}
    assert "DP noise dominates" in section_normative(
        {"normative": normative_section(history, "fdg-ad")}
    )
    assert normative_section(RunHistory(), "fdg-ad") is None


def test_the_summary_table_ends_with_the_normative_line():
    from fedmi.server.report.document import normative_line

    history = RunHistory()
    history.normative = {
        "model": {"n_scans": 40.0, "dp_noise": {"noise_dominated": True}},
        "sites": {"site-d": {"status": "ok", "metrics": _metrics()}},
    }
    line = normative_line(normative_section(history, "fdg-ad"))
    assert line.startswith("normative model (40 normals): holdout anomaly AUC AD 0.980")
    assert line.endswith("not usable")
    assert normative_line(None) is None
