"""The report's ``privacy`` section, from the sites' declared train metrics in RunHistory."""

from __future__ import annotations

import logging

from fedmi.server.history import REFUSALS, RunHistory
from fedmi.shared.run_config import RunConfig

log = logging.getLogger(__name__)

#: Train-reply metric → report field.
_FIELDS = {
    "epsilon": "epsilon",
    "epsilon-budget": "epsilon_budget",
    "delta": "delta",
    "noise-multiplier": "noise_multiplier",
    "sample-rate": "sample_rate",
    "max-grad-norm": "clipping_norm",
}


def _new_row(name: str) -> dict[str, object]:
    return {
        "site_id": name,
        "dp": "off",
        "steps": 0,
        "rounds_trained": 0,
        "refused_rounds": {},
        **{v: None for v in _FIELDS.values()},
    }


def _record(row: dict[str, object], r: int, entry: dict) -> None:
    """Fold one round's train entry of a site into its row."""
    status = str(entry.get("status", "unknown"))
    row["status"] = status
    if "epsilon" in entry:
        row["dp"] = "on"
        for key, field in _FIELDS.items():
            if key in entry and (status == "ok" or field in ("epsilon", "epsilon_budget", "delta")):
                row[field] = entry[key]
    if status == "ok":
        row["rounds_trained"] = int(row["rounds_trained"]) + 1
        row["steps"] = int(row["steps"]) + int(entry.get("dp-steps", 0) or 0)
    else:
        row["refused_rounds"].setdefault(status, []).append(r)  # type: ignore[union-attr]


def _finish(row: dict[str, object]) -> None:
    """Mark a site that never trained as ``unknown``; warn about exhausted budgets."""
    if row["dp"] == "off" and row.get("status") != "ok":
        row["dp"] = "unknown"  # never trained here: its DP setting was not reported
    if "budget-exhausted" in row["refused_rounds"]:  # type: ignore[operator]
        log.warning(
            "site %s refused rounds %s: privacy budget exhausted",
            row["site_id"],
            row["refused_rounds"]["budget-exhausted"],  # type: ignore[index]
        )


def _central(cfg: RunConfig, history: RunHistory) -> dict[str, object]:
    """Client-level central DP: its settings and ε over the rounds that released a model."""
    if cfg.central_dp == "off":
        return {"mode": cfg.central_dp}
    from fedmi.server.strategy.central_dp import central_epsilon

    released = sum(
        1
        for r in history.rounds.values()
        if any(e.get("status") == "ok" for e in r.get("train", {}).values())
    )
    return {
        "mode": cfg.central_dp,
        "level": "client (a whole site)",
        "noise_multiplier": cfg.central_noise_multiplier,
        "clipping_norm": cfg.central_clipping_norm,
        "released_rounds": released,
        "delta": 1e-5,
        "epsilon": central_epsilon(cfg.central_noise_multiplier, released, 1e-5),
    }


def privacy_section(cfg: RunConfig, history: RunHistory) -> dict[str, object]:
    """Per training site: DP on/off, ε spent (cumulative, the site's dataset across runs),
    its budget, δ, σ, q, DP-SGD steps this run, clipping norm, last status and the rounds
    it refused (``budget-exhausted``, ``ledger-error``); plus central DP when used, and
    the same rows for the pretraining rounds (``pretraining``) when the run pretrained."""
    sites: dict[str, dict[str, object]] = {}
    for r in sorted(history.rounds):
        for name, entry in history.rounds[r].get("train", {}).items():
            _record(sites.setdefault(name, _new_row(name)), r, entry)
    for row in sites.values():
        _finish(row)
    out: dict[str, object] = {
        "level": "sample (DP-SGD at each site, each site's own budget)",
        "per_site": [sites[k] for k in sorted(sites)],
        "releases": releases_section(history),
        "central": _central(cfg, history),
    }
    if history.pretraining:
        out["pretraining"] = _pretraining_rows(history)
    return out


def _pretraining_rows(history: RunHistory) -> list[dict[str, object]]:
    """Per site: the DP-SGD spend of its pretraining rounds (ledger kind ``train.pretrain``),
    as the training rows: ε after its last pretraining round, σ, q, steps, refusals."""
    sites: dict[str, dict[str, object]] = {}
    for r in sorted(history.pretraining):
        for name, entry in history.pretraining[r].get("sites", {}).items():
            _record(sites.setdefault(name, _new_row(name)), r, entry)
    for row in sites.values():
        _finish(row)
        row["rounds_pretrained"] = row.pop("rounds_trained")
    return [sites[k] for k in sorted(sites)]


def releases_section(history: RunHistory) -> list[dict[str, object]]:
    """Per site: the statistic releases charged to its ledger and the ones it refused.

    ``released``: kind → count; ``refused``: kind → status → count (its query policy,
    ``refused``; its budget, ``budget-exhausted``; its ledger, ``ledger-error``);
    ``epsilon``: the site's cumulative ε after its last release this run.
    """
    rows: dict[str, dict[str, object]] = {}
    for rel in history.releases:
        row = rows.setdefault(
            rel["site_id"],
            {"site_id": rel["site_id"], "released": {}, "refused": {}, "epsilon": None},
        )
        if rel["status"] in REFUSALS:
            kinds = row["refused"].setdefault(rel["kind"], {})  # type: ignore[union-attr]
            kinds[rel["status"]] = kinds.get(rel["status"], 0) + 1
            continue
        released = row["released"]
        released[rel["kind"]] = released.get(rel["kind"], 0) + 1  # type: ignore[union-attr]
        if rel["epsilon"] is not None:
            row["epsilon"] = max(float(row["epsilon"] or 0.0), rel["epsilon"])
    for row in rows.values():
        if any(row["refused"].values()):  # type: ignore[union-attr]
            log.info("site %s refused releases: %s", row["site_id"], row["refused"])
    return [rows[k] for k in sorted(rows)]
