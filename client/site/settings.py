"""Who this site is and where its files are: the one place simulation and deployment differ.

Deployment: the SuperNode's ``--node-config`` names ``data-dir`` (the site folder with
``dicom/``, ``labels.csv`` and ``site.toml``) and ``state-dir`` (ingest cache, local
harmonization state, privacy ledger), optionally ``site-id`` and ``role`` (else taken
from ``site.toml``), ``cache-dir`` (default ``state-dir/ingest``) and ``min-cell-count``
(the small-cell rule's k; else ``[site] min-cell-count`` of site.toml, else 10).

Simulation: Flower gives only ``partition-id``; the run config's ``sim-data-root`` and
``sim-state-root`` (absolute paths set by the one-machine runner) map partition *i* to
the *i*-th site folder of the generated federation, in sorted order. Two simulation-only
run-config keys stand in for site-side settings: ``sim-role-overrides`` (leave-one-site-out
folds make a training site a holdout without editing its site.toml) and
``sim-min-cell-count``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from fedmi.client.site.config import SiteConfigError, load_site_config, parse_min_cell_count
from fedmi.shared.contract import DEFAULT_MIN_CELL_COUNT, ROLES

__all__ = ["SiteConfigError", "SiteSettings", "list_site_dirs", "resolve_site"]


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
    """Resolve the site from Flower's node config (and, in simulation, the run config)."""
    if "data-dir" in node_config:
        data_dir = Path(str(node_config["data-dir"])).expanduser()
        if "state-dir" not in node_config:
            raise SiteConfigError(
                'node-config lacks state-dir: add state-dir="/abs/path" to --node-config'
            )
        state_dir = Path(str(node_config["state-dir"])).expanduser()
    elif "partition-id" in node_config:
        root = run_config.get("sim-data-root")
        if not root:
            raise SiteConfigError(
                "simulation run config lacks sim-data-root (set by fedmi-sim run)"
            )
        sites = list_site_dirs(Path(str(root)))
        pid = int(node_config["partition-id"])  # type: ignore[arg-type]
        if pid >= len(sites):
            raise SiteConfigError(
                f"partition {pid} but only {len(sites)} sites under the data root"
            )
        data_dir = sites[pid]
        state_root = Path(
            str(run_config.get("sim-state-root") or (Path(str(root)) / ".fedmi-state"))
        )
        state_dir = state_root / data_dir.name
    else:
        raise SiteConfigError("node-config must name data-dir and state-dir")
    if not data_dir.is_dir():
        raise SiteConfigError(
            f"data-dir {data_dir} does not exist: point data-dir at the site folder"
        )
    toml = load_site_config(data_dir)
    site_id = str(node_config.get("site-id") or toml.site_id)
    role = str(node_config.get("role") or toml.role)
    k = toml.min_cell_count
    if "min-cell-count" in node_config:
        k = parse_min_cell_count(node_config["min-cell-count"], "node-config")
    if "partition-id" in node_config:
        # simulation only: the runner stands in for each site's own settings (leave-one-
        # site-out folds, tiny test federations); a deployed site never reads these keys
        role = sim_role_overrides(run_config).get(site_id, role)
        if run_config.get("sim-min-cell-count"):
            k = parse_min_cell_count(run_config["sim-min-cell-count"], "sim-min-cell-count")
    if role not in ROLES:
        raise SiteConfigError(f"role {role!r} for site {site_id}: use one of {', '.join(ROLES)}")
    if "cache-dir" in node_config:
        cache_dir = Path(str(node_config["cache-dir"]))
    elif run_config.get("sim-cache-root") and "partition-id" in node_config:
        cache_dir = Path(str(run_config["sim-cache-root"])) / data_dir.name
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
