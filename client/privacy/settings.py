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
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from fedmi.client.site.config import SITE_FILE, SiteConfigError, site_table_text
from fedmi.client.site.settings import SiteSettings

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib  # type: ignore[no-redef]

log = logging.getLogger(__name__)

DEFAULT_EPSILON = 8.0
DEFAULT_DELTA = 1e-5
DEFAULT_MAX_GRAD_NORM = 1.0
ACCOUNTANTS = ("rdp", "prv")


class PrivacyConfigError(SiteConfigError):
    """A privacy setting is unusable; the message names the key and the fix."""


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
