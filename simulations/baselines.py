"""The baselines every federated number stands beside, trained without Flower.

* ``pooled`` trains one model on the union of all training sites' train splits;
* ``local`` trains one model per training site on its own train split (holdout sites are
  evaluated with the model of the largest training site).

Both use the same data, splits, seeds, model and training function as the federated
methods, train for ``rounds × local-epochs`` epochs, and are evaluated at every site with
the statistics and small-cell suppression of the ClientApp's reply, so ``report.json`` has
the same shape for every method.
"""

from __future__ import annotations

import dataclasses
import os
import time
from pathlib import Path

import torch

from fedmi.client.data import SiteData, site_data
from fedmi.client.evaluation.statistics import data_inventory, evaluate_site
from fedmi.client.site.settings import SiteSettings
from fedmi.client.training.loop import TrainSettings, train_local
from fedmi.server.history import RunHistory, SiteInfo
from fedmi.server.report.document import (
    build_report,
    model_card,
    save_arrays,
    write_json,
    write_report,
)
from fedmi.shared.contract import INVENTORY_FIELDS, array_record
from fedmi.shared.instructions import TrainInstruction
from fedmi.shared.model import ModelSpec, build_model, federated_state_dict
from fedmi.shared.run_config import RunConfig


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


def baseline_settings(cfg: RunConfig) -> TrainSettings:
    """The federated recipe of ``cfg`` as one training call of ``rounds × local-epochs`` epochs.

    Its seed is round 1's (:func:`fedmi.shared.instructions.round_seed`).
    """
    ins = TrainInstruction.from_run_config(cfg, server_round=1)
    epochs = cfg.num_server_rounds * cfg.effective_local_epochs
    return dataclasses.replace(TrainSettings.from_instruction(ins), epochs=epochs)


def _record_training(history: RunHistory, epochs: int, name: str, res) -> None:
    history._round(epochs)["train"][name] = {
        "status": "ok",
        "num-examples": res.num_examples,
        "train-loss": res.loss,
    }


def _pooled(cfg, sites, datas, history, settings, out_dir) -> torch.nn.Module:
    """One model on all training sites' train splits, evaluated everywhere."""
    train_idx = [i for i, s in enumerate(sites) if s.role == "train"]
    torch.manual_seed(cfg.seed)
    model = build_model(ModelSpec(arch=cfg.model, task=cfg.task))
    xs = [datas[i].subset("train") for i in train_idx]
    x = torch.cat([a for a, _ in xs])
    y = torch.cat([b for _, b in xs])
    res = train_local(model, x, y, settings)
    _record_training(history, settings.epochs, "pooled", res)
    _evaluate_everywhere(model, sites, datas, history)
    save_arrays(out_dir / "final_model.npz", _arrays(model))
    return model


def _local(cfg, sites, datas, history, settings, out_dir) -> tuple[torch.nn.Module, str]:
    """One model per training site; holdouts get the largest site's. Returns it and a note."""
    train_idx = [i for i, s in enumerate(sites) if s.role == "train"]
    largest = max(train_idx, key=lambda i: int((~datas[i].is_test).sum()))
    kept = None
    for i in train_idx:
        torch.manual_seed(cfg.seed)
        model = build_model(ModelSpec(arch=cfg.model, task=cfg.task))
        x, y = datas[i].subset("train")
        res = train_local(model, x, y, settings)
        _record_training(history, settings.epochs, sites[i].site_id, res)
        _evaluate_everywhere(model, sites, datas, history, only=i)
        if i == largest:
            for j, s in enumerate(sites):
                if s.role == "holdout":
                    _evaluate_everywhere(model, sites, datas, history, only=j)
            save_arrays(out_dir / "final_model.npz", _arrays(model))
        kept = model
    note = f"holdout sites evaluated with the model of the largest training site ({sites[largest].site_id})"
    return kept, note  # type: ignore[return-value]


def run_baseline(cfg: RunConfig, method: str, sites: list[SiteSettings], out_dir: Path) -> dict:
    """``pooled`` or ``local`` training without Flower, evaluated like the federated model."""
    t0 = time.perf_counter()
    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
    datas = [site_data(s, cfg.task, cfg.seed) for s in sites]
    history = _history_for(sites, datas)
    settings = baseline_settings(cfg)
    note = ""
    if method == "pooled":
        model = _pooled(cfg, sites, datas, history, settings, out_dir)
    else:
        model, note = _local(cfg, sites, datas, history, settings, out_dir)
    timing = {
        "training_seconds": time.perf_counter() - t0,
        "total_seconds": time.perf_counter() - t0,
    }
    report = build_report(cfg, history, timing)
    report["method"] = method
    if note:
        report["final"]["note"] = note  # type: ignore[index]
    card = model_card(cfg, history, ModelSpec(arch=cfg.model, task=cfg.task), model)
    card["training"]["method"] = method  # type: ignore[index]
    write_json(out_dir / "model_card.json", card)
    write_report(out_dir, report)
    return report


def _arrays(model: torch.nn.Module):
    return array_record(federated_state_dict(model))
