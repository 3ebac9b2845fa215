"""Federated methods on one machine: the real ServerApp and ClientApps under Flower's simulation engine.

Ray, loopback only, telemetry off, no dependency installation. The simulation runs in a
child process (:mod:`fedmi.simulations.processes`) so that every process it starts is
stopped when it ends, fails or is interrupted.
"""

from __future__ import annotations

import json
import logging
import os
import warnings
from pathlib import Path

from fedmi.client.site.settings import SiteSettings
from fedmi.shared.logs import configure_logging
from fedmi.shared.run_config import RunConfig
from fedmi.simulations.processes import run_isolated

log = logging.getLogger(__name__)

#: the folder under a federation's root that holds every simulated site's ingest cache
SIM_CACHE_DIR = ".fedmi-cache"


def quiet_environment() -> None:
    """No telemetry, no update checks, no dependency installation, loopback only."""
    os.environ["FLWR_TELEMETRY_ENABLED"] = "0"
    os.environ["FLWR_DISABLE_UPDATE_CHECK"] = "1"
    os.environ.setdefault("RAY_DISABLE_USAGE_STATS", "1")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    # single-machine Ray: every Ray server binds the loopback address, not the host's
    # network interface (Ray's switch for its local-only mode)
    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"


def sim_paths(data_root: Path, out_dir: Path) -> dict[str, str]:
    """Run-config keys that map simulation partitions to site folders (see client.site)."""
    return {
        "sim-data-root": str(data_root.resolve()),
        "sim-state-root": str((out_dir / "site-state").resolve()),
        "sim-cache-root": str((data_root / SIM_CACHE_DIR).resolve()),
    }


def run_federated(
    cfg: RunConfig,
    sites: list[SiteSettings],
    data_root: Path,
    out_dir: Path,
    *,
    serial: bool = False,
    site_keys: dict[str, object] | None = None,
    isolate: bool = True,
) -> dict:
    """Run the ServerApp and ClientApps under Flower's simulation engine.

    With ``isolate`` (the default) the simulation runs in a child process and every
    process it starts (Ray's servers and workers included) is stopped when it ends, fails
    or is interrupted (Ctrl-C). ``isolate=False`` runs it in this process (tests that
    inspect what the server receives).

    ``site_keys`` are simulation-only ``sim-*`` run-config keys given to every ClientApp
    (e.g. ``sim-default-epsilon``, ``sim-ledger-root``; see client/privacy.py).

    ClientApps run in parallel, one core each, unless ``serial`` (one at a time; used to
    measure Flower's overhead against the clients' summed compute time).
    """
    from fedmi.server.federation.resume import load_resume_point
    from fedmi.server.federation.run import array_shapes, model_arrays

    # a run folder that cannot be continued fails here, in one line, before Ray starts
    load_resume_point(out_dir, cfg, array_shapes(model_arrays(cfg)))
    slots = max(1, min(len(sites), os.cpu_count() or 1))
    payload = {
        "overrides": {**cfg.as_dict(), "out-dir": str(out_dir.resolve()), "min-nodes": len(sites)},
        "client_defaults": {
            **sim_paths(data_root, out_dir),
            "client-threads": 1,
            **(site_keys or {}),
        },
        "num_supernodes": len(sites),
        "backend_config": {
            # --serial: each ClientApp asks for every core, so they run one at a time
            "client_resources": {"num_cpus": slots if serial else 1, "num_gpus": 0.0},
            # Ray's own servers listen on loopback only
            "init_args": {
                "include_dashboard": False,
                "num_cpus": slots,
                "_node_ip_address": "127.0.0.1",
            },
        },
        "log_level": logging.getLogger("fedmi").getEffectiveLevel(),
    }
    report_path = out_dir / "report.json"
    try:
        if isolate:
            run_isolated(_simulate, payload)
        else:
            _simulate(payload)
    except Exception:
        # a run that failed but wrote its final report (outcome "failed", see
        # fedmi.server.report.outcome) is returned: the runner raises RunFailed with its reasons
        if _outcome(report_path) != "failed":
            raise
    if not report_path.exists():
        raise RuntimeError("the federated run ended without a report: see the log above")
    return json.loads(report_path.read_text())


def _outcome(report_path: Path) -> str | None:
    """The ``outcome.status`` of a written report, or ``None``."""
    try:
        return json.loads(report_path.read_text()).get("outcome", {}).get("status")
    except (OSError, ValueError):
        return None


def _simulate(payload: dict) -> None:
    """Run one Flower simulation (in the child process when isolated)."""
    from flwr.simulation import run_simulation

    from fedmi.client.app import build_client_app
    from fedmi.server.app import build_server_app
    from fedmi.server.report.outcome import RunFailed

    quiet_environment()
    # after the imports above (Opacus configures the root logger when imported)
    configure_logging()
    logging.getLogger("fedmi").setLevel(payload["log_level"])
    logging.getLogger("flwr").setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    try:
        run_simulation(
            server_app=build_server_app(payload["overrides"]),
            client_app=build_client_app(payload["client_defaults"]),
            num_supernodes=payload["num_supernodes"],
            backend_config=payload["backend_config"],
        )
    except RunFailed:
        pass  # logged, and in the report: the runner raises it again with its reasons
    finally:
        _stop_ray()


def _stop_ray() -> None:
    try:
        import ray

        if ray.is_initialized():
            ray.shutdown()
    except Exception:  # pragma: no cover - best effort at exit
        pass
