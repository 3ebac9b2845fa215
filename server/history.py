"""What the coordinator learns during a run, kept per site and per round (never averaged away)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from fedmi.shared.stats import (
    auc_from_histograms,
    brier_score,
    expected_calibration_error,
    operating_point,
    pool_statistics,
)


def _clean(value: float) -> float | None:
    return None if value is None or (isinstance(value, float) and math.isnan(value)) else value


def _pair(stats: dict, low: str, high: str) -> list[float] | None:
    return [float(stats[low]), float(stats[high])] if low in stats and high in stats else None


#: ``auc_method`` of a site's released AUC: exact, or exact plus Gaussian noise under DP
AUC_EXACT = "mann-whitney"
AUC_NOISY = "mann-whitney+gaussian-noise"


def auc_method(stats: dict) -> str:
    """How the site computed the ``auc-exact`` it sent (noise-free or under DP).

    Without DP the site sends the Mann–Whitney AUC of its unbinned scores with its DeLong
    interval; under DP (:mod:`fedmi.client.evaluation.private`) the same AUC plus Gaussian
    noise of standard deviation ``auc-noise-sd``, with a Hanley–McNeil interval widened by
    that noise.
    """
    return AUC_NOISY if "auc-noise-sd" in stats else AUC_EXACT


def summarise_stats(stats: dict) -> dict[str, object]:
    """The site's released AUC (``auc``: Mann–Whitney, exact or under DP noise, with its
    interval), the histogram AUC (``auc_histogram`` with its binning bound), sensitivity,
    specificity, mean log-loss, and — when the site sent them — its 95 % intervals, Brier
    score, ECE and small-cell suppression.

    Summed statistics of several sites (:meth:`RunHistory.pooled`) carry no per-scan
    scores: their ``auc`` is ``None`` and only ``auc_histogram`` is given."""
    n = int(stats.get("num-examples", 0))
    if "hist-pos" not in stats:  # suppressed at the site: counts only
        return {
            "n": n,
            "n_positive": int(stats.get("num-positive", 0)),
            "status": "suppressed",
            "auc": None,
            "auc_method": None,
            "auc_histogram": None,
            "auc_histogram_bound": None,
            "sensitivity": None,
            "specificity": None,
            "accuracy": None,
            "mean_loss": None,
            "min_cell_count": stats.get("min-cell-count"),
        }
    extra: dict[str, object] = {"status": "ok", "auc": None, "auc_method": None}
    if "auc-se" in stats:
        extra["auc"] = float(stats["auc-exact"]) if "auc-exact" in stats else None
        extra["auc_method"] = auc_method(stats) if "auc-exact" in stats else None
        extra["auc_se"] = float(stats["auc-se"])
        extra["auc_ci"] = _pair(stats, "auc-ci-low", "auc-ci-high")
        if "auc-noise-sd" in stats:
            extra["auc_noise_sd"] = float(stats["auc-noise-sd"])
        extra["sensitivity_ci"] = _pair(stats, "sens-ci-low", "sens-ci-high")
        extra["specificity_ci"] = _pair(stats, "spec-ci-low", "spec-ci-high")
    if "sq-error-sum" in stats:
        extra["brier"] = _clean(brier_score(float(stats["sq-error-sum"]), n))
    if "cal-count" in stats:
        extra["ece"] = _clean(
            expected_calibration_error(
                stats["cal-count"], stats["cal-sum-prob"], stats["cal-sum-label"]
            )
        )
    if "min-cell-count" in stats:
        extra["min_cell_count"] = int(stats["min-cell-count"])
        extra["suppressed_cells"] = int(stats.get("suppressed-cells", 0))
    auc = auc_from_histograms(stats["hist-pos"], stats["hist-neg"])
    op = operating_point(stats)
    return {
        "n": n,
        "n_positive": int(stats.get("num-positive", 0)),
        "auc_histogram": _clean(round(auc.auc, 6)),
        "auc_histogram_bound": _clean(round(auc.bound, 6)),
        "sensitivity": _clean(op.sensitivity),
        "specificity": _clean(op.specificity),
        "accuracy": _clean(op.accuracy),
        "mean_loss": (float(stats["loss-sum"]) / n) if n and "loss-sum" in stats else None,
        "compute_seconds": float(stats.get("compute-seconds", 0.0)),
        "site_seconds": float(stats.get("site-seconds", 0.0)),
        **extra,
    }


@dataclass
class SiteInfo:
    """A site as it declared itself at the start of the run."""

    node_id: int
    site_id: str
    role: str
    status: str
    num_examples: int = 0
    num_train: int = 0
    num_test: int = 0
    num_positive: int = 0
    min_cell_count: int | None = None
    #: scans per tracer / manufacturer / model as the site released them (small cells pooled)
    data_counts: dict[str, dict[str, int]] | None = None


#: statuses with which a site declines an instruction on privacy grounds
REFUSALS = ("refused", "budget-exhausted", "ledger-error")


@dataclass
class RunHistory:
    """Per-round, per-site training and evaluation records of one run."""

    sites: dict[int, SiteInfo] = field(default_factory=dict)
    rounds: dict[int, dict] = field(default_factory=dict)
    final: dict[str, dict] = field(default_factory=dict)
    final_raw: dict[str, dict] = field(default_factory=dict)
    missing_final: list[dict] = field(default_factory=list)
    #: statistic releases under DP and refusals: {site_id, kind, round, status, epsilon}
    releases: list[dict] = field(default_factory=list)
    #: site-id claims refused at the start of the run (server/federation/identity.py)
    identity_refusals: list[dict] = field(default_factory=list)
    #: the normative model: ``{"model": fit summary or None, "sites": {site_id: reply}}``
    #: (server/federation/normative.py); empty when the run builds none
    normative: dict = field(default_factory=dict)
    #: self-supervised pretraining rounds (server/federation/pretrain.py): round →
    #: ``{"round", "sites": {site_id: status and metrics}, "dropped", "missing"}``
    pretraining: dict[int, dict] = field(default_factory=dict)

    def _round(self, r: int) -> dict:
        return self.rounds.setdefault(r, {"round": r, "train": {}, "evaluate": {}, "dropped": []})

    def pretrain_round(self, r: int) -> dict:
        """The record of pretraining round ``r`` (created empty)."""
        return self.pretraining.setdefault(
            r, {"round": r, "sites": {}, "dropped": [], "missing": []}
        )

    def record_pretrain(self, r: int, node_id: int, status: str, metrics: dict | None) -> None:
        """Note a site's pretraining reply of round ``r``: its status, role and metrics."""
        info = self.sites.get(node_id)
        entry: dict[str, object] = {
            "status": status,
            "role": info.role if info is not None else "unknown",
        }
        if metrics:
            entry.update({k: v for k, v in metrics.items() if not isinstance(v, list)})
        self.pretrain_round(r)["sites"][self.site_name(node_id)] = entry

    def site_name(self, node_id: int) -> str:
        info = self.sites.get(node_id)
        return info.site_id if info else f"node-{node_id}"

    def record_train(self, r: int, node_id: int, status: str, metrics: dict | None) -> None:
        entry: dict[str, object] = {"status": status}
        if metrics:
            entry.update({k: v for k, v in metrics.items() if not isinstance(v, list)})
        self._round(r)["train"][self.site_name(node_id)] = entry

    def record_drop(self, r: int, node_id: int, stage: str, reasons: list[str]) -> None:
        self._round(r)["dropped"].append(
            {"site_id": self.site_name(node_id), "stage": stage, "reasons": reasons}
        )

    def record_screening(self, r: int, changes: list[dict]) -> None:
        """Note the updates of round ``r`` that robust aggregation clipped or capped
        (:mod:`fedmi.server.strategy.robust`): site, reason, value before and after."""
        if changes:
            self._round(r).setdefault("screened", []).extend(changes)

    def record_release(
        self, kind: str, node_id: int, status: str, metrics: dict | None, r: int | None = None
    ) -> None:
        """Note a statistic release charged to a site's ledger, or one it refused.

        Only DP releases (their reply carries the site's ``epsilon``) and refusals
        (``refused``, ``budget-exhausted``, ``ledger-error``) are noted.
        """
        eps = (metrics or {}).get("epsilon")
        if eps is None and status not in REFUSALS:
            return
        self.releases.append(
            {
                "site_id": self.site_name(node_id),
                "kind": kind,
                "round": r,
                "status": status,
                "epsilon": None if eps is None else float(eps),
            }
        )

    def record_evaluate(self, r: int, node_id: int, stats: dict) -> None:
        self._round(r)["evaluate"][self.site_name(node_id)] = summarise_stats(stats)

    def record_final(self, node_id: int, stats: dict) -> None:
        name = self.site_name(node_id)
        self.final_raw[name] = stats
        row = summarise_stats(stats)
        row["role"] = self.sites[node_id].role if node_id in self.sites else "unknown"
        self.final[name] = row

    def pooled(self, role: str) -> dict[str, object] | None:
        """Summed statistics of all sites of ``role`` in the final evaluation."""
        raws = [
            s
            for name, s in self.final_raw.items()
            if self.final.get(name, {}).get("role") == role and "hist-pos" in s
        ]
        return summarise_stats(pool_statistics(raws)) if raws else None
