"""Sample-level differential privacy at a site: its settings, accounting and each DP round.

DP-SGD is **on by default**: a site that wants none must say so (``dp = "off"``). The
budget is the site's own, never the coordinator's:

==================  =============================  =========================================
setting             deployment ``--node-config``    simulation / site.toml ``[privacy]``
==================  =============================  =========================================
DP on or off        ``dp = "on" | "off"``          ``dp = "on" | "off"`` (or true/false)
ε budget            ``epsilon-budget``             ``epsilon`` (or ``epsilon-budget``)
δ                   ``delta``                      ``delta``
clipping norm       ``max-grad-norm``              ``max-grad-norm``
accountant          ``dp-accountant``              ``accountant`` (``rdp`` or ``prv``)
ledger folder       ``ledger-dir``                 —
==================  =============================  =========================================

Precedence: node-config, then site.toml ``[privacy]``, then (simulation only) the runner's
``sim-default-epsilon`` / ``sim-default-dp`` run-config keys, then the defaults
(on, ε = 8, δ = 1e-5, clipping norm 1.0, RDP). Only the ``[privacy]`` table of site.toml
is read (text-cut like ``[site]``; ``[truth]`` never enters the process).

Ledger location (:mod:`fedmi.client.privacy.ledger`): deployment ``ledger-dir`` or else ``state-dir``;
simulation ``sim-ledger-root/<site>`` when the run config names one, else the site's
ingest-cache folder beside the data (``<data-root>/.fedmi-cache/<site>/``), because the
per-run ``RUN_DIR/site-state`` is new for every run and the budget belongs to the data.

Noise calibration: on the first train instruction of a run, the site plans
``(num-server-rounds − round + 1) × local-epochs × steps_per_epoch`` DP-SGD steps at the
Poisson rate ``q`` of :func:`fedmi.client.privacy.dp_sgd.poisson_plan` and picks the smallest noise
multiplier σ whose ε — composed with everything already in the ledger — stays within the
budget at δ (Opacus' ``get_noise_multiplier`` when the ledger is empty, else a bisection
over Opacus' accountant with the ledger's history). σ is kept for the run in the ledger,
so a restarted SuperNode reuses it. A remainder under 1 % of the budget counts as spent.
Before each round the site charges the round's steps
(write-ahead); if they would push ε past the budget it refuses with ``budget-exhausted``.
"""

from __future__ import annotations

import logging
import math
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
from fedmi.client.privacy.ledger import LedgerError, PrivacyLedger
from fedmi.client.site.config import SITE_FILE, SiteConfigError, site_table_text
from fedmi.client.site.settings import SiteSettings
from fedmi.client.training.loop import TrainResult, TrainSettings

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib  # type: ignore[no-redef]

log = logging.getLogger(__name__)

DEFAULT_EPSILON = 8.0
DEFAULT_DELTA = 1e-5
DEFAULT_MAX_GRAD_NORM = 1.0
ACCOUNTANTS = ("rdp", "prv")
#: Above this noise multiplier training is pointless: the site refuses instead.
MAX_NOISE_MULTIPLIER = 1000.0
#: A remainder below this share of the budget (or the calibration tolerance) counts as spent.
MIN_REMAINING = 0.01
#: Rounds assumed when the server's instruction does not say (older coordinators).
FALLBACK_ROUNDS = 20


class PrivacyConfigError(SiteConfigError):
    """A privacy setting is unusable; the message names the key and the fix."""


class BudgetExhausted(RuntimeError):
    """The planned steps do not fit in what is left of the budget."""


@dataclass(frozen=True)
class PrivacySettings:
    """The site's resolved DP settings (see the module docstring)."""

    dp: bool = True
    epsilon: float = DEFAULT_EPSILON
    delta: float = DEFAULT_DELTA
    max_grad_norm: float = DEFAULT_MAX_GRAD_NORM
    accountant: str = "rdp"
    ledger_dir: Path | None = None

    def ledger_folder(self, site: SiteSettings) -> Path:
        return self.ledger_dir if self.ledger_dir is not None else site.state_dir


def _parse_dp(value: object, where: str) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("on", "true", "yes", "1"):
        return True
    if text in ("off", "false", "no", "0"):
        return False
    raise PrivacyConfigError(f'{where}: dp must be "on" or "off", not {value!r}')


def _positive(value: object, key: str, where: str, upper: float = math.inf) -> float:
    try:
        v = float(str(value))
    except ValueError:
        v = math.nan
    if not (0 < v < upper):
        bound = f" and below {upper}" if math.isfinite(upper) else ""
        raise PrivacyConfigError(f"{where}: {key} must be a positive number{bound}, not {value!r}")
    return v


def load_privacy_table(site_dir: Path) -> dict[str, object]:
    """The ``[privacy]`` table of ``site_dir/site.toml`` (empty when absent)."""
    path = Path(site_dir) / SITE_FILE
    if not path.is_file():
        return {}
    try:
        return tomllib.loads(site_table_text(path.read_text(encoding="utf-8"), "privacy"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise PrivacyConfigError(
            f"{SITE_FILE}: the [privacy] table cannot be read ({exc})"
        ) from None


def _apply(values: dict[str, object], table: Mapping[str, object], where: str, names: dict) -> None:
    for key, field in names.items():
        if key in table and table[key] not in ("", None):
            values[field] = (table[key], where, key)


def resolve_privacy(
    site: SiteSettings, node_config: Mapping[str, object], run_config: Mapping[str, object]
) -> PrivacySettings:
    """The site's DP settings from its own configuration (module docstring)."""
    simulated = "partition-id" in node_config and "data-dir" not in node_config
    raw: dict[str, tuple[object, str, str]] = {}
    if simulated:
        if run_config.get("sim-default-dp"):
            raw["dp"] = (run_config["sim-default-dp"], "run config", "sim-default-dp")
        if float(str(run_config.get("sim-default-epsilon") or 0)) > 0:
            raw["epsilon"] = (
                run_config["sim-default-epsilon"],
                "run config",
                "sim-default-epsilon",
            )
    toml_names = {
        "dp": "dp",
        "epsilon-budget": "epsilon",
        "epsilon": "epsilon",
        "delta": "delta",
        "max-grad-norm": "max_grad_norm",
        "accountant": "accountant",
    }
    _apply(raw, load_privacy_table(site.data_dir), f"{SITE_FILE} [privacy]", toml_names)
    node_names = {
        "dp": "dp",
        "epsilon-budget": "epsilon",
        "delta": "delta",
        "max-grad-norm": "max_grad_norm",
        "dp-accountant": "accountant",
    }
    _apply(raw, node_config, "node-config", node_names)
    kwargs: dict[str, object] = {}
    for field, (value, where, key) in raw.items():
        if field == "dp":
            kwargs["dp"] = _parse_dp(value, where)
        elif field == "delta":
            kwargs["delta"] = _positive(value, key, where, upper=1.0)
        elif field == "accountant":
            if str(value) not in ACCOUNTANTS:
                raise PrivacyConfigError(f"{where}: {key} must be one of {ACCOUNTANTS}")
            kwargs["accountant"] = str(value)
        else:
            kwargs[field] = _positive(value, key, where)
    if "ledger-dir" in node_config:
        kwargs["ledger_dir"] = Path(str(node_config["ledger-dir"])).expanduser()
    elif simulated:
        root = run_config.get("sim-ledger-root")
        kwargs["ledger_dir"] = Path(str(root)) / site.data_dir.name if root else site.cache_dir
    return PrivacySettings(**kwargs)  # type: ignore[arg-type]


# --- accounting ------------------------------------------------------------------------
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


# --- one DP round at the site ----------------------------------------------------------
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
    """Charge the ledger and train one round with DP-SGD, or refuse."""
    from fedmi.client.privacy.dp_sgd import poisson_plan, train_private

    try:
        ledger = PrivacyLedger.open(settings.ledger_folder(site), site_id=site.site_id)
    except LedgerError as exc:
        log.error("privacy ledger problem, refusing to train: %s", exc)
        return PrivateRound("ledger-error", None, {})
    ledger.set_budget(settings.epsilon, settings.delta)
    history = ledger.history()
    spent = epsilon_of(history, settings.delta, settings.accountant)
    q, per_epoch = poisson_plan(int(y.shape[0]), train.batch_for(int(y.shape[0])))
    steps = per_epoch * train.epochs
    plan = ledger.run_plan(run_id)
    wanted = {
        "sample_rate": q,
        "steps_per_round": steps,
        "max_grad_norm": settings.max_grad_norm,
        "delta": settings.delta,
        "epsilon_budget": settings.epsilon,
        "accountant": settings.accountant,
    }
    if plan is None or any(plan.get(k) != v for k, v in wanted.items()):
        rounds_left = max(1, planned_rounds - server_round + 1)
        try:
            sigma = calibrate_noise(
                epsilon=settings.epsilon,
                delta=settings.delta,
                sample_rate=q,
                steps=steps * rounds_left,
                prior=history,
                accountant=settings.accountant,
            )
        except BudgetExhausted as exc:
            log.warning("privacy budget exhausted, refusing to train: %s", exc)
            return PrivateRound("budget-exhausted", None, privacy_metrics(settings, spent))
        ledger.set_run_plan(
            run_id, {**wanted, "noise_multiplier": sigma, "planned_steps": steps * rounds_left}
        )
        log.info(
            "DP-SGD planned: σ %.3f, q %.4f, %d steps over %d round(s) for ε ≤ %g at δ %g "
            "(ε %.3f already spent)",
            sigma,
            q,
            steps * rounds_left,
            rounds_left,
            settings.epsilon,
            settings.delta,
            spent,
        )
    else:
        sigma = float(plan["noise_multiplier"])
    after = epsilon_of([*history, (sigma, q, steps)], settings.delta, settings.accountant)
    if after > settings.epsilon * (1 + 1e-9):
        log.warning(
            "round %d would spend ε to %.3f, over the budget %g: refusing to train",
            server_round,
            after,
            settings.epsilon,
        )
        return PrivateRound("budget-exhausted", None, privacy_metrics(settings, spent))
    ledger.charge(
        run_id=run_id,
        server_round=server_round,
        noise_multiplier=sigma,
        sample_rate=q,
        steps=steps,
        max_grad_norm=settings.max_grad_norm,
        delta=settings.delta,
        epsilon=after,
    )
    result = train_private(
        model,
        x,
        y,
        train,
        noise_multiplier=sigma,
        max_grad_norm=settings.max_grad_norm,
        global_params=global_params,
    )
    if result.steps != steps:  # pragma: no cover - poisson_plan mirrors Opacus
        raise RuntimeError(f"charged {steps} DP steps but took {result.steps}")
    log.info("round %d: DP-SGD ε %.3f of %g spent", server_round, after, settings.epsilon)
    return PrivateRound(
        "ok",
        result,
        privacy_metrics(settings, after, noise_multiplier=sigma, sample_rate=q, steps=steps),
    )
