"""The curious-coordinator attacks of fedmi.simulations.attacks on a federation's sites.

For each site named, ingests it into fresh state folders, then plays the ``query.ood``
profile attack on a training site and the crafted-weights label attack on a holdout,
against the site with DP off and with its default policy (DP on). Prints replies released
and patients (profiles or labels) recovered.

    python3 -m benchmarks.bench_privacy_attacks --data D [--train site-a] [--holdout site-e]
        [--seeds 60] [--attempts 60]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", type=Path, required=True)
    p.add_argument("--task", default="fdg-ad")
    p.add_argument("--train", default="site-a")
    p.add_argument("--holdout", default="site-e")
    p.add_argument("--seeds", type=int, default=60)
    p.add_argument("--attempts", type=int, default=60)
    args = p.parse_args(argv)
    from flwr.supercore.task_identity import TaskIdentity

    from fedmi.client.app import build_client_app
    from fedmi.client.ingest.pipeline import ingest_site
    from fedmi.simulations.attacks import crafted_label_attack, ood_profile_attack

    TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 1, 0, 1  # outside a run
    app = build_client_app()
    k1 = {"min-cell-count": 1}
    with tempfile.TemporaryDirectory() as tmp:
        for name, attack, site in (
            ("query.ood profiles", ood_profile_attack, args.train),
            ("crafted-weights labels", crafted_label_attack, args.holdout),
        ):
            for dp in ("off", "on"):
                state = Path(tmp) / f"{site}-{dp}"
                ingest_site(args.data / site, args.task, state / "ingest")
                node = {**k1, "dp": dp}
                n = args.seeds if attack is ood_profile_attack else args.attempts
                res = attack(
                    app,
                    args.data / site,
                    state,
                    range(n) if attack is ood_profile_attack else n,
                    node,
                )
                print(
                    f"{name:24s} {site:7s} DP {dp:3s}: {res.attempts} asked, {res.released} "
                    f"released, {res.recovered} recovered ({res.correct} correct)"
                )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
