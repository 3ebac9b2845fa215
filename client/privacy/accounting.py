"""Privacy accounting: ε of a DP-SGD history, and the noise that fits a budget.

Histories are Opacus accountant histories ``[(noise_multiplier, sample_rate, steps), ...]``
(what the site's ledger stores, :mod:`fedmi.client.privacy.ledger`); ε is Opacus' RDP
(default) or PRV accountant at the site's δ.
"""

from __future__ import annotations

import warnings

#: Above this noise multiplier training is pointless: the site refuses instead.
MAX_NOISE_MULTIPLIER = 1000.0
#: A remainder below this share of the budget (or the calibration tolerance) counts as spent.
MIN_REMAINING = 0.01


class BudgetExhausted(RuntimeError):
    """The planned steps do not fit in what is left of the budget."""


def _merged(history: list[tuple[float, float, int]]) -> list[tuple[float, float, int]]:
    out: list[tuple[float, float, int]] = []
    for sigma, q, steps in history:
        if steps <= 0:
            continue
        if out and out[-1][0] == sigma and out[-1][1] == q:
            out[-1] = (sigma, q, out[-1][2] + steps)
        else:
            out.append((sigma, q, steps))
    return out


def epsilon_of(
    history: list[tuple[float, float, int]], delta: float, accountant: str = "rdp"
) -> float:
    """ε at ``delta`` of an Opacus accountant history ``[(σ, q, steps), ...]`` (0 if empty)."""
    from opacus.accountants import create_accountant

    hist = _merged(history)
    if not hist:
        return 0.0
    acc = create_accountant(accountant)
    acc.history = hist
    with warnings.catch_warnings():  # "optimal order is the largest alpha" at large σ
        warnings.simplefilter("ignore", UserWarning)
        return float(acc.get_epsilon(delta=delta))


def calibrate_noise(
    *,
    epsilon: float,
    delta: float,
    sample_rate: float,
    steps: int,
    prior: list[tuple[float, float, int]] | None = None,
    accountant: str = "rdp",
    tolerance: float = 0.01,
) -> float:
    """Smallest σ (within ``tolerance`` in ε) such that ``prior`` + ``steps`` at ``(σ, q)``
    stays within ``epsilon`` at ``delta``.

    Raises
    ------
    BudgetExhausted
        When even σ = :data:`MAX_NOISE_MULTIPLIER` does not fit.
    """
    prior = _merged(list(prior or []))
    spent = epsilon_of(prior, delta, accountant)
    if epsilon - spent < max(tolerance, MIN_REMAINING * epsilon):
        raise BudgetExhausted(f"ε {spent:.3f} already spent of a budget of {epsilon:g}")
    if not prior:
        return _opacus_sigma(epsilon, delta, sample_rate, steps, accountant, tolerance)
    return _bisect_sigma(epsilon, delta, sample_rate, steps, prior, accountant, tolerance, spent)


def _opacus_sigma(
    epsilon: float, delta: float, sample_rate: float, steps: int, accountant: str, tolerance: float
) -> float:
    """σ for an empty ledger: Opacus' own ``get_noise_multiplier``."""
    from opacus.accountants.utils import get_noise_multiplier

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            sigma = float(
                get_noise_multiplier(
                    target_epsilon=epsilon,
                    target_delta=delta,
                    sample_rate=sample_rate,
                    steps=steps,
                    accountant=accountant,
                    epsilon_tolerance=tolerance,
                )
            )
    except ValueError as exc:
        raise BudgetExhausted(str(exc)) from None
    if sigma > MAX_NOISE_MULTIPLIER:
        raise BudgetExhausted(f"σ {sigma:.1f} needed for ε {epsilon:g}")
    return sigma


def _bisect_sigma(
    epsilon: float,
    delta: float,
    sample_rate: float,
    steps: int,
    prior: list[tuple[float, float, int]],
    accountant: str,
    tolerance: float,
    spent: float,
) -> float:
    """σ composed with what the ledger already holds: bisection over Opacus' accountant."""

    def eps(sigma: float) -> float:
        return epsilon_of([*prior, (sigma, sample_rate, steps)], delta, accountant)

    lo, hi = 0.0, 10.0
    while eps(hi) > epsilon:
        lo, hi = hi, hi * 2
        if hi > MAX_NOISE_MULTIPLIER:
            raise BudgetExhausted(
                f"ε {spent:.3f} already spent: {steps} more steps do not fit in {epsilon:g}"
            )
    for _ in range(100):  # invariant: eps(hi) <= epsilon < eps(lo)
        mid = (lo + hi) / 2
        e = eps(mid)
        if e > epsilon:
            lo = mid
        else:
            hi = mid
            if epsilon - e < tolerance:
                break
    return hi
