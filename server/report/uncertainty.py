"""``report["uncertainty"]``: MC-dropout calibration and the referral curve, from aggregates.

Sites send, for the scans of the final evaluation, the calibration bins of the MC-dropout
mean probability and, per referral rate, the number of scans kept and correctly called
(:data:`fedmi.shared.contract.UNCERTAINTY_METRICS`). Per site and pooled (all sites, and per
role) this gives ECE and Brier score of the plain and MC predictions side by side and the
accuracy of the kept scans as the most uncertain are referred to a reader.
"""

from __future__ import annotations

import math

import numpy as np

from fedmi.server.history import RunHistory
from fedmi.shared.contract import REFERRAL_RATES
from fedmi.shared.stats import brier_score, expected_calibration_error
from fedmi.shared.uncertainty import pool_referral, referral_curve


def _r(x: float | None, digits: int = 4) -> float | None:
    return None if x is None or not math.isfinite(x) else round(float(x), digits)


def _ece(s: dict, prefix: str) -> float | None:
    keys = [f"{prefix}cal-count", f"{prefix}cal-sum-prob", f"{prefix}cal-sum-label"]
    if not all(k in s for k in keys):
        return None
    return _r(expected_calibration_error(*(s[k] for k in keys)))


def _summary(s: dict) -> dict[str, object]:
    n = int(s.get("num-examples", 0))
    retained, correct = s["referral-retained"], s["referral-correct"]
    return {
        "n": n,
        "mc_passes": s.get("mc-passes"),
        "ece_plain": _ece(s, ""),
        "ece_mc": _ece(s, "mc-"),
        "brier_plain": _r(brier_score(float(s["sq-error-sum"]), n))
        if "sq-error-sum" in s
        else None,
        "brier_mc": _r(brier_score(float(s["mc-sq-error-sum"]), n)),
        "retained": list(retained),
        "correct": list(correct),
        "accuracy": [_r(a) for a in referral_curve(retained, correct)],
    }


def _pool(stats: list[dict]) -> dict:
    out: dict[str, object] = {"num-examples": sum(int(s.get("num-examples", 0)) for s in stats)}
    out["referral-retained"], out["referral-correct"] = pool_referral(
        [(s["referral-retained"], s["referral-correct"]) for s in stats]
    )
    for prefix in ("", "mc-"):
        keys = [f"{prefix}cal-count", f"{prefix}cal-sum-prob", f"{prefix}cal-sum-label"]
        if all(all(k in s for k in keys) for s in stats):
            for k in keys:
                out[k] = [float(v) for v in np.sum([s[k] for s in stats], axis=0)]
        key = f"{prefix}sq-error-sum"
        if all(key in s for s in stats):
            out[key] = float(sum(float(s[key]) for s in stats))
    out["mc-passes"] = stats[0].get("mc-passes")
    return out


def uncertainty_section(history: RunHistory) -> dict[str, object] | None:
    """Per-site and pooled calibration (plain vs MC) and referral curves; ``None`` without data."""
    usable = {k: s for k, s in history.final_raw.items() if "referral-retained" in s}
    if not usable:
        return None
    role = {k: history.final.get(k, {}).get("role") for k in usable}
    per_site = {k: {"role": role[k], **_summary(s)} for k, s in sorted(usable.items())}
    pooled: dict[str, object] = {}
    groups = {"all": list(usable)}
    for r in ("train", "holdout"):
        names = [k for k in usable if role[k] == r]
        if names:
            groups[r] = names
    for g, names in groups.items():
        pooled[g] = {"sites": sorted(names), **_summary(_pool([usable[k] for k in names]))}
    return {
        "method": "MC dropout: T passes with dropout on, everything else in evaluation mode",
        "uncertainty": "predictive entropy of the MC-mean probability; most uncertain referred first",
        "referral_rates": list(REFERRAL_RATES),
        "per_site": per_site,
        "pooled": pooled,
    }
