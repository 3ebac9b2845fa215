"""The report's ``pretraining`` section: federated self-supervised pretraining, per site.

Which sites pretrained in how many rounds, on how many scans, with what status — and,
named apart, the holdout sites that contributed their unlabelled scans (a holdout never
contributes labels; pretraining never reads any). ``None`` when the run did not pretrain.
The privacy spend of pretraining is in the ``privacy`` section (``pretraining`` rows and
the releases of kind ``train.pretrain``).
"""

from __future__ import annotations

from fedmi.server.history import RunHistory
from fedmi.shared.run_config import RunConfig


def pretraining_rows(history: RunHistory) -> dict[str, dict[str, object]]:
    """Per site: role, rounds pretrained, scans in its last ``ok`` round, last status,
    rounds it did not pretrain (by status)."""
    rows: dict[str, dict[str, object]] = {}
    for r in sorted(history.pretraining):
        for name, entry in history.pretraining[r].get("sites", {}).items():
            row = rows.setdefault(
                name,
                {
                    "site_id": name,
                    "role": entry.get("role", "unknown"),
                    "rounds_pretrained": 0,
                    "num_examples": 0,
                    "status": None,
                    "refused_rounds": {},
                },
            )
            status = str(entry.get("status", "unknown"))
            row["status"] = status
            if status == "ok":
                row["rounds_pretrained"] = int(row["rounds_pretrained"]) + 1  # type: ignore[call-overload]
                row["num_examples"] = int(entry.get("num-examples", 0) or 0)
            else:
                row["refused_rounds"].setdefault(status, []).append(r)  # type: ignore[union-attr]
    return rows


def pretraining_section(cfg: RunConfig, history: RunHistory) -> dict[str, object] | None:
    """The ``pretraining`` section of report.json (``None`` without pretraining)."""
    if not cfg.pretrains:
        return None
    rows = pretraining_rows(history)
    contributed = sorted(
        name
        for name, row in rows.items()
        if row["role"] == "holdout" and int(row["rounds_pretrained"]) > 0  # type: ignore[call-overload]
    )
    return {
        "rounds": cfg.pretrain_rounds,
        "completed_rounds": len(history.pretraining),
        "epochs": cfg.pretrain_epochs,
        "mask_ratio": cfg.pretrain_mask_ratio,
        "holdouts_enabled": cfg.pretrain_holdouts,
        "linear_probe_rounds": cfg.linear_probe_rounds,
        "per_site": [rows[k] for k in sorted(rows)],
        "holdouts_contributed": contributed,
        "dropped": [
            d for r in sorted(history.pretraining) for d in history.pretraining[r]["dropped"]
        ],
        "missing": [
            m for r in sorted(history.pretraining) for m in history.pretraining[r]["missing"]
        ],
        # robust aggregation's changes to accepted updates (weight cap, norm bound)
        "screened": [
            c
            for r in sorted(history.pretraining)
            for c in history.pretraining[r].get("screened", [])
        ],
    }
