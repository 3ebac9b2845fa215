"""The one-machine runner: a whole federation of generated hospitals on this computer.

:func:`run` checks the settings, generates the default federation when none is given,
ingests every site (explicitly, before the run: a site that has not ingested answers
``no-data``), then runs the method: federated methods under Flower's simulation engine
(:mod:`fedmi.simulations.federated`), the ``pooled`` and ``local`` baselines without Flower
(:mod:`fedmi.simulations.baselines`). :func:`run_loso` adds leave-one-site-out folds.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

from fedmi.client.site.settings import SiteSettings, list_site_dirs, resolve_site
from fedmi.server.federation.run import check_outcome
from fedmi.server.report.document import summary_table, write_report
from fedmi.server.report.validation import meta_analysis, site_auc
from fedmi.shared.logs import close_run_log, run_log
from fedmi.shared.methods import get_method
from fedmi.shared.run_config import RunConfig
from fedmi.simulations.baselines import run_baseline
from fedmi.simulations.federated import quiet_environment, run_federated, sim_paths

log = logging.getLogger(__name__)

__all__ = ["ingest_all", "quiet_environment", "run", "run_loso", "site_settings"]


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


def _federation(
    data_root: Path | None,
    out_dir: Path,
    task: str,
    seed: int,
    site_keys: dict[str, object],
) -> tuple[Path, list[SiteSettings]]:
    """The federation's root and its sites, each resolved (site.toml checked) as its ClientApp will.

    A given ``data_root`` is checked before anything is written; without one the default
    preset is generated into ``out_dir/data``. ``site_keys``: the simulated sites' own
    settings (``sim-*``: roles for LOSO folds, min cell count, DP defaults).
    """
    if data_root is not None:
        data_root = data_root.resolve()
        sites = site_settings(data_root, out_dir, site_keys)
        if not sites:
            raise FileNotFoundError(f"no site folders (with site.toml) under {data_root}")
        out_dir.mkdir(parents=True, exist_ok=True)
        return data_root, sites
    from fedmi.simulations.generator import generate_federation

    out_dir.mkdir(parents=True, exist_ok=True)
    data_root = out_dir / "data"
    if not list_site_dirs(data_root) if data_root.exists() else True:
        log.info("no --data given: generating the default %s federation", task)
        generate_federation(data_root, task=task, preset="default", seed=seed)
    return data_root.resolve(), site_settings(data_root.resolve(), out_dir, site_keys)


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
    federated = get_method(method).federated  # ValueError naming the methods
    # a bad setting fails before minutes of generation and ingest
    values: dict[str, object] = {
        "task": task,
        "num-server-rounds": rounds,
        "method": method if federated else "fedavg",
        "seed": seed,
        "local-epochs": local_epochs,
        **(extra or {}),
    }
    cfg = RunConfig.from_mapping(values)
    site_keys = {k: v for k, v in (extra or {}).items() if k.startswith("sim-")}
    out_dir = out_dir.resolve()
    data_root, sites = _federation(data_root, out_dir, cfg.task, cfg.seed, site_keys)
    handler = run_log(out_dir)  # RUN_DIR/fedmi.log, once the inputs are checked
    try:
        return _run(cfg, method, federated, data_root, sites, out_dir, site_keys, serial, isolate)
    finally:
        close_run_log(handler)


def _run(
    cfg: RunConfig,
    method: str,
    federated: bool,
    data_root: Path,
    sites: list[SiteSettings],
    out_dir: Path,
    site_keys: dict[str, object],
    serial: bool,
    isolate: bool,
) -> dict:
    """:func:`run` once its inputs are checked: ingest, train, report (logging to the run folder)."""
    ingest_all(sites, cfg.task)
    t0 = time.perf_counter()
    if federated:
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
    check_outcome(report)  # a run that trained nothing or evaluated no site: RunFailed
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
        roles = ",".join(x for x in (base, f"{site}=holdout") if x)
        fold_dir = out_dir.resolve() / "loso" / site
        fold = run(
            data_root=data_root,
            out_dir=fold_dir,
            # a fold measures the classifier: the normative model is the main run's
            extra={**extra, "sim-role-overrides": roles, "normative-model": "off"},
            **common,  # type: ignore[arg-type]
        )
        folds.append(_fold_entry(site, fold))
    report["validation_scheme"] = "loso"
    report["loso"] = {"folds": folds, "summary": _loso_summary(folds)}
    write_report(out_dir.resolve(), report)
    return report


def _fold_entry(site: str, fold: dict) -> dict[str, object]:
    """One leave-one-site-out fold: how the left-out site fared on the model trained without it."""
    row = next((r for r in fold["final"]["per_site"] if r["site_id"] == site), None)
    gap = next((m for m in fold["final"]["missing"] if m["site_id"] == site), None)
    return {
        "left_out": site,
        "status": "missing" if row is None else str(row.get("status", "ok")),
        "reason": gap["reason"] if gap else None,
        "trained_on": sorted(s["site_id"] for s in fold["sites"] if s["role"] == "train"),
        "result": row,
        "report": str(Path("loso") / site / "report.json"),
    }


def _loso_summary(folds: list[dict]) -> dict[str, object]:
    """Mean, range and a DerSimonian–Laird pooling of the left-out sites' AUCs."""
    rows = [f["result"] | {"site_id": f["left_out"]} for f in folds if f["status"] == "ok"]
    aucs = [a for a in (site_auc(r) for r in rows) if a is not None]
    return {
        "folds": len(folds),
        "folds_with_auc": len(aucs),
        "mean_auc": sum(aucs) / len(aucs) if aucs else None,
        "min_auc": min(aucs) if aucs else None,
        "max_auc": max(aucs) if aucs else None,
        "meta_analysis": meta_analysis(rows),
    }
