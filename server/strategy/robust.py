"""Robust aggregation: what bounds the influence of one site on a round's model.

Applied to the replies that passed :mod:`fedmi.server.ingress`, before Flower's
aggregation (whichever aggregator the method or ``robust-aggregator`` names):

1. **count cap** — a site's ``num-examples`` is capped at the training count it declared
   when it joined the run (``num-train`` of its query reply, :class:`fedmi.server.history.SiteInfo`);
2. **weight cap** — and at ``robust-weight-cap`` × the round's median (capped) count, so
   that the largest site cannot outvote the others (FedAvg's weight of a site is its count);
3. **norm bound** — the update ``reply − global`` of every site is scaled down to the bound
   ``robust-norm-bound`` or, when that is 0, ``robust-norm-factor`` × the round's median
   update norm (floating-point arrays only).

Each change is returned as a :class:`Screening` (site, reason, before, after) for the
report (:mod:`fedmi.server.report.robustness`). Plain functions over NumPy arrays; the
strategy (:mod:`fedmi.server.strategy.base`) calls :func:`screen_updates`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from fedmi.shared.run_config import RunConfig

#: reasons recorded for a changed update
CLIPPED, COUNT_CAPPED, WEIGHT_CAPPED = "norm-clipped", "count-capped", "weight-capped"


@dataclass(frozen=True)
class RobustSettings:
    """The run config's robust-aggregation keys (:data:`fedmi.shared.run_settings.RUN_CONFIG`)."""

    enabled: bool = True
    norm_bound: float = 0.0
    norm_factor: float = 1.0
    weight_cap: float = 1.0

    @classmethod
    def from_run_config(cls, cfg: RunConfig) -> RobustSettings:
        return cls(
            enabled=cfg.robust_aggregation == "on",
            norm_bound=float(cfg.robust_norm_bound),
            norm_factor=float(cfg.robust_norm_factor),
            weight_cap=float(cfg.robust_weight_cap),
        )


@dataclass
class Update:
    """One accepted train reply: its site, weights and claimed count (changed in place)."""

    node_id: int
    site_id: str
    arrays: dict[str, np.ndarray]
    num_examples: float


@dataclass(frozen=True)
class Screening:
    """One change made to one update, for the report."""

    site_id: str
    reason: str
    before: float
    after: float
    detail: str

    def as_dict(self, server_round: int) -> dict[str, object]:
        return {
            "round": server_round,
            "site_id": self.site_id,
            "reason": self.reason,
            "before": self.before,
            "after": self.after,
            "detail": self.detail,
        }


def update_norm(arrays: Mapping[str, np.ndarray], reference: Mapping[str, np.ndarray]) -> float:
    """L2 norm of ``arrays − reference`` over the floating-point arrays."""
    total = 0.0
    for name, ref in reference.items():
        if np.asarray(ref).dtype.kind != "f":
            continue
        diff = np.asarray(arrays[name], dtype=np.float64) - np.asarray(ref, dtype=np.float64)
        total += float(np.sum(diff * diff))
    return float(np.sqrt(total))


def clip_update(
    arrays: Mapping[str, np.ndarray], reference: Mapping[str, np.ndarray], bound: float
) -> tuple[dict[str, np.ndarray], float, float]:
    """``reference + (arrays − reference)·min(1, bound/‖·‖)``; returns it, the norm before
    and after. Non-floating arrays (counters) are kept as sent."""
    norm = update_norm(arrays, reference)
    if norm <= bound:
        return dict(arrays), norm, norm
    scale = bound / norm
    out: dict[str, np.ndarray] = {}
    for name, value in arrays.items():
        ref = reference.get(name)
        if ref is None or np.asarray(ref).dtype.kind != "f":
            out[name] = value
            continue
        ref64 = np.asarray(ref, dtype=np.float64)
        clipped = ref64 + (np.asarray(value, dtype=np.float64) - ref64) * scale
        out[name] = clipped.astype(np.asarray(value).dtype)
    return out, norm, update_norm(out, reference)


def screen_updates(
    updates: Sequence[Update],
    reference: Mapping[str, np.ndarray],
    declared: Mapping[int, int],
    settings: RobustSettings,
) -> list[Screening]:
    """Cap counts and clip norms of ``updates`` in place (module docstring); the changes.

    ``declared``: node id → the training count the site declared when it joined.
    """
    if not settings.enabled or not updates:
        return []
    changes: list[Screening] = []
    for u in updates:
        limit = declared.get(u.node_id)
        if limit is not None and limit > 0 and u.num_examples > limit:
            changes.append(
                Screening(
                    u.site_id,
                    COUNT_CAPPED,
                    float(u.num_examples),
                    float(limit),
                    f"num-examples above the {limit} training scans declared at the start",
                )
            )
            u.num_examples = float(limit)
    if settings.weight_cap > 0:
        cap = settings.weight_cap * float(np.median([u.num_examples for u in updates]))
        for u in updates:
            if u.num_examples > cap:
                changes.append(
                    Screening(
                        u.site_id,
                        WEIGHT_CAPPED,
                        float(u.num_examples),
                        cap,
                        f"weight above {settings.weight_cap:g} × the round's median count",
                    )
                )
                u.num_examples = cap
    norms = [update_norm(u.arrays, reference) for u in updates]
    if settings.norm_bound > 0:
        bound, how = settings.norm_bound, "the configured bound"
    else:
        bound = settings.norm_factor * float(np.median(norms))
        how = f"{settings.norm_factor:g} × the round's median update norm"
    for u, norm in zip(updates, norms, strict=True):
        if norm > bound:
            u.arrays, before, after = clip_update(u.arrays, reference, bound)
            changes.append(Screening(u.site_id, CLIPPED, before, after, f"update norm above {how}"))
    return changes
