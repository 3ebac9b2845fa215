"""The federation's operating point, applied at every site: report.json ``operating_point``.

The threshold is chosen on the *training* sites' score histograms of the final model
(``hist-pos`` / ``hist-neg`` of their ``evaluate.external`` replies, on their test splits,
which the model never trained on; under DP the noisy deciles, charged to each site's
ledger by the existing release), summed over the sites: Youden's J by default, or the
run config's target sensitivity or specificity (``operating-point``,
``operating-point-target``). Platt scaling is fitted on the same pooled histograms.
Then, at every site and pooled per role: sensitivity, specificity, PPV and NPV at the
threshold with 95 % Wilson intervals, the best balanced accuracy any threshold reaches
there, and ECE, calibration slope and calibration-in-the-large before and after the
recalibration. Maths: :mod:`fedmi.shared.operating_point`.
"""

from __future__ import annotations

import logging

import numpy as np

from fedmi.server.history import RunHistory
from fedmi.shared.contract import OPERATING_THRESHOLD, THRESHOLDS
from fedmi.shared.operating_point import (
    Platt,
    best_balanced_accuracy,
    calibration_summary,
    check_histograms,
    choose_threshold,
    confusion_at,
    fit_platt,
    rates_at,
    recalibrated_threshold,
)
from fedmi.shared.run_config import RunConfig
from fedmi.shared.stats import OperatingPoint, operating_point

log = logging.getLogger(__name__)

CHOSEN_ON = "training sites' test splits (final evaluation), pooled score histograms"
#: the DP noisy histograms of training sites below their min cell count count in the pooled
#: choice (``pooled_only_sites``) and nowhere else
#: A DP histogram is rounded and clipped at 0 bin by bin, so its noise adds counts to every
#: empty bin: when the pooled training histograms hold more than this multiple of the scans
#: the sites scored, the noise dominates them and the threshold falls back to 0.5, saying so
#: (exact histograms hold exactly the scans)
NOISE_MASS_LIMIT = 1.5


def _histograms(
    history: RunHistory, prefix: str = ""
) -> dict[str, tuple[str, np.ndarray, np.ndarray]]:
    """site → (role, hist-pos, hist-neg) of every final reply whose histograms are usable.

    ``prefix="pool-"``: the noisy histograms a DP site below its min cell count sent for
    the pooled choice only (``pool-hist-pos`` / ``pool-hist-neg``).
    """
    out = {}
    pos, neg = f"{prefix}hist-pos", f"{prefix}hist-neg"
    for name, raw in sorted(history.final_raw.items()):
        if pos not in raw:
            continue
        try:
            hp, hn = check_histograms(raw[pos], raw[neg])
        except (KeyError, ValueError) as exc:  # ingress checked them; belt and braces
            log.warning("operating point: %s's histograms left out: %s", name, exc)
            continue
        out[name] = (str(history.final.get(name, {}).get("role", "unknown")), hp, hn)
    return out


def federated_choice(cfg: RunConfig, history: RunHistory) -> dict[str, object]:
    """The model card's ``operating_point``: threshold, criterion, where it was chosen.

    Falls back to the fixed 0.5 threshold (criterion ``fixed``, with the reason) when the
    training sites released no usable histograms of both classes, or when DP noise dominates
    them (:data:`NOISE_MASS_LIMIT`).
    """
    hists = _histograms(history)
    pool_only = {k: v for k, v in _histograms(history, "pool-").items() if k not in hists}
    train = {k: v for k, v in (hists | pool_only).items() if v[0] == "train"}
    target = cfg.operating_point_target if cfg.operating_point != "youden" else None
    reason = "no training site released score histograms of both classes"
    if train:
        hp = np.sum([v[1] for v in train.values()], axis=0)
        hn = np.sum([v[2] for v in train.values()], axis=0)
        scans = sum(_scans(history, name) for name in train)
        if hp.sum() + hn.sum() > NOISE_MASS_LIMIT * max(scans, 1):
            reason = (
                f"the training sites' histograms hold {int(hp.sum() + hn.sum())} counts for "
                f"{scans} scans: DP noise dominates them (the threshold would be the noise's)"
            )
        elif hp.sum() > 0 and hn.sum() > 0:
            choice = choose_threshold(hp, hn, cfg.operating_point, target)
            platt = fit_platt(hp, hn)
            return {
                "threshold": choice.threshold,
                "criterion": cfg.operating_point,
                "target": target,
                "chosen_on": {
                    "what": CHOSEN_ON,
                    "sites": sorted(train),
                    "pooled_only_sites": sorted(k for k in train if k in pool_only),
                    "n_positive": int(hp.sum()),
                    "n_negative": int(hn.sum()),
                    "bin_width": 1.0 / hp.size,
                },
                "recalibration": {
                    "method": "platt",
                    "formula": "p' = sigmoid(a + b * logit(p))",
                    "a": platt.a,
                    "b": platt.b,
                    "threshold_recalibrated": recalibrated_threshold(choice.threshold, platt),
                },
            }
    return {
        "threshold": OPERATING_THRESHOLD,
        "criterion": "fixed",
        "target": None,
        "reason": reason,
    }


def _scans(history: RunHistory, name: str) -> int:
    """The scans a site's final reply says it scored (``num-examples``: public)."""
    try:
        return int(history.final_raw[name].get("num-examples", 0))
    except (TypeError, ValueError):
        return 0


def site_point(raw: dict, threshold: float) -> OperatingPoint | None:
    """The confusion counts the site itself released at ``threshold``.

    A site sends ``tp``/``fp``/``tn``/``fn`` at each of :data:`THRESHOLDS`: without DP
    counted on its unbinned scores (exact), under DP read off its noisy histograms (the
    same as reading them here). Histograms merged to ≥ k cases per cell can put a cell's
    scans on the wrong side of a threshold: on the amyloid compare a holdout with AUC 0.96
    read as sensitivity 0 at 0.5 from its merged cells, 0.95 from its own counts.
    ``None`` when the threshold is not one of them or the counts are absent or malformed.
    """
    match = [t for t in THRESHOLDS if abs(t - threshold) < 1e-9]
    if not match:
        return None
    try:
        point = operating_point(raw, match[0])
    except (KeyError, IndexError, TypeError, ValueError):
        return None
    counts = (point.tp, point.fp, point.tn, point.fn)
    return point if min(counts) >= 0 and sum(counts) > 0 else None


def _site_entry(
    hp: np.ndarray,
    hn: np.ndarray,
    threshold: float,
    platt: Platt | None,
    released: OperatingPoint | None = None,
) -> dict:
    entry: dict[str, object] = rates_at(released or confusion_at(hp, hn, threshold))
    entry["counts"] = "site" if released is not None else "histogram"
    entry["best_balanced_accuracy"] = best_balanced_accuracy(hp, hn)
    entry["calibration"] = calibration_summary(hp, hn)
    if platt is not None:
        entry["calibration_recalibrated"] = calibration_summary(hp, hn, platt)
    return entry


def operating_point_section(cfg: RunConfig, history: RunHistory) -> dict[str, object]:
    """report.json ``operating_point``: the choice, and its consequences at every site."""
    card = federated_choice(cfg, history)
    threshold = float(card["threshold"])  # type: ignore[arg-type]
    rec = card.get("recalibration")
    platt = Platt(rec["a"], rec["b"]) if isinstance(rec, dict) else None
    hists = _histograms(history)
    released = {name: site_point(history.final_raw[name], threshold) for name in hists}
    per_site = [
        {"site_id": name, "role": role, **_site_entry(hp, hn, threshold, platt, released[name])}
        for name, (role, hp, hn) in hists.items()
    ]
    pooled = {}
    for role in ("train", "holdout"):
        names = [name for name, v in hists.items() if v[0] == role]
        if names:
            hp = np.sum([hists[n][1] for n in names], axis=0)
            hn = np.sum([hists[n][2] for n in names], axis=0)
            points = [released[n] for n in names]
            summed = None
            if all(pt is not None for pt in points):
                counts = [[pt.tp, pt.fp, pt.tn, pt.fn] for pt in points if pt is not None]
                summed = OperatingPoint(threshold, *map(int, np.sum(counts, axis=0)))
            pooled[role] = _site_entry(hp, hn, threshold, platt, summed)
    note = (
        "Scans with score >= threshold are called positive. Training sites' figures are on "
        "the data the threshold was chosen on (optimistic); holdout sites' are independent. "
        "counts: site = the confusion counts the site released at the threshold (exact "
        "without DP); histogram = read off its released histograms (cells merged to >= k "
        "scans, or DP noise: approximate). "
        "best_balanced_accuracy and calibration are always read off the histograms."
    )
    return {**card, "per_site": per_site, "pooled": pooled, "note": note}
