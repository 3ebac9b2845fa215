"""The report's robust-aggregation section: the settings, and every update clipped or capped.

Built from the per-round ``screened`` records (:meth:`fedmi.server.history.RunHistory.record_screening`)
and the updates the inbound checks rejected (the rounds' ``dropped`` train entries).
"""

from __future__ import annotations

from fedmi.server.history import RunHistory
from fedmi.shared.run_config import RunConfig


def robustness_section(cfg: RunConfig, history: RunHistory) -> dict[str, object]:
    """``settings``, ``changed`` (round, site, reason, before, after) and ``rejected``."""
    changed: list[dict] = []
    rejected: list[dict] = []
    for r in sorted(history.rounds):
        entry = history.rounds[r]
        changed += entry.get("screened", [])
        rejected += [
            {"round": r, "site_id": d["site_id"], "reason": "; ".join(d["reasons"])}
            for d in entry.get("dropped", [])
            if d.get("stage") == "train"
        ]
    return {
        "settings": {
            "enabled": cfg.robust_aggregation == "on",
            "norm_bound": cfg.robust_norm_bound or None,
            "norm_factor": cfg.robust_norm_factor,
            "weight_cap": cfg.robust_weight_cap,
            "aggregator": cfg.robust_aggregator,
            "trim_fraction": cfg.robust_trim_fraction,
        },
        "changed": changed,
        "rejected": rejected,
    }
