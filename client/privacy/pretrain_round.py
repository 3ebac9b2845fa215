"""One DP-SGD pretraining round at a site: plan the noise, charge the ledger, pretrain.

The same scheme as a training round (:mod:`fedmi.client.privacy.rounds`): the noise
multiplier σ is calibrated once per run for the planned rounds (``calibrate_noise`` over
the whole ledger's history) and kept in the ledger; each round's steps are charged
*before* they are taken (write-ahead), under the ledger's lock; a round that would exceed
the budget is refused untrained. Differences:

- the charge's ``kind`` is :data:`~fedmi.shared.contract.PRETRAIN` (a DP-SGD kind,
  :data:`~fedmi.shared.contract.privacy.DP_SGD_KINDS`: never counted as a statistic
  release), and the run's plan is kept under ``<run-id>/train.pretrain``, apart from the
  same run's training plan;
- the target is ``share × ε``, not ``ε``: pretraining may bring the ledger's composed ε
  to that share of the budget and no further, so the rest stays for fine-tuning and the
  statistic releases (which training reserves for itself when it plans its own σ).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch

from fedmi.client.privacy.accounting import BudgetExhausted, epsilon_of
from fedmi.client.privacy.dp_sgd import DPSGD, poisson_plan
from fedmi.client.privacy.ledger import LedgerError, PrivacyLedger
from fedmi.client.privacy.rounds import charge_steps, plan_sigma, privacy_metrics
from fedmi.client.privacy.settings import PrivacySettings
from fedmi.client.site.config import DEFAULT_PRETRAIN_SHARE
from fedmi.client.site.settings import SiteSettings
from fedmi.client.training.loop import TrainSettings
from fedmi.client.training.pretrain import MaskingSettings, PretrainResult, pretrain_local
from fedmi.shared.contract import PRETRAIN
from fedmi.shared.pretraining import PretrainNet

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PrivatePretraining:
    """Outcome of a DP pretraining round: ``status`` (``ok``, ``budget-exhausted``,
    ``ledger-error``), the result when pretrained, and the declared privacy metrics
    (the train reply's: :func:`fedmi.client.privacy.rounds.privacy_metrics`)."""

    status: str
    result: PretrainResult | None
    metrics: dict[str, float | int]


def plan_key(run_id: str) -> str:
    """Where the ledger keeps a run's pretraining plan (apart from its training plan)."""
    return f"{run_id}/{PRETRAIN}"


def _check_args(share: float, server_round: int, planned_rounds: int, run_id: str) -> None:
    if isinstance(share, bool) or not isinstance(share, int | float) or not 0 < share <= 1:
        raise ValueError(f"share must be a number in (0, 1], got {share!r}")
    if not isinstance(run_id, str) or not run_id:
        raise ValueError(f"run_id must be a non-empty string, got {run_id!r}")
    for name, value in (("server_round", server_round), ("planned_rounds", planned_rounds)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be an int ≥ 1, got {value!r}")


def _charge_pretraining(
    ledger: PrivacyLedger,
    settings: PrivacySettings,
    n: int,
    train: TrainSettings,
    *,
    run_id: str,
    server_round: int,
    planned_rounds: int,
    share: float,
) -> PrivatePretraining | tuple[float, float, int, float]:
    """Plan and charge one pretraining round (the caller holds the ledger's lock)."""
    ledger.set_budget(settings.epsilon, settings.delta)
    history = ledger.history()
    spent = epsilon_of(history, settings.delta, settings.accountant)
    target = share * settings.epsilon
    q, per_epoch = poisson_plan(n, train.batch_for(n))
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
            plan_key=plan_key(run_id),
            target=target,
        )
    except BudgetExhausted as exc:
        log.warning("pretraining budget exhausted, refusing to pretrain: %s", exc)
        return PrivatePretraining("budget-exhausted", None, privacy_metrics(settings, spent))
    after = epsilon_of([*history, (sigma, q, steps)], settings.delta, settings.accountant)
    charged = charge_steps(
        ledger, settings, run_id, server_round, sigma, q, steps, after, limit=target, kind=PRETRAIN
    )
    if not charged:
        return PrivatePretraining("budget-exhausted", None, privacy_metrics(settings, spent))
    return sigma, q, steps, after


def private_pretraining(
    site: SiteSettings,
    settings: PrivacySettings,
    model: PretrainNet,
    x: torch.Tensor,
    train: TrainSettings,
    *,
    run_id: str,
    server_round: int,
    planned_rounds: int,
    share: float = DEFAULT_PRETRAIN_SHARE,
    masking: MaskingSettings | None = None,
    device: torch.device | None = None,
) -> PrivatePretraining:
    """Charge the ledger and pretrain one round with DP-SGD, or refuse.

    Parameters
    ----------
    site, settings
        The site and its resolved DP settings (budget ε, δ, clipping norm, accountant).
    model, x, train, masking, device
        As :func:`fedmi.client.training.pretrain.pretrain_local` (volumes only).
    run_id, server_round, planned_rounds
        The run, this round (1-based) and the run's planned pretraining rounds.
    share
        Share of the site's ε that the ledger may reach after pretraining, in ``(0, 1]``
        (default: site.toml ``[privacy] pretrain-share``'s, :data:`~fedmi.client.site.config.DEFAULT_PRETRAIN_SHARE`; the site's,
        never the server's, to choose).

    Returns
    -------
    PrivatePretraining
        ``ok`` with the result and the privacy metrics; or the refusal, untrained.
    """
    _check_args(share, server_round, planned_rounds, run_id)
    if not isinstance(model, PretrainNet):
        raise TypeError(f"model must be a PretrainNet, got {type(model).__name__}")
    n = int(x.shape[0])
    try:
        with PrivacyLedger.transaction(
            settings.ledger_folder(site), site_id=site.site_id
        ) as ledger:
            decision = _charge_pretraining(
                ledger,
                settings,
                n,
                train,
                run_id=run_id,
                server_round=server_round,
                planned_rounds=planned_rounds,
                share=float(share),
            )
    except LedgerError as exc:
        log.error("privacy ledger problem, refusing to pretrain: %s", exc)
        return PrivatePretraining("ledger-error", None, {})
    if isinstance(decision, PrivatePretraining):
        return decision
    sigma, q, steps, after = decision
    dp = DPSGD(noise_multiplier=sigma, max_grad_norm=settings.max_grad_norm)
    result = pretrain_local(model, x, train, privacy=dp, masking=masking, device=device)
    if result.steps != steps:  # pragma: no cover - poisson_plan mirrors Opacus
        raise RuntimeError(f"charged {steps} DP steps but took {result.steps}")
    log.info("pretraining round %d: ε %.3f of %g spent", server_round, after, settings.epsilon)
    return PrivatePretraining(
        "ok",
        result,
        privacy_metrics(settings, after, noise_multiplier=sigma, sample_rate=q, steps=steps),
    )
