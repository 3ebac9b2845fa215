"""The one-machine runner: a whole federation of generated hospitals on this computer.

Federated methods (``fedavg``, ``fedprox``, ``fedadam``) run the real ServerApp and
ClientApp under Flower's simulation engine (Ray, loopback only, telemetry off, no
dependency installation). The baselines every federated number stands beside run the
same data, splits, seeds, model and training function without Flower:

* ``pooled`` trains one model on the union of all training sites' train splits;
* ``local`` trains one model per training site on its own train split.

Both are trained for ``rounds × local-epochs`` epochs and evaluated at every site exactly
like the federated model, so ``report.json`` has the same shape for every method.
"""

from __future__ import annotations

import logging
import os
import time
import warnings
from pathlib import Path

import torch

from client.data import SiteData
from client.runtime import site_data
from client.site import SiteSettings, list_site_dirs, resolve_site
from client.training import TrainSettings, evaluate_local, train_local
from server.config import RunConfig
from server.history import RunHistory, SiteInfo
from server.outputs import (
    build_report,
    model_card,
    save_arrays,
    summary_table,
    write_json,
    write_report,
)
from shared.model import ModelSpec, build_model, federated_state_dict

log = logging.getLogger(__name__)

FEDERATED_METHODS = ("fedavg", "fedprox", "fedadam")
BASELINES = ("pooled", "local")
METHODS = (*FEDERATED_METHODS, *BASELINES)


def quiet_environment() -> None:
    """No telemetry, no update checks, no dependency installation, loopback only."""
    os.environ["FLWR_TELEMETRY_ENABLED"] = "0"
    os.environ["FLWR_DISABLE_UPDATE_CHECK"] = "1"
    os.environ.setdefault("RAY_DISABLE_USAGE_STATS", "1")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")


def sim_paths(data_root: Path, out_dir: Path) -> dict[str, str]:
    """Run-config keys that map simulation partitions to site folders (see client.site)."""
    return {
        "sim-data-root": str(data_root.resolve()),
        "sim-state-root": str((out_dir / "site-state").resolve()),
        "sim-cache-root": str((data_root / ".fedmi-cache").resolve()),
    }


def site_settings(data_root: Path, out_dir: Path) -> list[SiteSettings]:
    paths = sim_paths(data_root, out_dir)
    n = len(list_site_dirs(data_root))
    return [resolve_site({"partition-id": i, "num-partitions": n}, paths) for i in range(n)]


def ingest_all(sites: list[SiteSettings], task: str) -> None:
    """Ingest every site up front (cached), so rounds are not held up by first-use ingest."""
    from client.ingest.pipeline import ingest_site

    for i, site in enumerate(sites, 1):
        t = time.perf_counter()
        ingest_site(site.data_dir, task, site.cache_dir, workers=min(2, os.cpu_count() or 1))
        log.info("ingested site %d/%d in %.1f s", i, len(sites), time.perf_counter() - t)


def run_federated(
    cfg: RunConfig,
    sites: list[SiteSettings],
    data_root: Path,
    out_dir: Path,
    *,
    serial: bool = False,
) -> dict:
    """Run the ServerApp and ClientApps under Flower's simulation engine.

    ClientApps run in parallel, one core each, unless ``serial`` (one at a time; used to
    measure Flower's overhead against the clients' summed compute time).
    """
    slots = max(1, min(len(sites), os.cpu_count() or 1))
    import json

    from flwr.simulation import run_simulation

    from client.app import build_client_app
    from server.app import build_server_app

    overrides = {**cfg.as_dict(), "out-dir": str(out_dir.resolve()), "min-nodes": len(sites)}
    server_app = build_server_app(overrides)
    client_app = build_client_app({**sim_paths(data_root, out_dir), "client-threads": 1})
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    try:
        run_simulation(
            server_app=server_app,
            client_app=client_app,
            num_supernodes=len(sites),
            backend_config={
                # --serial: each ClientApp asks for every core, so they run one at a time
                "client_resources": {"num_cpus": slots if serial else 1, "num_gpus": 0.0},
                "init_args": {"include_dashboard": False, "num_cpus": slots},
            },
        )
    finally:
        _stop_ray()
    report_path = out_dir / "report.json"
    if not report_path.exists():
        raise RuntimeError("the federated run ended without a report: see the log above")
    return json.loads(report_path.read_text())


def _stop_ray() -> None:
    try:
        import ray

        if ray.is_initialized():
            ray.shutdown()
    except Exception:  # pragma: no cover - best effort at exit
        pass


def _history_for(sites: list[SiteSettings], datas: list[SiteData]) -> RunHistory:
    history = RunHistory()
    for i, (s, d) in enumerate(zip(sites, datas, strict=True)):
        n_test = int(d.is_test.sum())
        history.sites[i] = SiteInfo(
            node_id=i,
            site_id=s.site_id,
            role=s.role,
            status="ok",
            num_examples=len(d),
            num_train=len(d) - n_test,
            num_test=n_test,
            num_positive=int(d.y.sum()),
        )
    return history


def _evaluate_everywhere(
    model: torch.nn.Module,
    sites: list[SiteSettings],
    datas: list[SiteData],
    history: RunHistory,
    only: int | None = None,
) -> None:
    for i, (s, d) in enumerate(zip(sites, datas, strict=True)):
        if only is not None and i != only:
            continue
        x, y = d.subset("test" if s.role == "train" else "all")
        if len(y):
            history.record_final(i, evaluate_local(model, x, y))


def run_baseline(cfg: RunConfig, sites: list[SiteSettings], out_dir: Path) -> dict:
    """``pooled`` or ``local`` training without Flower, evaluated like the federated model."""
    t0 = time.perf_counter()
    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
    datas = [site_data(s, cfg.task, cfg.seed) for s in sites]
    history = _history_for(sites, datas)
    epochs = cfg.num_server_rounds * cfg.local_epochs
    settings = TrainSettings(
        epochs=epochs,
        batch_size=cfg.batch_size,
        learning_rate=cfg.learning_rate,
        seed=cfg.seed * 100_003 + 1,
    )
    train_idx = [i for i, s in enumerate(sites) if s.role == "train"]
    spec = ModelSpec()
    if cfg.method == "pooled":
        torch.manual_seed(cfg.seed)
        model = build_model(spec)
        xs = [datas[i].subset("train") for i in train_idx]
        x = torch.cat([a for a, _ in xs])
        y = torch.cat([b for _, b in xs])
        res = train_local(model, x, y, settings)
        history._round(epochs)["train"]["pooled"] = {
            "status": "ok",
            "num-examples": res.num_examples,
            "train-loss": res.loss,
        }
        _evaluate_everywhere(model, sites, datas, history)
        save_arrays(out_dir / "final_model.npz", _arrays(model))
    else:  # local: each training site alone; holdout sites get the model of the largest site
        largest = max(train_idx, key=lambda i: int((~datas[i].is_test).sum()))
        for i in train_idx:
            torch.manual_seed(cfg.seed)
            model = build_model(spec)
            x, y = datas[i].subset("train")
            res = train_local(model, x, y, settings)
            history._round(epochs)["train"][sites[i].site_id] = {
                "status": "ok",
                "num-examples": res.num_examples,
                "train-loss": res.loss,
            }
            _evaluate_everywhere(model, sites, datas, history, only=i)
            if i == largest:
                for j, s in enumerate(sites):
                    if s.role == "holdout":
                        _evaluate_everywhere(model, sites, datas, history, only=j)
                save_arrays(out_dir / "final_model.npz", _arrays(model))
        history.final_note = f"holdout sites evaluated with the model of the largest training site ({sites[largest].site_id})"  # type: ignore[attr-defined]
    timing = {
        "training_seconds": time.perf_counter() - t0,
        "total_seconds": time.perf_counter() - t0,
    }
    report = build_report(cfg, history, timing)
    write_json(out_dir / "model_card.json", model_card(cfg, history, spec))
    write_report(out_dir, report)
    return report


def _arrays(model: torch.nn.Module):
    from shared.contract import array_record

    return array_record(federated_state_dict(model))


def run(
    *,
    data_root: Path | None,
    task: str,
    out_dir: Path,
    rounds: int = RunConfig.num_server_rounds,
    method: str = "fedavg",
    seed: int = 0,
    local_epochs: int = RunConfig.local_epochs,
    extra: dict[str, object] | None = None,
    serial: bool = False,
) -> dict:
    """Run one method on a federation folder (generating the default preset if none is given)."""
    quiet_environment()
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}")
    out_dir = out_dir.resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    if data_root is None:
        from simulations.generator import generate_federation

        data_root = out_dir / "data"
        if not list_site_dirs(data_root) if data_root.exists() else True:
            log.info("no --data given: generating the default %s federation", task)
            generate_federation(data_root, task=task, preset="default", seed=seed)
    data_root = data_root.resolve()
    sites = site_settings(data_root, out_dir)
    if not sites:
        raise FileNotFoundError(f"no site folders (with site.toml) under {data_root}")
    ingest_all(sites, task)
    values: dict[str, object] = {
        "task": task,
        "num-server-rounds": rounds,
        "method": method if method in FEDERATED_METHODS else "fedavg",
        "seed": seed,
        "local-epochs": local_epochs,
        **(extra or {}),
    }
    cfg = RunConfig.from_mapping(values)
    t0 = time.perf_counter()
    if method in FEDERATED_METHODS:
        report = run_federated(cfg, sites, data_root, out_dir, serial=serial)
    else:
        cfg = RunConfig(**{**cfg.__dict__, "method": "fedavg"})
        report = run_baseline(_as_method(cfg, method), sites, out_dir)
    report["timing"]["wall_seconds"] = time.perf_counter() - t0
    report["method"] = method
    write_report(out_dir, report)
    print(summary_table(report), flush=True)
    return report


def _as_method(cfg: RunConfig, method: str) -> RunConfig:
    # RunConfig validates federated methods only; baselines carry their name through here.
    object.__setattr__(cfg, "method", method)
    return cfg
