"""``fedmi-sim``: command line of the simulation package.

Subcommands are argparse subparsers; each registers itself with a ``_add_<name>`` function
and sets ``func`` (a callable taking the parsed namespace and returning an exit code), so
``run`` and ``compare`` can be added beside ``generate``.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from server.config import RunConfig
from shared.tasks import TASKS


def _cmd_generate(args: argparse.Namespace) -> int:
    from simulations.generator import generate_federation
    from simulations.sites import PRESETS

    if args.preset not in PRESETS:
        print(
            f"error: unknown preset {args.preset!r}; choose one of {', '.join(PRESETS)}",
            file=sys.stderr,
        )
        return 2
    overrides: dict[str, object] = {"subjects_scale": args.subjects_scale}
    if args.sites is not None:
        overrides["n_sites"] = args.sites
    if args.workers is not None:
        overrides["workers"] = args.workers
    try:
        manifest = generate_federation(
            Path(args.out), args.task, args.preset, args.seed, **overrides
        )
    except (FileExistsError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for s in manifest["sites"]:
        labels = ", ".join(f"{k} {v}" for k, v in s["labels"].items())
        print(f"{s['site_id']:10s} {s['role']:8s} {s['n_subjects']:4d} subjects  ({labels})")
    print(
        f"wrote {manifest['n_subjects']} subjects in {len(manifest['sites'])} sites to {args.out}"
    )
    return 0


def _add_generate(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "generate",
        help="write a synthetic multi-site federation (DICOM + labels) to disk",
        description="Write ROOT/<site>/dicom, labels.csv and site.toml for every synthetic site, "
        "plus ROOT/federation.json and the generator truth in ROOT/_truth/.",
    )
    p.add_argument("--out", required=True, help="root folder of the federation (new or empty)")
    p.add_argument(
        "--task", default="fdg-ad", choices=sorted(TASKS), help="clinical task (default fdg-ad)"
    )
    p.add_argument(
        "--preset", default="tiny", help="tiny (tests, seconds) or default (~400 subjects)"
    )
    p.add_argument(
        "--seed", type=int, default=0, help="random seed; same seed gives identical files"
    )
    p.add_argument(
        "--sites", type=int, default=None, help="total number of sites incl. the holdout"
    )
    p.add_argument(
        "--subjects-scale", type=float, default=1.0, help="multiply every site's subject count"
    )
    p.add_argument(
        "--workers", type=int, default=None, help="render processes (default min(2, CPUs))"
    )
    p.set_defaults(func=_cmd_generate)


def _cmd_run(args: argparse.Namespace) -> int:
    from simulations.runner import METHODS, run

    if args.method not in METHODS:
        print(
            f"error: unknown method {args.method!r}; choose one of {', '.join(METHODS)}",
            file=sys.stderr,
        )
        return 2
    data = Path(args.data) if args.data else None
    for name in ("server", "client", "simulations"):
        logging.getLogger(name).setLevel(logging.INFO)
    logging.getLogger("flwr").setLevel(logging.WARNING)
    if data is not None and not data.is_dir():
        print(
            f"error: --data {data} is not a folder: give the root written by `fedmi-sim generate`",
            file=sys.stderr,
        )
        return 2
    try:
        run(
            data_root=data,
            task=args.task,
            out_dir=Path(args.out),
            rounds=args.rounds,
            method=args.method,
            seed=args.seed,
            local_epochs=args.local_epochs,
            serial=args.serial,
        )
    except KeyboardInterrupt:
        print("interrupted: every process this run started has been stopped", file=sys.stderr)
        return 130
    except (FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"report: {Path(args.out) / 'report.json'}")
    return 0


def _add_run(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "run",
        help="run a whole federation (or a pooled/local baseline) on this machine",
        description="Ingest every site, train with Flower's simulation engine (or the pooled/local "
        "baseline on the same splits and seeds), validate at every site and write RUN_DIR/report.json.",
    )
    p.add_argument(
        "--data",
        default=None,
        help="federation root from `fedmi-sim generate` (default: generate the default preset into RUN_DIR/data)",
    )
    p.add_argument(
        "--task", default="fdg-ad", choices=sorted(TASKS), help="clinical task (default fdg-ad)"
    )
    p.add_argument("--out", required=True, help="run folder for checkpoints, model card and report")
    p.add_argument(
        "--rounds",
        type=int,
        default=RunConfig().num_server_rounds,
        help="federated rounds (baselines train rounds × local epochs)",
    )
    p.add_argument("--method", default="fedavg", help="fedavg, fedprox, fedadam, pooled or local")
    p.add_argument(
        "--local-epochs", type=int, default=RunConfig().local_epochs, help="local epochs per round"
    )
    p.add_argument(
        "--seed", type=int, default=0, help="seed for splits, initial weights and training"
    )
    p.add_argument(
        "--serial",
        action="store_true",
        help="run one ClientApp at a time (to measure Flower's overhead)",
    )
    p.set_defaults(func=_cmd_run)


def build_parser() -> argparse.ArgumentParser:
    """The ``fedmi-sim`` parser with all registered subcommands."""
    parser = argparse.ArgumentParser(
        prog="fedmi-sim", description="fedmi synthetic federation tools"
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress at INFO")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    _add_generate(sub)
    _add_run(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``fedmi-sim``; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "func", None) is None:
        parser.print_help()
        return 2
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    return int(args.func(args))


if __name__ == "__main__":
    raise SystemExit(main())
