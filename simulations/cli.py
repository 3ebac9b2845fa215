"""``fedmi-sim``: command line of the simulation package.

Subcommands are argparse subparsers; each registers itself with a ``_add_<name>`` function
and sets ``func`` (a callable taking the parsed namespace and returning an exit code), so
``run`` and ``compare`` can be added beside ``generate``.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from fedmi.server.report.outcome import RunFailed
from fedmi.shared.logs import configure_logging
from fedmi.shared.methods import METHODS
from fedmi.shared.run_config import RUN_CONFIG, RunConfig
from fedmi.shared.tasks import TASKS


def _cmd_generate(args: argparse.Namespace) -> int:
    from fedmi.simulations.generator import generate_federation
    from fedmi.simulations.sites import PRESETS
    from fedmi.simulations.sites.presets import check_archive_factor

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
    overrides["poses"] = args.poses
    if args.no_memory_clinic:
        overrides["memory_clinic"] = False
    try:
        if args.unlabelled_archive is not None:
            overrides["unlabelled_archive"] = check_archive_factor(
                args.unlabelled_archive, "--unlabelled-archive"
            )
        manifest = generate_federation(
            Path(args.out), args.task, args.preset, args.seed, **overrides
        )
    except (FileExistsError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for s in manifest["sites"]:
        labels = ", ".join(f"{k} {v}" for k, v in s["labels"].items())
        extra = f"; {s['n_unlabelled']} unlabelled" if s.get("n_unlabelled") else ""
        if s.get("n_archive"):
            extra += f" ({s['n_archive']} archive)"
        print(f"{s['site_id']:10s} {s['role']:8s} {s['n_subjects']:4d} subjects  ({labels}{extra})")
    archive = f" and {manifest['n_archive']} archive scans" if manifest["n_archive"] else ""
    print(
        f"wrote {manifest['n_subjects']} subjects{archive} in {len(manifest['sites'])} sites "
        f"to {args.out}"
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
    p.add_argument(
        "--poses",
        default="realistic",
        choices=("realistic", "legacy", "aligned"),
        help="head poses, sizes, cut fields of view and atrophy: realistic (default; tilts up "
        "to 20 deg, sizes +-12%%), legacy (earlier versions' poses, <= 5 deg), aligned "
        "(no rotation or scaling)",
    )
    p.add_argument(
        "--no-memory-clinic",
        action="store_true",
        help="fdg-ad: leave out the memory-clinic cohort appended to each site (ageing "
        "normals 50-90 y, bvFTD and DLB scans; docs/phantom-disorders.md)",
    )
    p.add_argument(
        "--unlabelled-archive",
        type=float,
        default=None,
        metavar="FACTOR",
        help="give every site (holdouts included) round(FACTOR x its labelled scans) more "
        "scans of its own population, scanner and protocol whose patients are not in "
        "labels.csv (a number >= 0; default: the preset's, 0 = no archive)",
    )
    p.set_defaults(func=_cmd_generate)


def _prepare(data_arg: str | None) -> Path | None:
    """Progress logging on; the ``--data`` folder (``None``: generate one).

    Raises
    ------
    ValueError
        When ``--data`` names no folder (reported by :func:`_guarded`).
    """
    logging.getLogger("fedmi").setLevel(logging.INFO)
    logging.getLogger("flwr").setLevel(logging.WARNING)
    data = Path(data_arg) if data_arg else None
    if data is not None and not data.is_dir():
        raise ValueError(
            f"--data {data} is not a folder: give the root written by `fedmi-sim generate`"
        )
    return data


def _guarded(work: Callable[[], None]) -> int:
    """Run ``work``; 130 on Ctrl-C, 2 with a one-line error for a bad input, else 0."""
    try:
        work()
    except KeyboardInterrupt:
        print("interrupted: every process this run started has been stopped", file=sys.stderr)
        return 130
    except (FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except RunFailed as exc:
        print(f"error: {exc} (report.json and report.html written)", file=sys.stderr)
        return 1
    return 0


def _cmd_run(args: argparse.Namespace) -> int:
    from fedmi.simulations.runner import run, run_loso

    if args.method not in METHODS:
        print(
            f"error: unknown method {args.method!r}; choose one of {', '.join(METHODS)}",
            file=sys.stderr,
        )
        return 2

    def work() -> None:
        extra = _config_pairs(args.config)
        if args.min_cell_count is not None:
            extra["sim-min-cell-count"] = args.min_cell_count
        if args.prevalences is not None:
            extra["report-prevalences"] = args.prevalences
        _check_run_config(args, extra)
        data = _prepare(args.data)
        (run_loso if args.validation == "loso" else run)(
            data_root=data,
            task=args.task,
            out_dir=Path(args.out),
            rounds=args.rounds,
            method=args.method,
            seed=args.seed,
            local_epochs=args.local_epochs,
            serial=args.serial,
            extra=extra,
        )

    code = _guarded(work)
    if code:
        return code
    print(f"report: {Path(args.out) / 'report.json'} and {Path(args.out) / 'report.html'}")
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
    p.add_argument(
        "--method",
        default="fedavg",
        help="one of " + ", ".join(METHODS) + " (fedmi.shared.methods)",
    )
    p.add_argument(
        "--local-epochs",
        type=int,
        default=RunConfig().local_epochs,
        help="local epochs per round (0: the model's default, 3 regional / 1 cnn)",
    )
    p.add_argument(
        "--seed", type=int, default=0, help="seed for splits, initial weights and training"
    )
    _add_run_options(p)
    p.set_defaults(func=_cmd_run)


def _add_run_options(p: argparse.ArgumentParser) -> None:
    """``run``'s options beyond the federation and the training recipe."""
    p.add_argument(
        "--serial",
        action="store_true",
        help="run one ClientApp at a time (to measure Flower's overhead)",
    )
    p.add_argument(
        "--validation",
        choices=("final", "loso"),
        default="final",
        help="final: validate the final model at every site (default); loso: also leave each "
        "training site out in turn and validate it on the federation trained without it",
    )
    p.add_argument(
        "--min-cell-count",
        type=int,
        default=None,
        help="small-cell k for every simulated site (stands in for each site's own "
        "min-cell-count; default: the site's, else 10)",
    )
    p.add_argument(
        "--prevalences",
        default=None,
        help='prevalences for PPV/NPV in the report besides each site\'s own, e.g. "0.05,0.2"',
    )
    p.add_argument(
        "--config",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra run-config key (repeatable), e.g. central-dp=fixed, sim-default-epsilon=3, "
        "sim-default-dp=off, sim-ledger-root=/abs/dir (see pyproject [tool.flwr.app.config])",
    )


def _cmd_compare(args: argparse.Namespace) -> int:
    from fedmi.simulations.compare import COMPARE_METHODS, compare

    def work() -> None:
        extra = {"sim-default-dp": "off", **_config_pairs(args.config)}
        _check_run_config(args, extra)
        data = _prepare(args.data)
        seeds = [int(s) for s in str(args.seeds).split(",") if s.strip()]
        methods = [m.strip() for m in (args.methods or ",".join(COMPARE_METHODS)).split(",")]
        compare(
            data_root=data,
            task=args.task,
            out_dir=Path(args.out),
            rounds=args.rounds,
            seeds=seeds,
            local_epochs=args.local_epochs,
            methods=[m for m in methods if m],
            preset=args.preset,
            extra=extra,
            reuse=args.reuse,
        )

    code = _guarded(work)
    if code:
        return code
    print(f"table: {Path(args.out) / 'compare.md'} and {Path(args.out) / 'compare.json'}")
    return 0


def _add_compare(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "compare",
        help="run local, pooled, FedAvg, FedProx, FedBN-style and fedmi (with and without "
        "adaptation) on identical splits",
        description="Run every method for every seed on one federation (same splits, seeds and "
        "initial weights) and write one table of per-site and holdout AUC (mean ± sd over "
        "seeds) to OUT/compare.md and OUT/compare.json. Site DP-SGD is off unless "
        "--config sim-default-dp=on, so every method trains under the same conditions as the "
        "non-private pooled/local baselines; with DP on, every run spends a fresh budget "
        "(its own ledgers under OUT/runs/<method>-seed<N>/site-ledgers).",
    )
    p.add_argument("--data", default=None, help="federation root (default: generate into OUT/data)")
    p.add_argument("--task", default="amyloid", choices=sorted(TASKS), help="clinical task")
    p.add_argument("--out", required=True, help="folder for compare.json, compare.md and the runs")
    p.add_argument("--rounds", type=int, default=RunConfig().num_server_rounds)
    p.add_argument(
        "--local-epochs",
        type=int,
        default=RunConfig().local_epochs,
        help="local epochs per round (0: the model's default)",
    )
    p.add_argument("--seeds", default="0,1,2", help="comma-separated seeds (default 0,1,2)")
    p.add_argument("--methods", default=None, help="comma-separated subset of the methods")
    p.add_argument(
        "--preset", default="harmonization", help="preset to generate when --data is not given"
    )
    p.add_argument("--reuse", action="store_true", help="reuse finished runs found in OUT/runs")
    p.add_argument("--config", action="append", default=[], metavar="KEY=VALUE")
    p.set_defaults(func=_cmd_compare)


def _config_pairs(items: list[str]) -> dict[str, object]:
    """``--config KEY=VALUE`` strings as run-config values, each read with its key's type.

    Raises
    ------
    fedmi.shared.run_config.RunConfigError
        An unknown key (with the close match), or a value of the wrong type or out of range.
    """
    return RUN_CONFIG.parse_pairs(items, "--config")


def _check_run_config(args: argparse.Namespace, extra: dict[str, object]) -> None:
    """The run config this command would run, validated before any generation or work."""
    RunConfig.from_mapping(
        {
            "task": args.task,
            "num-server-rounds": args.rounds,
            "seed": getattr(args, "seed", 0),
            "local-epochs": args.local_epochs,
            **extra,
        },
        source=f"fedmi-sim {args.command}",
    )


def build_parser() -> argparse.ArgumentParser:
    """The ``fedmi-sim`` parser with all registered subcommands."""
    parser = argparse.ArgumentParser(
        prog="fedmi-sim", description="fedmi synthetic federation tools"
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress at INFO")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    _add_generate(sub)
    _add_run(sub)
    _add_compare(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``fedmi-sim``; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "func", None) is None:
        parser.print_help()
        return 2
    configure_logging(logging.INFO if args.verbose else logging.WARNING)
    return int(args.func(args))


if __name__ == "__main__":
    raise SystemExit(main())
