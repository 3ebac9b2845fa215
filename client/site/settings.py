"""Who this site is and where its files are: the one place simulation and deployment differ.

Deployment: the SuperNode's ``--node-config`` (:data:`NODE_CONFIG`) names ``data-dir`` (the
site folder with ``dicom/``, ``labels.csv`` and ``site.toml``) and ``state-dir`` (ingest
cache, local harmonization state, privacy ledger), optionally ``cache-dir`` (default
``state-dir/ingest``) and ``ledger-dir``, and any key of site.toml's ``[site]`` (except
``task``) and ``[privacy]`` under the same name, which then wins over site.toml. An unknown
key stops the site with the key and the close match.

Simulation: Flower gives only ``partition-id`` (and ``num-partitions``); the run config's
``sim-data-root`` and ``sim-state-root`` (absolute paths set by the one-machine runner) map
partition *i* to the *i*-th site folder of the generated federation, in sorted order. Two
simulation-only run-config keys stand in for site-side settings: ``sim-role-overrides``
(leave-one-site-out folds make a training site a holdout without editing its site.toml)
and ``sim-min-cell-count``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fedmi.client.site.config import (
    PRIVACY_SETTINGS,
    SITE_SETTINGS,
    SiteConfigError,
    load_site_config,
)
from fedmi.shared.config_schema import ConfigError, Schema, Setting
from fedmi.shared.contract import DEFAULT_MIN_CELL_COUNT, ROLES
from fedmi.shared.run_config import RUN_CONFIG

__all__ = ["NODE_CONFIG", "SiteConfigError", "SiteSettings", "list_site_dirs", "resolve_site"]

_DEPLOY = "deployment only"
_FLOWER = "set by Flower's simulation engine"

#: The SuperNode's ``--node-config``: site.toml's keys (flat, same names; ``task`` is the
#: run's) plus the folders of a deployment and the keys Flower sets in simulation.
NODE_CONFIG = Schema(
    "node-config",
    {
        "": (
            *(s for s in SITE_SETTINGS if s.key != "task"),
            *PRIVACY_SETTINGS,
            Setting(
                "data-dir",
                str,
                None,
                "the site folder (dicom/, labels.csv, site.toml), an absolute path",
                default_doc="required",
                group=_DEPLOY,
            ),
            Setting(
                "state-dir",
                str,
                None,
                "ingest cache, harmonization state, privacy ledger, logs (absolute path)",
                default_doc="required with data-dir",
                group=_DEPLOY,
            ),
            Setting(
                "cache-dir",
                str,
                None,
                "the ingest cache",
                default_doc="state-dir/ingest",
                group=_DEPLOY,
            ),
            Setting(
                "ledger-dir",
                str,
                None,
                "the privacy ledger's folder",
                default_doc="state-dir",
                group=_DEPLOY,
            ),
            Setting(
                "partition-id",
                int,
                None,
                "this simulated site: the partition-id-th site folder under sim-data-root",
                minimum=0,
                group=_FLOWER,
            ),
            Setting(
                "num-partitions",
                int,
                None,
                "the number of simulated sites",
                minimum=1,
                group=_FLOWER,
            ),
        )
    },
    error=SiteConfigError,
)

#: run-config keys a simulated site reads (the runner's stand-ins for its own settings)
SIM_SITE_KEYS = ("sim-data-root", "sim-state-root", "sim-cache-root", "sim-role-overrides")


def node_settings(
    node_config: Mapping[str, object], error: type[ConfigError] = SiteConfigError
) -> dict[str, Any]:
    """``node_config`` validated against :data:`NODE_CONFIG` and typed (the keys given)."""
    return NODE_CONFIG.validate(node_config, "node-config", error=error)


def run_settings(
    run_config: Mapping[str, object],
    keys: tuple[str, ...],
    error: type[ConfigError] = SiteConfigError,
) -> dict[str, Any]:
    """The run-config ``keys`` a site reads, validated against the run-config schema."""
    given = {k: run_config[k] for k in keys if k in run_config}
    return RUN_CONFIG.validate(given, "run config", error=error)


@dataclass(frozen=True)
class SiteSettings:
    """Resolved identity and folders of a site."""

    site_id: str
    role: str
    data_dir: Path
    state_dir: Path
    cache_dir: Path
    min_cell_count: int = DEFAULT_MIN_CELL_COUNT


def list_site_dirs(root: Path) -> list[Path]:
    """Site folders (those holding a ``site.toml``) directly under ``root``, sorted."""
    return sorted(p for p in root.iterdir() if p.is_dir() and (p / "site.toml").exists())


def resolve_site(
    node_config: Mapping[str, object], run_config: Mapping[str, object]
) -> SiteSettings:
    """Resolve the site from Flower's node config (and, in simulation, the run config).

    Raises
    ------
    SiteConfigError
        An unknown node-config key, a bad value (in node-config, site.toml or the run
        config's ``sim-*`` keys) or a missing folder; the message names the key.
    """
    node = node_settings(node_config)
    if "data-dir" in node:
        data_dir = Path(node["data-dir"]).expanduser()
        if "state-dir" not in node:
            raise SiteConfigError(
                'node-config lacks state-dir: add state-dir="/abs/path" to --node-config'
            )
        state_dir = Path(node["state-dir"]).expanduser()
        sim: dict[str, Any] = {}
    elif "partition-id" in node:
        sim = run_settings(run_config, (*SIM_SITE_KEYS, "sim-min-cell-count"))
        root = sim.get("sim-data-root")
        if not root:
            raise SiteConfigError(
                "simulation run config lacks sim-data-root (set by fedmi-sim run)"
            )
        sites = list_site_dirs(Path(root))
        pid = node["partition-id"]
        if pid >= len(sites):
            raise SiteConfigError(
                f"partition {pid} but only {len(sites)} sites under the data root"
            )
        data_dir = sites[pid]
        state_root = Path(sim.get("sim-state-root") or (Path(root) / ".fedmi-state"))
        state_dir = state_root / data_dir.name
    else:
        raise SiteConfigError("node-config must name data-dir and state-dir")
    if not data_dir.is_dir():
        raise SiteConfigError(
            f"data-dir {data_dir} does not exist: point data-dir at the site folder"
        )
    toml = load_site_config(data_dir)
    site_id = str(node.get("site-id") or toml.site_id)
    role = str(node.get("role") or toml.role)
    k = node.get("min-cell-count", toml.min_cell_count)
    # simulation only (``sim`` is empty in a deployment, which never reads these keys): the
    # runner stands in for each site's own settings (leave-one-site-out folds, tiny tests)
    role = sim_role_overrides(sim).get(site_id, role)
    if sim.get("sim-min-cell-count"):
        k = sim["sim-min-cell-count"]
    if role not in ROLES:
        raise SiteConfigError(f"role {role!r} for site {site_id}: use one of {', '.join(ROLES)}")
    if "cache-dir" in node:
        cache_dir = Path(node["cache-dir"])
    elif sim.get("sim-cache-root"):
        cache_dir = Path(sim["sim-cache-root"]) / data_dir.name
    else:
        cache_dir = state_dir / "ingest"
    return SiteSettings(site_id, role, data_dir, state_dir, cache_dir, k)


def sim_role_overrides(run_config: Mapping[str, object]) -> dict[str, str]:
    """``sim-role-overrides`` (``"site-b=holdout,site-c=train"``) as site-id → role."""
    out: dict[str, str] = {}
    for item in str(run_config.get("sim-role-overrides") or "").split(","):
        if not item.strip():
            continue
        name, _, role = item.partition("=")
        if role.strip() not in ROLES:
            raise SiteConfigError(
                f"sim-role-overrides item {item!r}: write site-id=role with role in {ROLES}"
            )
        out[name.strip()] = role.strip()
    return out
