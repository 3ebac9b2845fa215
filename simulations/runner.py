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

import json
import logging
import os
import time
import warnings
from pathlib import Path

import torch

from fedmi.client.data import SiteData
from fedmi.client.evaluation.statistics import data_inventory, evaluate_site
from fedmi.client.runtime import site_data
from fedmi.client.site.settings import SiteSettings, list_site_dirs, resolve_site
from fedmi.client.training.loop import TrainSettings, train_local
from fedmi.server.history import RunHistory, SiteInfo
from fedmi.server.report.document import (
    build_report,
    model_card,
    save_arrays,
    summary_table,
    write_json,
    write_report,
)
from fedmi.shared.contract import INVENTORY_FIELDS
from fedmi.shared.methods import FEDERATED_METHODS, METHODS
from fedmi.shared.model import ModelSpec, build_model, federated_state_dict
from fedmi.shared.run_config import RunConfig
from fedmi.simulations.processes import run_isolated

log = logging.getLogger(__name__)


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
        "sim-cache-root": str((data_root / ".fedmi-cache").resolve()),
    }


def site_settings(
    data_root: Path, out_dir: Path, site_keys: dict[str, object] | None = None
) -> list[SiteSettings]:
    """Every site as the ClientApp would resolve it (``site_keys``: ``sim-*`` stand-ins)."""
    paths = {**sim_paths(data_root, out_dir), **(site_keys or {})}
    n = len(list_site_dirs(data_root))
    return [resolve_site({"partition-id": i, "num-partitions": n}, paths) for i in range(n)]


def ingest_all(sites: list[SiteSettings], task: str) -> None:
    """Ingest every site up front (cached), so rounds are not held up by first-use ingest."""
    from fedmi.client.ingest.pipeline import ingest_site

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
    from fedmi.server.app import array_shapes, model_arrays
    from fedmi.server.federation.resume import load_resume_point

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
    if isolate:
        run_isolated(_simulate, payload)
    else:
        _simulate(payload)
    report_path = out_dir / "report.json"
    if not report_path.exists():
        raise RuntimeError("the federated run ended without a report: see the log above")
    return json.loads(report_path.read_text())


def _simulate(payload: dict) -> None:
    """Run one Flower simulation (in the child process when isolated)."""
    from flwr.simulation import run_simulation

    from fedmi.client.app import build_client_app
    from fedmi.server.app import build_server_app

    quiet_environment()
    logging.getLogger("fedmi").setLevel(payload["log_level"])
    logging.getLogger("flwr").setLevel(logging.WARNING)
    if not logging.getLogger().handlers:
        logging.basicConfig(
            format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S"
        )
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    try:
        run_simulation(
            server_app=build_server_app(payload["overrides"]),
            client_app=build_client_app(payload["client_defaults"]),
            num_supernodes=payload["num_supernodes"],
            backend_config=payload["backend_config"],
        )
    finally:
        _stop_ray()


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
            min_cell_count=s.min_cell_count,
            data_counts=_released_counts(s),
        )
    return history


def _released_counts(site: SiteSettings) -> dict[str, dict[str, int]] | None:
    """What the site's query reply would release about its scans per tracer and scanner."""
    record, _ = data_inventory(site.cache_dir, site.min_cell_count)
    if not record:
        return None
    return {
        f: dict(zip(record[f"{f}-names"], record[f"{f}-counts"], strict=True))
        for f in INVENTORY_FIELDS
    }


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
        if len(y):  # the same statistics, and suppression, as the ClientApp's reply
            history.record_final(i, evaluate_site(model, x, y, s.min_cell_count)[0])


def run_baseline(cfg: RunConfig, method: str, sites: list[SiteSettings], out_dir: Path) -> dict:
    """``pooled`` or ``local`` training without Flower, evaluated like the federated model."""
    t0 = time.perf_counter()
    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
    datas = [site_data(s, cfg.task, cfg.seed) for s in sites]
    history = _history_for(sites, datas)
    epochs = cfg.num_server_rounds * cfg.effective_local_epochs
    settings = TrainSettings(
        epochs=epochs,
        batch_size=cfg.effective_batch_size,
        learning_rate=cfg.effective_learning_rate,
        optimizer=cfg.effective_optimizer,
        augment=cfg.effective_augment,
        seed=cfg.seed * 100_003 + 1,
    )
    train_idx = [i for i, s in enumerate(sites) if s.role == "train"]
    spec = ModelSpec(arch=cfg.model)
    note = ""
    if method == "pooled":
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
        note = f"holdout sites evaluated with the model of the largest training site ({sites[largest].site_id})"
    timing = {
        "training_seconds": time.perf_counter() - t0,
        "total_seconds": time.perf_counter() - t0,
    }
    report = build_report(cfg, history, timing)
    report["method"] = method
    if note:
        report["final"]["note"] = note  # type: ignore[index]
    card = model_card(cfg, history, spec, model)
    card["training"]["method"] = method  # type: ignore[index]
    write_json(out_dir / "model_card.json", card)
    write_report(out_dir, report)
    return report


def _arrays(model: torch.nn.Module):
    from fedmi.shared.contract import array_record

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
    isolate: bool = True,
) -> dict:
    """Run one method on a federation folder (generating the default preset if none is given)."""
    quiet_environment()
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}")
    # a bad setting fails before minutes of generation and ingest
    values: dict[str, object] = {
        "task": task,
        "num-server-rounds": rounds,
        "method": method if method in FEDERATED_METHODS else "fedavg",
        "seed": seed,
        "local-epochs": local_epochs,
        **(extra or {}),
    }
    cfg = RunConfig.from_mapping(values)
    out_dir = out_dir.resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    if data_root is None:
        from fedmi.simulations.generator import generate_federation

        data_root = out_dir / "data"
        if not list_site_dirs(data_root) if data_root.exists() else True:
            log.info("no --data given: generating the default %s federation", task)
            generate_federation(data_root, task=task, preset="default", seed=seed)
    data_root = data_root.resolve()
    sites = site_settings(data_root, out_dir)
    if not sites:
        raise FileNotFoundError(f"no site folders (with site.toml) under {data_root}")
    site_keys = {k: v for k, v in (extra or {}).items() if k.startswith("sim-")}
    if site_keys:  # simulated sites' own settings (roles for LOSO folds, min cell count)
        sites = site_settings(data_root, out_dir, site_keys)
    ingest_all(sites, task)
    t0 = time.perf_counter()
    if method in FEDERATED_METHODS:
        report = run_federated(
            cfg, sites, data_root, out_dir, serial=serial, site_keys=site_keys, isolate=isolate
        )
    else:
        # cfg holds the federated settings (its method is fedavg); the baseline is named apart
        report = run_baseline(cfg, method, sites, out_dir)
    report["timing"]["wall_seconds"] = time.perf_counter() - t0
    report["method"] = method
    write_report(out_dir, report)
    print(summary_table(report), flush=True)
    return report


def run_loso(
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
    """Leave-one-site-out validation over the training sites, beside the main run.

    The main run (all training sites) goes to ``out_dir``; then, for each training site,
    a fold trains the same method without it and evaluates it on all its scans, acting as
    a holdout through the simulation-only ``sim-role-overrides`` (its site.toml is not
    touched). Fold runs go to ``out_dir/loso/<site>/``; the main report gains a ``loso``
    section with per-fold results and a summary (mean, range and a DerSimonian–Laird
    pooling of the left-out AUCs).
    """
    from fedmi.server.report.validation import meta_analysis, site_auc

    extra = dict(extra or {})
    common = dict(
        task=task, rounds=rounds, method=method, seed=seed, local_epochs=local_epochs, serial=serial
    )
    report = run(data_root=data_root, out_dir=out_dir, extra=extra, **common)  # type: ignore[arg-type]
    data_root = (data_root or out_dir / "data").resolve()
    train_sites = sorted(s["site_id"] for s in report["sites"] if s["role"] == "train")
    if len(train_sites) < 2:
        raise ValueError("leave-one-site-out needs at least two training sites")
    base = str(extra.get("sim-role-overrides") or "")
    folds = []
    for i, site in enumerate(train_sites, 1):
        log.info("leave-one-site-out fold %d/%d: %s left out", i, len(train_sites), site)
        fold_dir = out_dir.resolve() / "loso" / site
        roles = ",".join(x for x in (base, f"{site}=holdout") if x)
        fold = run(
            data_root=data_root,
            out_dir=fold_dir,
            extra={**extra, "sim-role-overrides": roles},
            **common,  # type: ignore[arg-type]
        )
        row = next((r for r in fold["final"]["per_site"] if r["site_id"] == site), None)
        gap = next((m for m in fold["final"]["missing"] if m["site_id"] == site), None)
        status = "missing" if row is None else str(row.get("status", "ok"))
        folds.append(
            {
                "left_out": site,
                "status": status,
                "reason": gap["reason"] if gap else None,
                "trained_on": sorted(s["site_id"] for s in fold["sites"] if s["role"] == "train"),
                "result": row,
                "report": str(Path("loso") / site / "report.json"),
            }
        )
    rows = [f["result"] | {"site_id": f["left_out"]} for f in folds if f["status"] == "ok"]
    aucs = [a for a in (site_auc(r) for r in rows) if a is not None]
    report["validation_scheme"] = "loso"
    report["loso"] = {
        "folds": folds,
        "summary": {
            "folds": len(folds),
            "folds_with_auc": len(aucs),
            "mean_auc": sum(aucs) / len(aucs) if aucs else None,
            "min_auc": min(aucs) if aucs else None,
            "max_auc": max(aucs) if aucs else None,
            "meta_analysis": meta_analysis(rows),
        },
    }
    write_report(out_dir.resolve(), report)
    return report
