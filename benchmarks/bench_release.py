"""What DP costs the validation numbers: the noisy release against the noiseless statistics.

Takes a finished run (its ``final_model.npz``) and the federation it ran on, scores every
site's evaluated scans with the final model once, and draws the site's DP release many
times with the noise multipliers its policy gives an ``evaluate.external`` release
(:func:`fedmi.client.privacy.release.release_multipliers`; nothing is charged). Reports per
site the exact AUC with its DeLong interval and, over the draws: the mean and 95th
percentile of |noisy AUC − exact AUC|, how often the released interval covers the exact AUC,
the mean interval width, and the errors of sensitivity and specificity at 0.5.

    python3 -m benchmarks.bench_release --data D --run R [--draws 500] [--epsilon 10]
"""

from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path

import numpy as np

from fedmi.client.data import site_data
from fedmi.client.evaluation.external import extra_mechanisms
from fedmi.client.evaluation.handler import evaluated_split
from fedmi.client.evaluation.private import EVALUATION_MECHANISMS, private_evaluation
from fedmi.client.privacy.release import Release, release_multipliers
from fedmi.client.privacy.settings import PrivacySettings
from fedmi.client.training.loop import predict
from fedmi.server.report.document import load_arrays
from fedmi.shared.instructions import ExternalInstruction
from fedmi.shared.model import ModelSpec, build_model, load_federated_state
from fedmi.shared.stats import delong_auc, operating_point, sufficient_statistics
from fedmi.simulations.runner import site_settings


def site_table(scores, labels, multipliers, draws: int, k: int) -> dict[str, float] | None:
    """Exact statistics and the release's errors over ``draws`` draws."""
    exact = delong_auc(scores, labels)
    op = operating_point(sufficient_statistics(scores, labels), 0.5)  # type: ignore[arg-type]
    errs, covered, widths, sens_err, spec_err = [], 0, [], [], []
    for _ in range(draws):
        stats, status = private_evaluation(scores, labels, Release(multipliers, 0.0), k)
        if status != "ok" or "auc-exact" not in stats:
            continue
        auc = float(stats["auc-exact"])
        errs.append(abs(auc - exact.auc))
        lo, hi = float(stats["auc-ci-low"]), float(stats["auc-ci-high"])
        covered += lo <= exact.auc <= hi
        widths.append(hi - lo)
        noisy = operating_point(stats, 0.5)  # type: ignore[arg-type]
        sens_err.append(abs(noisy.sensitivity - op.sensitivity))
        spec_err.append(abs(noisy.specificity - op.specificity))
    if not errs:
        return None
    return {
        "n": len(labels),
        "auc": exact.auc,
        "delong_width": exact.ci_high - exact.ci_low,
        "mean_abs_err": float(np.mean(errs)),
        "p95_abs_err": float(np.percentile(errs, 95)),
        "coverage": covered / len(errs),
        "mean_width": float(np.mean(widths)),
        "sens_abs_err": float(np.mean(sens_err)),
        "spec_abs_err": float(np.mean(spec_err)),
        "draws": len(errs),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", type=Path, required=True)
    p.add_argument("--run", type=Path, required=True, help="a finished run folder")
    p.add_argument("--task", default="fdg-ad")
    p.add_argument("--draws", type=int, default=500)
    p.add_argument("--epsilon", type=float, default=PrivacySettings().epsilon)
    p.add_argument("--model", default="regional")
    args = p.parse_args(argv)
    settings = replace(PrivacySettings(), epsilon=args.epsilon)
    model = build_model(ModelSpec(arch=args.model, task=args.task))
    state = {k: np.asarray(v.numpy()) for k, v in load_arrays(args.run / "final_model.npz").items()}
    import torch

    load_federated_state(model, {k: torch.from_numpy(v.copy()) for k, v in state.items()})
    ins = ExternalInstruction(task=args.task, model=args.model)
    print(
        "site    role     n   AUC    DeLong±  |err| mean  p95    cover  width  sens|err| spec|err|"
    )
    for site in site_settings(args.data.resolve(), args.run.resolve()):
        data = site_data(site, args.task, 0)
        x, y = data.subset(evaluated_split(site))
        mechanisms = EVALUATION_MECHANISMS | extra_mechanisms(ins, harmonized=False)
        multipliers = release_multipliers(settings, site.role, ins.message_type, mechanisms)
        row = site_table(
            predict(model, x), y.numpy().astype(int), multipliers, args.draws, site.min_cell_count
        )
        if row is None:
            print(
                f"{site.site_id:7s} {site.role:8s} {len(y):3d}  (no AUC released: a class below k)"
            )
            continue
        print(
            f"{site.site_id:7s} {site.role:8s} {row['n']:3d} {row['auc']:.3f}  "
            f"{row['delong_width'] / 2:.3f}   {row['mean_abs_err']:.3f}      "
            f"{row['p95_abs_err']:.3f}  {row['coverage']:.2f}   {row['mean_width']:.3f}  "
            f"{row['sens_abs_err']:.3f}     {row['spec_abs_err']:.3f}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
