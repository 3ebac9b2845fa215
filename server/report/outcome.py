"""Whether a run did its job: ``report["outcome"]``.

A run *failed* when it trained nothing (no round aggregated a single update: every site
refused, was budget-exhausted, or had its update dropped) or when no site was evaluated in
the final round. A failed run still writes its report (saying so at the top of
report.html), and its command exits non-zero with the reasons (:class:`RunFailed`).
"""

from __future__ import annotations

from fedmi.server.history import RunHistory

OK = "ok"
FAILED = "failed"


class RunFailed(RuntimeError):
    """The run wrote its report but did not do its job; ``reasons`` say why."""

    def __init__(self, reasons: list[str]) -> None:
        super().__init__("the run failed: " + "; ".join(reasons))
        self.reasons = reasons


def aggregated_updates(entry: dict) -> int:
    """Updates a round could aggregate: sites that trained (``ok``) and were not dropped."""
    dropped = {d["site_id"] for d in entry.get("dropped", []) if d.get("stage") == "train"}
    return sum(
        1
        for site, t in entry.get("train", {}).items()
        if t.get("status") == OK and site not in dropped
    )


def _statuses(history: RunHistory) -> str:
    """``site: status`` of every training reply that was not ``ok`` (first round seen)."""
    seen: dict[str, str] = {}
    for r in sorted(history.rounds):
        for site, t in history.rounds[r].get("train", {}).items():
            if t.get("status") != OK:
                seen.setdefault(site, str(t.get("status")))
        for d in history.rounds[r].get("dropped", []):
            if d.get("stage") == "train":
                seen.setdefault(d["site_id"], "update dropped: " + "; ".join(d.get("reasons", [])))
    return ", ".join(f"{k} {v}" for k, v in sorted(seen.items()))


def run_outcome(history: RunHistory, *, trained: bool | None = None) -> dict[str, object]:
    """``{"status": "ok" | "failed", "reasons": [...]}`` of the run so far.

    Parameters
    ----------
    history
        The run's records.
    trained
        Whether training produced a model, when the caller knows it otherwise (the
        pooled and local baselines train without federated rounds); by default, whether
        any round aggregated at least one update.
    """
    reasons: list[str] = []
    if trained is None and history.rounds:
        trained = any(aggregated_updates(e) for e in history.rounds.values())
    if trained is False:
        why = _statuses(history)
        reasons.append(
            "no update was aggregated in any round: the model is its initial weights"
            + (f" ({why})" if why else "")
        )
    if not history.final:
        missing = ", ".join(
            f"{m['site_id']} ({m.get('reason', '?')})" for m in history.missing_final
        )
        reasons.append(
            "no site was evaluated in the final round" + (f": {missing}" if missing else "")
        )
    return {"status": FAILED if reasons else OK, "reasons": reasons}
