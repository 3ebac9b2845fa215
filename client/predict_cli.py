"""``fedmi-site predict``'s command line: one pass over a folder, or the watch-folder mode.

The work is in :mod:`fedmi.client.predict` (one folder) and :mod:`fedmi.client.watch` (the
watch loop, which calls it); this module parses the flags and dispatches, so neither of
those imports the other's command line.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from fedmi.client.model import latest
from fedmi.client.predict import predict_folder
from fedmi.shared.package import PackageError


def _cmd_predict(args: argparse.Namespace) -> int:
    if args.send and args.no_dicom:
        print(
            "fedmi-site predict: --send needs the DICOM objects: drop --no-dicom", file=sys.stderr
        )
        return 2
    if args.watch:
        return _cmd_watch(args)
    given = [f for f in ("interval", "settle", "max_cycles") if getattr(args, f) is not None]
    if given:
        flag = "--" + given[0].replace("_", "-")
        print(f"fedmi-site predict: {flag} needs --watch", file=sys.stderr)
        return 2
    try:
        package = args.package or latest(args.state_dir)
        records = predict_folder(
            package,
            args.state_dir,
            args.dicom,
            args.out,
            mc_passes=args.mc_passes,
            dicom_out=not args.no_dicom,
        )
    except (PackageError, ValueError) as exc:
        print(f"fedmi-site predict: {exc}", file=sys.stderr)
        return 2
    if args.send:
        from fedmi.client.pacs import SendError, send

        files = [Path(args.out) / "dicom" / n for r in records for n in r.get("dicom", [])]
        try:
            n = send(files, args.send)
        except SendError as exc:
            print(f"fedmi-site predict: {exc}", file=sys.stderr)
            return 3
        print(f"{n} DICOM object(s) stored at {args.send.ae_title}")
    for rec in records:
        if rec["assessable"]:
            print(f"{rec['series_uid']}: {rec['class']} (p = {rec['probability']:.3f})")
            if rec.get("normative"):
                from fedmi.client.anomaly import summary_line

                print(f"  {summary_line(rec['normative'])}")
        else:
            print(f"{rec['series_uid']}: not assessable ({rec['reason']})")
            if rec.get("normative"):
                from fedmi.client.anomaly import summary_line

                print(f"  {summary_line(rec['normative'])}")
    print(f"records and reports in {args.out}")
    return 0


def _cmd_watch(args: argparse.Namespace) -> int:
    from fedmi.client.watch import DEFAULT_INTERVAL, DEFAULT_SETTLE, watch

    send = None
    if args.send:
        from fedmi.client.pacs import send as c_store

        def send(files: list[Path]) -> int:
            return c_store(files, args.send)

    try:
        package = args.package or latest(args.state_dir)
        watcher = watch(
            package,
            args.state_dir,
            args.dicom,
            args.out,
            interval=DEFAULT_INTERVAL if args.interval is None else args.interval,
            settle=DEFAULT_SETTLE if args.settle is None else args.settle,
            mc_passes=args.mc_passes,
            dicom_out=not args.no_dicom,
            send=send,
        )
    except (PackageError, ValueError) as exc:
        print(f"fedmi-site predict: {exc}", file=sys.stderr)
        return 2
    watcher.run(args.max_cycles)
    return 0


def _seconds(flag: str, minimum: float, strict: bool):
    """An argparse type: a finite number of seconds above (or at) ``minimum``."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            value = float("nan")
        if not (value > minimum if strict else value >= minimum) or value == float("inf"):
            bound = f"{'above' if strict else 'at least'} {minimum:g}"
            raise argparse.ArgumentTypeError(
                f"{flag} {text!r}: give a number of seconds {bound}"
            ) from None
        return value

    return parse


def _cycles(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"--max-cycles {text!r}: give a whole number, 1 or more")
    return value


def _pacs_address(text: str):
    from fedmi.client.pacs import PacsAddress

    try:
        return PacsAddress.parse(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def add_predict(sub: argparse._SubParsersAction) -> None:
    """``fedmi-site predict``."""
    p = sub.add_parser(
        "predict",
        help="run the federation's verified model on a DICOM folder (research use)",
        description=(
            "Verify the model package against the pinned coordinator key, ingest every series "
            "under --dicom with the training pipeline, and write one JSON record, one HTML and "
            "one PDF report per series to --out: probability, class at the operating point, an "
            "MC-dropout interval and the regions driving the result, or 'not assessable' with "
            "the reason. With --watch, keep predicting the studies that arrive in --dicom."
        ),
    )
    p.add_argument("--dicom", type=Path, required=True, help="folder of DICOM studies")
    p.add_argument("--out", type=Path, required=True, help="output folder (stays at the site)")
    p.add_argument("--state-dir", type=Path, required=True, help="the site's state folder")
    p.add_argument("--package", type=Path, help="a package file (default: newest kept)")
    p.add_argument("--all", action="store_true", help="every study under --dicom (the default)")
    p.add_argument("--mc-passes", type=int, default=20, help="MC-dropout passes (default 20)")
    p.add_argument("--no-dicom", action="store_true", help="skip the DICOM objects (SR, SC, PDF)")
    p.add_argument(
        "--send",
        type=_pacs_address,
        metavar="AE@HOST:PORT",
        help="C-STORE the SR, Secondary Capture and Encapsulated PDF objects to this PACS",
    )
    w = p.add_argument_group(
        "watch mode",
        "keep running: predict every study folder that arrives in --dicom once it has "
        "settled, each series once (state in OUT/.watch-state.json; a restart resumes)",
    )
    w.add_argument("--watch", action="store_true", help="watch --dicom for new studies")
    w.add_argument(
        "--interval",
        type=_seconds("--interval", 0.0, strict=True),
        metavar="S",
        help="seconds between looks (default 10)",
    )
    w.add_argument(
        "--settle",
        type=_seconds("--settle", 0.0, strict=False),
        metavar="S",
        help="a study is taken once its files have not changed for S seconds (default 30)",
    )
    w.add_argument(
        "--max-cycles",
        type=_cycles,
        metavar="N",
        help="stop after N looks (default: until SIGTERM/SIGINT)",
    )
    p.set_defaults(handler=_cmd_predict)
