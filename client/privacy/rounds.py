"""One DP-SGD round at a site: plan the noise for the run, charge the ledger, train.

The noise multiplier σ is calibrated once per run for the planned rounds (see
:mod:`fedmi.client.privacy.settings` for the whole scheme) and kept in the ledger, so a
restarted SuperNode reuses it; each round's steps are charged before they are taken
(write-ahead), and a round that would exceed the budget is refused.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch

from fedmi.client.privacy.accounting import BudgetExhausted, calibrate_noise, epsilon_of
from fedmi.client.privacy.dp_sgd import DPSGD, poisson_plan
from fedmi.client.privacy.ledger import LedgerError, PrivacyLedger
from fedmi.client.privacy.release import reserved_releases
from fedmi.client.privacy.settings import PrivacySettings
from fedmi.client.site.settings import SiteSettings
from fedmi.client.training.loop import TrainResult, TrainSettings, train_local
from fedmi.shared.contract import TRAIN

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PrivateRound:
    """Outcome of a DP round: ``status`` (``ok``, ``budget-exhausted``, ``ledger-error``),
    the training result when trained, and the declared privacy metrics to send."""

    status: str
    result: TrainResult | None
    metrics: dict[str, float | int]


def privacy_metrics(
    settings: PrivacySettings,
    epsilon: float,
    *,
    noise_multiplier: float = 0.0,
    sample_rate: float = 0.0,
    steps: int = 0,
) -> dict[str, float | int]:
    """The declared train-reply privacy metrics (``shared.contract.TRAIN_METRICS``)."""
    return {
        "epsilon": float(epsilon),
        "epsilon-budget": float(settings.epsilon),
        "delta": float(settings.delta),
        "noise-multiplier": float(noise_multiplier),
        "sample-rate": float(sample_rate),
        "dp-steps": int(steps),
        "max-grad-norm": float(settings.max_grad_norm),
    }


def plan_sigma(
    ledger: PrivacyLedger,
    settings: PrivacySettings,
    *,
    run_id: str,
    sample_rate: float,
    steps: int,
    rounds_left: int,
    history: list[tuple[float, float, int]],
    spent: float,
    reserved: list[tuple[float, float, int]] = (),  # type: ignore[assignment]
    plan_key: str | None = None,
    target: float | None = None,
) -> float:
    """The run's noise multiplier: the one kept in the ledger, or a new plan for the run.

    A new plan is calibrated (and kept) on the run's first round, or when anything that
    shapes it changed (sample rate, steps, clipping norm, δ, budget, accountant). It is
    calibrated with ``reserved`` — the run's statistic releases not yet charged
    (:func:`fedmi.client.privacy.release.reserved_releases`) — composed in, so that
    training leaves them their part of the budget.

    ``plan_key`` (default ``run_id``) is where the ledger keeps the plan and ``target``
    (default the whole budget ε) the ε the ledger may reach after the planned steps: the
    DP pretraining of :mod:`fedmi.client.privacy.pretrain_round` plans under its own key
    for its share of the budget.

    Raises
    ------
    BudgetExhausted
        When no noise multiplier fits the rounds left in the remaining budget.
    """
    key = plan_key or run_id
    plan = ledger.run_plan(key)
    wanted = {
        "sample_rate": sample_rate,
        "steps_per_round": steps,
        "max_grad_norm": settings.max_grad_norm,
        "delta": settings.delta,
        "epsilon_budget": settings.epsilon,
        "accountant": settings.accountant,
    }
    if target is not None:
        wanted["epsilon_target"] = target
    if plan is not None and all(plan.get(k) == v for k, v in wanted.items()):
        return float(plan["noise_multiplier"])
    limit = settings.epsilon if target is None else target
    sigma = calibrate_noise(
        epsilon=limit,
        delta=settings.delta,
        sample_rate=sample_rate,
        steps=steps * rounds_left,
        prior=[*history, *reserved],
        accountant=settings.accountant,
    )
    ledger.set_run_plan(
        key, {**wanted, "noise_multiplier": sigma, "planned_steps": steps * rounds_left}
    )
    log.info(
        "DP-SGD planned (%s): σ %.3f, q %.4f, %d steps over %d round(s) for ε ≤ %g at δ %g "
        "(budget %g, ε %.3f already spent)",
        key,
        sigma,
        sample_rate,
        steps * rounds_left,
        rounds_left,
        limit,
        settings.delta,
        settings.epsilon,
        spent,
    )
    return sigma


def charge_steps(
    ledger: PrivacyLedger,
    settings: PrivacySettings,
    run_id: str,
    server_round: int,
    sigma: float,
    sample_rate: float,
    steps: int,
    after: float,
    *,
    limit: float | None = None,
    kind: str = TRAIN,
) -> bool:
    """Charge the round's steps before they are taken (write-ahead), unless the ledger's ε
    would pass ``limit`` (default the budget) after them."""
    limit = settings.epsilon if limit is None else limit
    if after > limit * (1 + 1e-9):
        log.warning(
            "%s round %d would spend ε to %.3f, over its limit %g (budget %g): refused",
            kind,
            server_round,
            after,
            limit,
            settings.epsilon,
        )
        return False
    ledger.charge(
        run_id=run_id,
        server_round=server_round,
        noise_multiplier=sigma,
        sample_rate=sample_rate,
        steps=steps,
        max_grad_norm=settings.max_grad_norm,
        delta=settings.delta,
        epsilon=after,
        kind=kind,
    )
    return True


def _charge_round(
    ledger: PrivacyLedger,
    role: str,
    settings: PrivacySettings,
    y: torch.Tensor,
    train: TrainSettings,
    run_id: str,
    server_round: int,
    planned_rounds: int,
) -> PrivateRound | tuple[float, float, int, float]:
    """Plan and charge one round (the caller holds the ledger's lock).

    Returns ``(sigma, sample_rate, steps, epsilon_after)`` once charged, or the refusal.
    """
    ledger.set_budget(settings.epsilon, settings.delta)
    history = ledger.history()
    spent = epsilon_of(history, settings.delta, settings.accountant)
    q, per_epoch = poisson_plan(int(y.shape[0]), train.batch_for(int(y.shape[0])))
    steps = per_epoch * train.epochs
    try:
        sigma = plan_sigma(
            ledger,
            settings,
            run_id=run_id,
            sample_rate=q,
            steps=steps,
            rounds_left=max(1, planned_rounds - server_round + 1),
            history=history,
            spent=spent,
            reserved=reserved_releases(ledger, settings, role, run_id),
        )
    except BudgetExhausted as exc:
        log.warning("privacy budget exhausted, refusing to train: %s", exc)
        return PrivateRound("budget-exhausted", None, privacy_metrics(settings, spent))
    after = epsilon_of([*history, (sigma, q, steps)], settings.delta, settings.accountant)
    if not charge_steps(ledger, settings, run_id, server_round, sigma, q, steps, after):
        return PrivateRound("budget-exhausted", None, privacy_metrics(settings, spent))
    return sigma, q, steps, after


def private_round(
    site: SiteSettings,
    settings: PrivacySettings,
    model: torch.nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    train: TrainSettings,
    *,
    run_id: str,
    server_round: int,
    planned_rounds: int,
    global_params: list[torch.Tensor] | None = None,
) -> PrivateRound:
    """Charge the ledger and train one round with DP-SGD, or refuse.

    The charge is decided and written under the ledger's lock (another process charging
    the same ledger waits); training happens after the lock is released. Any ledger
    problem (:class:`LedgerError`: seal, site, lock, write) refuses the round untrained.
    """
    try:
        with PrivacyLedger.transaction(
            settings.ledger_folder(site), site_id=site.site_id
        ) as ledger:
            decision = _charge_round(
                ledger, site.role, settings, y, train, run_id, server_round, planned_rounds
            )
    except LedgerError as exc:
        log.error("privacy ledger problem, refusing to train: %s", exc)
        return PrivateRound("ledger-error", None, {})
    if isinstance(decision, PrivateRound):
        return decision
    sigma, q, steps, after = decision
    dp = DPSGD(noise_multiplier=sigma, max_grad_norm=settings.max_grad_norm)
    result = train_local(model, x, y, train, privacy=dp, global_params=global_params)
    if result.steps != steps:  # pragma: no cover - poisson_plan mirrors Opacus
        raise RuntimeError(f"charged {steps} DP steps but took {result.steps}")
    log.info("round %d: DP-SGD ε %.3f of %g spent", server_round, after, settings.epsilon)
    return PrivateRound(
        "ok",
        result,
        privacy_metrics(settings, after, noise_multiplier=sigma, sample_rate=q, steps=steps),
    )
