"""Statistic releases under DP: the site's query policy, the Gaussian mechanism, the charge.

Every data-derived statistic a site with DP on sends (besides the DP-SGD weights) goes
through :func:`open_release` (the classes of :mod:`fedmi.shared.contract.privacy`):

1. **Query policy.** At most ``max-queries-per-run`` replies of each query kind,
   ``max-evaluations-per-run`` per-round evaluations and ``max-validations-per-run`` final
   validations in one run, and ``max-releases-per-day`` releases of any kind in one UTC day
   (counted in the ledger, so restarts do not reset them). Beyond: status ``refused``.
2. **Budget.** The part of the budget kept for a run's releases, in zCDP ``ρ``: from
   ``release-share × ε`` at a training site, the whole ``ε`` at a holdout (it never trains);
   divided among the release kinds by :data:`~fedmi.shared.contract.privacy.RELEASE_WEIGHTS`
   and each kind's cap. A release whose charge would push the composed ε of the whole
   ledger past the budget is refused (``budget-exhausted``). DP-SGD plans its noise with the
   run's not-yet-used release ρ reserved (:func:`reserved_releases`).
3. **Charge, then noise.** The release's mechanisms are charged as one ledger entry
   (write-ahead) and only then drawn, from the operating system's randomness.

A site with DP off releases exact statistics and is not limited (its own choice).
"""

from __future__ import annotations

import datetime as dt
import logging
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from fedmi.client.privacy.accounting import epsilon_of
from fedmi.client.privacy.ledger import LedgerError, PrivacyLedger
from fedmi.client.privacy.settings import PrivacySettings
from fedmi.client.site.settings import SiteSettings
from fedmi.shared import contract
from fedmi.shared.contract.privacy import (
    DP_SGD_KINDS,
    RELEASE_WEIGHTS,
    composed_noise_multiplier,
    multiplier_for,
    rho_for_epsilon,
    rho_of,
)

log = logging.getLogger(__name__)

#: release kinds a site answers in each role
KINDS_BY_ROLE = {
    "train": (
        contract.QUERY,
        contract.EVALUATE,
        contract.EXTERNAL,
        contract.FEATURES,
        contract.OOD_STATS,
        contract.NORMATIVE_STATS,
    ),
    "holdout": (contract.QUERY, contract.EXTERNAL, contract.NORMATIVE_EVAL),
}


class ReleaseRefused(RuntimeError):
    """The site will not release: ``status`` is ``refused``, ``budget-exhausted`` or
    ``ledger-error``; the message says why (for the site's log)."""

    def __init__(self, status: str, reason: str) -> None:
        super().__init__(reason)
        self.status = status


def cap(settings: PrivacySettings, kind: str) -> int:
    """How many releases of ``kind`` the site allows in one run."""
    if kind == contract.EVALUATE:
        return settings.max_evaluations_per_run
    if kind in (contract.EXTERNAL, contract.NORMATIVE_EVAL):
        return settings.max_validations_per_run
    if kind == contract.NORMATIVE_STATS:
        return min(1, settings.max_queries_per_run)  # one normative fit per run
    return settings.max_queries_per_run


def run_release_rho(settings: PrivacySettings, role: str) -> float:
    """zCDP ρ a site keeps for one run's releases (module docstring, step 2)."""
    share = 1.0 if role == "holdout" else settings.release_share
    return rho_for_epsilon(share * settings.epsilon, settings.delta)


def kind_rho(settings: PrivacySettings, role: str, kind: str) -> float:
    """zCDP ρ of one release of ``kind``: its kind's weighted share over its cap."""
    kinds = [k for k in KINDS_BY_ROLE.get(role, ()) if cap(settings, k) > 0]
    if kind not in kinds:
        return 0.0
    total = sum(RELEASE_WEIGHTS[k] for k in kinds)
    if total <= 0:
        return 0.0
    return run_release_rho(settings, role) * RELEASE_WEIGHTS[kind] / total / cap(settings, kind)


def reserved_releases(
    ledger: PrivacyLedger, settings: PrivacySettings, role: str, run_id: str
) -> list[tuple[float, float, int]]:
    """The run's release ρ not yet charged, as one history entry (for DP-SGD's plan)."""
    spent = sum(
        rho_of(c["noise_multiplier"])
        for c in ledger.charges(run_id=run_id)
        if c.get("kind", "train") not in DP_SGD_KINDS
    )
    left = run_release_rho(settings, role) - spent
    return [(multiplier_for(left), 1.0, 1)] if left > 0 else []


@dataclass
class Release:
    """A charged release: one noise multiplier per mechanism, and the noise to add.

    Attributes
    ----------
    multipliers
        Mechanism name → Gaussian noise multiplier σ (noise sd = σ·sensitivity).
    epsilon
        The ledger's composed ε after this release was charged.
    """

    multipliers: dict[str, float]
    epsilon: float
    rng: np.random.Generator = field(
        default_factory=lambda: np.random.default_rng(secrets.randbits(128)), repr=False
    )

    def sd(self, mechanism: str, sensitivity: float = 1.0) -> float:
        """The noise standard deviation of ``mechanism`` at L2 ``sensitivity``."""
        return float(self.multipliers[mechanism] * sensitivity)

    def gaussian(
        self, mechanism: str, values: np.ndarray | float, sensitivity: float = 1.0
    ) -> np.ndarray:
        """``values`` plus Gaussian noise of sd ``σ·sensitivity`` (float64)."""
        arr = np.asarray(values, dtype=np.float64)
        return arr + self.rng.normal(0.0, self.sd(mechanism, sensitivity), arr.shape)


def release_multipliers(
    settings: PrivacySettings, role: str, kind: str, mechanisms: Mapping[str, float]
) -> dict[str, float]:
    """Each mechanism's noise multiplier: the release's ρ split by the mechanisms' weights.

    Raises
    ------
    ReleaseRefused
        ``refused`` when the site's policy leaves no budget for ``kind``.
    """
    rho = kind_rho(settings, role, kind)
    total = sum(mechanisms.values())
    if rho <= 0 or total <= 0:
        raise ReleaseRefused("refused", f"query policy: no budget for {kind} releases")
    return {name: multiplier_for(rho * w / total) for name, w in mechanisms.items()}


def _count_today(ledger: PrivacyLedger) -> int:
    today = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d")
    return sum(
        1
        for c in ledger.charges()
        if c.get("kind", "train") not in DP_SGD_KINDS and str(c.get("time", "")).startswith(today)
    )


def _check_policy(ledger: PrivacyLedger, settings: PrivacySettings, run_id: str, kind: str):
    allowed = cap(settings, kind)
    if allowed == 0:
        raise ReleaseRefused("refused", f"query policy: this site releases no {kind} statistics")
    used = len(ledger.charges(run_id=run_id, kind=kind))
    if used >= allowed:
        raise ReleaseRefused(
            "refused",
            f"query policy: {used} {kind} release(s) already in this run "
            f"(at most {cap(settings, kind)})",
        )
    if _count_today(ledger) >= settings.max_releases_per_day:
        raise ReleaseRefused(
            "refused", f"query policy: {settings.max_releases_per_day} releases today already"
        )


def open_release(
    site: SiteSettings,
    settings: PrivacySettings,
    *,
    run_id: str,
    kind: str,
    mechanisms: Mapping[str, float],
) -> Release:
    """Check the query policy and the budget, charge the ledger, return the noise source.

    Parameters
    ----------
    mechanisms
        Mechanism name → its weight in this release's ρ (e.g. the AUC most).

    Raises
    ------
    ReleaseRefused
        Beyond the query policy (``refused``), over the budget (``budget-exhausted``) or
        with an unusable ledger (``ledger-error``). Nothing is charged then.
    """
    try:
        with PrivacyLedger.transaction(
            settings.ledger_folder(site), site_id=site.site_id
        ) as ledger:  # policy, budget and charge under the ledger's lock
            return _charge_release(ledger, site, settings, run_id, kind, mechanisms)
    except LedgerError as exc:
        raise ReleaseRefused("ledger-error", str(exc)) from None


def _charge_release(
    ledger: PrivacyLedger,
    site: SiteSettings,
    settings: PrivacySettings,
    run_id: str,
    kind: str,
    mechanisms: Mapping[str, float],
) -> Release:
    _check_policy(ledger, settings, run_id, kind)
    multipliers = release_multipliers(settings, site.role, kind, mechanisms)
    sigma = composed_noise_multiplier(list(multipliers.values()))
    ledger.set_budget(settings.epsilon, settings.delta)
    history = ledger.history()
    after = epsilon_of([*history, (sigma, 1.0, 1)], settings.delta, settings.accountant)
    if after > settings.epsilon * (1 + 1e-9):
        raise ReleaseRefused(
            "budget-exhausted",
            f"a {kind} release would spend ε to {after:.3f}, over the budget {settings.epsilon:g}",
        )
    ledger.charge(
        run_id=run_id,
        server_round=0,
        noise_multiplier=sigma,
        sample_rate=1.0,
        steps=1,
        max_grad_norm=0.0,
        delta=settings.delta,
        epsilon=after,
        kind=kind,
    )
    log.info("%s release charged: ε %.3f of %g", kind, after, settings.epsilon)
    return Release(multipliers, after)
