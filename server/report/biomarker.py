"""``report["biomarker"]``: the model's score as a predictor of MCI conversion vs meta-ROI SUVR.

From the sites' ``bio-*`` aggregates (:data:`fedmi.shared.contract.BIOMARKER_METRICS`): the AUC
of each marker per site and pooled (summed histograms, with the binning bound), the
site-computed paired DeLong difference ``AUC(model) − AUC(SUVR)`` with its 95 % interval,
and an inverse-variance pooled difference across sites.
"""

from __future__ import annotations

import math

import numpy as np

from fedmi.server.history import RunHistory
from fedmi.shared.biomarker import META_ROI, auc_lower_is_positive, combine_differences
from fedmi.shared.stats import auc_from_histograms

_HISTS = ("bio-hist-model-pos", "bio-hist-model-neg", "bio-hist-suvr-pos", "bio-hist-suvr-neg")


def _r(x: float | None, digits: int = 4) -> float | None:
    return None if x is None or not math.isfinite(x) else round(float(x), digits)


def _aucs(s: dict) -> dict[str, object]:
    m = auc_from_histograms(s["bio-hist-model-pos"], s["bio-hist-model-neg"])
    v = auc_lower_is_positive(s["bio-hist-suvr-pos"], s["bio-hist-suvr-neg"])
    return {
        "auc_model_histogram": _r(m.auc),
        "auc_model_histogram_bound": _r(m.bound),
        "auc_suvr_histogram": _r(v.auc),
        "auc_suvr_histogram_bound": _r(v.bound),
    }


def biomarker_section(history: RunHistory) -> dict[str, object] | None:
    """Per-site and pooled conversion AUCs of both markers; ``None`` when no site sent any."""
    sent = {k: s for k, s in history.final_raw.items() if "bio-num-examples" in s}
    if not sent:
        return None
    rows = []
    usable = []
    for k, s in sorted(sent.items()):
        row: dict[str, object] = {
            "site_id": k,
            "role": history.final.get(k, {}).get("role"),
            "n": int(s["bio-num-examples"]),
            "n_converters": int(s["bio-num-converters"]),
        }
        if all(h in s for h in _HISTS):
            usable.append(k)
            row |= _aucs(s)
            if "bio-auc-model-exact" in s:
                row["auc_model_exact"] = _r(float(s["bio-auc-model-exact"]))
                row["auc_suvr_exact"] = _r(float(s["bio-auc-suvr-exact"]))
            if "bio-auc-diff" in s:
                row["auc_diff"] = _r(float(s["bio-auc-diff"]))
                row["auc_diff_se"] = _r(float(s["bio-auc-diff-se"]))
                row["auc_diff_ci"] = [
                    _r(float(s["bio-auc-diff-ci-low"])),
                    _r(float(s["bio-auc-diff-ci-high"])),
                ]
        else:
            row["status"] = "suppressed (fewer MCI scans of an outcome than the site's k)"
        rows.append(row)
    pooled: dict[str, object] | None = None
    if usable:
        summed = {h: np.sum([sent[k][h] for k in usable], axis=0) for h in _HISTS}
        with_diff = [k for k in usable if "bio-auc-diff" in sent[k]]
        diff = combine_differences(
            [float(sent[k]["bio-auc-diff"]) for k in with_diff],
            [float(sent[k]["bio-auc-diff-se"]) for k in with_diff],
        )
        pooled = {
            "sites": usable,
            "n": int(sum(int(sent[k]["bio-num-examples"]) for k in usable)),
            "n_converters": int(sum(int(sent[k]["bio-num-converters"]) for k in usable)),
            **_aucs(summed),
            "auc_diff": None if diff is None else {k: _r(v) for k, v in diff.items()},
        }
    return {
        "outcome": "MCI-converter (positive) vs MCI-stable",
        "model_score": "probability of AD from the final model (higher = converter)",
        "baseline": f"mean SUVR in the meta-ROI {'+'.join(META_ROI)} (lower = converter)",
        "difference": "AUC(model) − AUC(SUVR): paired DeLong at each site; pooled by inverse variance",
        "per_site": rows,
        "pooled": pooled,
    }
