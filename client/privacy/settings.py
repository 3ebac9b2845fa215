"""Sample-level differential privacy at a site: its settings, accounting and each DP round.

DP-SGD is **on by default**: a site that wants none must say so (``dp = "off"``). The
budget is the site's own, never the coordinator's. The settings are the keys of site.toml's ``[privacy]`` table, and the SuperNode's
``--node-config`` takes the same keys under the same names (docs/configuration.md):
``dp`` (``"on"`` | ``"off"``), ``epsilon``, ``delta``, ``max-grad-norm`` and ``accountant``
(``rdp`` or ``prv``); node-config adds ``ledger-dir``.

Precedence: node-config, then site.toml ``[privacy]``, then (simulation only) the runner's
``sim-default-epsilon`` / ``sim-default-dp`` / ``sim-default-pretrain-share`` run-config
keys, then the defaults (on, ε = 8, δ = 1e-5, clipping norm 1.0, RDP, pretraining share 0.3). site.toml is validated whole
(:func:`fedmi.client.site.config.read_site_toml`; ``[truth]`` is cut away as text and never
enters the process).

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
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fedmi.client.site.config import (
    ACCOUNTANTS,
    DEFAULT_DELTA,
    DEFAULT_EPSILON,
    DEFAULT_MAX_GRAD_NORM,
    PRIVACY_SETTINGS,
    SiteConfigError,
    read_site_toml,
)
from fedmi.client.site.settings import SiteSettings, node_settings, run_settings

__all__ = [
    "ACCOUNTANTS",
    "DEFAULT_DELTA",
    "DEFAULT_EPSILON",
    "DEFAULT_MAX_GRAD_NORM",
    "PrivacyConfigError",
    "PrivacySettings",
    "load_privacy_table",
    "resolve_privacy",
]

log = logging.getLogger(__name__)

#: the DP keys, named alike in site.toml [privacy] and node-config
PRIVACY_KEYS = tuple(s.key for s in PRIVACY_SETTINGS)


class PrivacyConfigError(SiteConfigError):
    """A privacy setting is unusable; the message names the key and the fix."""


#: run-config keys that stand in (simulation only) for [privacy] keys a site.toml leaves out
SIM_PRIVACY_DEFAULTS = ("sim-default-dp", "sim-default-epsilon", "sim-default-pretrain-share")

#: the declared default of every [privacy] key (client/site/config.py): the one place
_DEFAULTS: dict[str, Any] = {s.key: s.default for s in PRIVACY_SETTINGS}


@dataclass(frozen=True)
class PrivacySettings:
    """The site's resolved DP settings (see the module docstring; defaults: the schema's)."""

    dp: bool = _DEFAULTS["dp"]
    epsilon: float = _DEFAULTS["epsilon"]
    delta: float = _DEFAULTS["delta"]
    max_grad_norm: float = _DEFAULTS["max-grad-norm"]
    accountant: str = _DEFAULTS["accountant"]
    release_share: float = _DEFAULTS["release-share"]
    pretrain_share: float = _DEFAULTS["pretrain-share"]
    max_queries_per_run: int = _DEFAULTS["max-queries-per-run"]
    max_evaluations_per_run: int = _DEFAULTS["max-evaluations-per-run"]
    max_validations_per_run: int = _DEFAULTS["max-validations-per-run"]
    max_releases_per_day: int = _DEFAULTS["max-releases-per-day"]
    ledger_dir: Path | None = None

    def ledger_folder(self, site: SiteSettings) -> Path:
        return self.ledger_dir if self.ledger_dir is not None else site.state_dir


def load_privacy_table(site_dir: Path) -> dict[str, Any]:
    """The ``[privacy]`` settings of ``site_dir/site.toml``, typed (empty when absent).

    The whole file is validated; a problem raises :class:`SiteConfigError` naming the file
    and the key.
    """
    return read_site_toml(site_dir)["privacy"]


def resolve_privacy(
    site: SiteSettings, node_config: Mapping[str, object], run_config: Mapping[str, object]
) -> PrivacySettings:
    """The site's DP settings from its own configuration (module docstring).

    Raises
    ------
    PrivacyConfigError
        An unknown node-config key or a bad value in node-config or the run config.
    SiteConfigError
        site.toml is unusable (the message names the file and the key).
    """
    node = node_settings(node_config, error=PrivacyConfigError)
    simulated = "partition-id" in node and "data-dir" not in node
    values: dict[str, Any] = {}
    sim: dict[str, Any] = {}
    if simulated:
        sim = run_settings(
            run_config,
            SIM_PRIVACY_DEFAULTS + ("sim-ledger-root",),
            error=PrivacyConfigError,
        )
        if sim.get("sim-default-dp"):
            values["dp"] = sim["sim-default-dp"] == "on"
        for key in ("epsilon", "pretrain-share"):
            if sim.get(f"sim-default-{key}"):
                values[key] = sim[f"sim-default-{key}"]
    values.update(load_privacy_table(site.data_dir))  # the site's own file
    values.update({k: node[k] for k in PRIVACY_KEYS if k in node})  # its SuperNode's
    kwargs: dict[str, Any] = {k.replace("-", "_"): v for k, v in values.items()}
    if "ledger-dir" in node:
        kwargs["ledger_dir"] = Path(node["ledger-dir"]).expanduser()
    elif simulated:
        root = sim.get("sim-ledger-root")
        kwargs["ledger_dir"] = Path(root) / site.data_dir.name if root else site.cache_dir
    return PrivacySettings(**kwargs)
