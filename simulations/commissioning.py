"""Measuring the optional commissioning step (docs/operating-point.md) at the holdout sites.

A new hospital with a few labelled local scans refits only the intercept of the federation's
recalibration (:func:`fedmi.shared.operating_point.fit_intercept`). Here each holdout site
of a finished simulated run plays that hospital many times: ``n_per_class`` scans of each
class are drawn as the commissioning set, the rest are the test; sensitivity, specificity,
balanced accuracy at the model card's threshold and ECE / calibration-in-the-large are
measured on the test scans before and after, averaged over the draws.

Usage (a run of a method without site-local layers: local, pooled, fedavg, fedprox)::

    python -m fedmi.simulations.commissioning RUN_DIR [--data ROOT] [--n-per-class 10] [--draws 50]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from fedmi.shared.contract import HIST_BINS
from fedmi.shared.operating_point import Platt, calibration_summary, fit_intercept


def _rates(p: np.ndarray, y: np.ndarray, threshold: float) -> dict[str, float]:
    call = p >= threshold
    sens = float(call[y == 1].mean())
    spec = float((~call[y == 0]).mean())
    hp = np.bincount(
        np.minimum((p[y == 1] * HIST_BINS).astype(int), HIST_BINS - 1), minlength=HIST_BINS
    )
    hn = np.bincount(
        np.minimum((p[y == 0] * HIST_BINS).astype(int), HIST_BINS - 1), minlength=HIST_BINS
    )
    cal = calibration_summary(hp, hn)
    return {
        "sens": sens,
        "spec": spec,
        "ba": (sens + spec) / 2,
        "ece": cal["ece"],
        "citl": cal["citl"],
    }  # type: ignore[dict-item]


def commission_scores(
    p: np.ndarray,
    y: np.ndarray,
    threshold: float,
    *,
    n_per_class: int = 10,
    draws: int = 50,
    seed: int = 0,
) -> dict[str, object]:
    """Before/after figures of intercept commissioning on one site's (recalibrated)
    probabilities ``p``, mean over ``draws`` random commissioning sets."""
    p = np.asarray(p, dtype=np.float64)
    y = np.asarray(y).astype(int)
    pos, neg = np.flatnonzero(y == 1), np.flatnonzero(y == 0)
    if min(len(pos), len(neg)) <= n_per_class:
        raise ValueError(f"need more than {n_per_class} scans of each class")
    rng = np.random.default_rng(seed)
    before, after, shifts = [], [], []
    for _ in range(draws):
        pick = np.concatenate(
            [
                rng.choice(pos, n_per_class, replace=False),
                rng.choice(neg, n_per_class, replace=False),
            ]
        )
        test = np.setdiff1d(np.arange(len(y)), pick)
        c = fit_intercept(p[pick], y[pick])
        shifts.append(c)
        before.append(_rates(p[test], y[test], threshold))
        after.append(_rates(Platt(c, 1.0).apply(p[test]), y[test], threshold))

    def mean(rows: list[dict[str, float]]) -> dict[str, float]:
        return {k: float(np.mean([r[k] for r in rows])) for k in rows[0]}

    return {
        "n_per_class": n_per_class,
        "draws": draws,
        "intercept_shift": float(np.mean(shifts)),
        "before": mean(before),
        "after": mean(after),
    }


def commission_run(
    run_dir: Path, data_root: Path | None = None, n_per_class: int = 10, draws: int = 50
) -> dict[str, object]:
    """:func:`commission_scores` at every holdout site of a finished simulated run."""
    import torch

    from fedmi.client.data import site_data
    from fedmi.client.replies import to_state
    from fedmi.client.training.loop import predict
    from fedmi.server.report.document import load_arrays
    from fedmi.shared.model import ModelSpec, build_model, load_federated_state
    from fedmi.shared.run_config import RunConfig
    from fedmi.simulations.runner import site_settings

    report = json.loads((run_dir / "report.json").read_text())
    card = json.loads((run_dir / "model_card.json").read_text())["operating_point"]
    if report["method"] in ("fedbn", "fedmi"):
        raise ValueError("commissioning is measured on models without site-local layers")
    cfg = RunConfig.from_mapping({k: v for k, v in report["run_config"].items()})
    rec = card.get("recalibration")
    platt = Platt(rec["a"], rec["b"]) if rec else Platt(0.0, 1.0)
    threshold = float(rec["threshold_recalibrated"]) if rec else float(card["threshold"])
    torch.manual_seed(cfg.seed)
    model = build_model(ModelSpec(arch=cfg.model, task=cfg.task))
    load_federated_state(model, to_state(load_arrays(run_dir / "final_model.npz")))
    root = data_root or (Path(cfg.sim_data_root) if cfg.sim_data_root else None)
    if root is None:
        raise ValueError("the run does not name its federation: pass --data")
    sites = site_settings(root.resolve(), run_dir)
    out: dict[str, object] = {"threshold_recalibrated": threshold, "sites": {}}
    for site in sites:
        if site.role != "holdout":
            continue
        x, y = site_data(site, cfg.task, cfg.seed).subset("all")
        p = platt.apply(predict(model, x))
        out["sites"][site.site_id] = commission_scores(  # type: ignore[index]
            p, y.numpy(), threshold, n_per_class=n_per_class, draws=draws, seed=cfg.seed
        )
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--data", type=Path, default=None, help="the federation's root")
    parser.add_argument("--n-per-class", type=int, default=10)
    parser.add_argument("--draws", type=int, default=50)
    args = parser.parse_args(argv)
    print(
        json.dumps(commission_run(args.run_dir, args.data, args.n_per_class, args.draws), indent=2)
    )


if __name__ == "__main__":
    main()
