"""``fedmi-site``: the command line of a hospital site.

Subcommands are registered by small ``_add_<name>`` functions so that others (``check``,
``join``, ``keygen``, ``ledger``) can be added beside ``ingest``.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from fedmi.client.deploy.join import add_approve, add_join, add_keygen
from fedmi.client.ingest.errors import REASONS
from fedmi.client.model_cli import add_model
from fedmi.client.predict_cli import add_predict
from fedmi.client.privacy.cli import add_ledger
from fedmi.client.site.check import add_check

log = logging.getLogger(__name__)

Handler = Callable[[argparse.Namespace], int]


def _cmd_ingest(args: argparse.Namespace) -> int:
    from fedmi.client.ingest.pipeline import ingest_site
    from fedmi.client.site.config import SiteConfigError

    # --state-dir: the SuperNode's state folder, whose ingest/ cache its ClientApp reads
    out = Path(args.state_dir) / "ingest" if args.state_dir else Path(args.out)
    try:
        report = ingest_site(args.site_dir, args.task, out, workers=args.workers)
    except (SiteConfigError, ValueError) as exc:
        print(f"fedmi-site ingest: {exc}", file=sys.stderr)
        return 2
    s = report.summary
    print(
        f"{s['series_accepted']} series accepted ({s['series_from_cache']} from cache), "
        f"{s.get('series_unlabelled', 0)} without a label (kept apart, not trained on), "
        f"{s['series_rejected']} rejected, {s['files_rejected']} of {s['files_found']} files "
        f"not used; see {out / 'ingest_report.json'}"
    )
    for reason, n in s["by_reason"].items():
        print(f"  {reason}: {n}")
    if not s["series_accepted"] and not s.get("series_unlabelled", 0):
        print(
            f"fedmi-site ingest: no usable series in {args.site_dir}: this site has nothing to "
            "train, validate or predict on; fix the reasons above (or the --task) and ingest again",
            file=sys.stderr,
        )
        return 1
    if not s["series_accepted"]:
        print(
            "fedmi-site ingest: no labelled series: this site can use the model (predict) "
            "but has nothing to train or validate on until labels.csv lists its patients",
            file=sys.stderr,
        )
    return 0


def _add_ingest(sub: argparse._SubParsersAction) -> None:
    from fedmi.shared.tasks import TASKS

    codes = "\n".join(f"  {k}: {v}" for k, v in REASONS.items())
    p = sub.add_parser(
        "ingest",
        help="read the site's DICOM folder into the task's cached volumes",
        description=(
            "Find every DICOM file under SITE_DIR/dicom/, convert PET to SUVbw (QIBA) and SPECT "
            "to counts, put each series on the task's template grid, divide by the reference "
            "region, cache the result and write ingest_report.json with a reason for every "
            "rejected file or series. Ingest is an explicit step: a site that has not ingested "
            "answers the coordinator with no-data."
        ),
        epilog="rejection reasons:\n" + codes,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--site-dir",
        type=Path,
        required=True,
        help="site folder (dicom/, and labels.csv: optional; series of patients it does not "
        "list are ingested without a label, kept apart and never trained on)",
    )
    p.add_argument("--task", required=True, choices=sorted(TASKS), help="clinical task")
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument(
        "--state-dir",
        type=Path,
        help="the site's state folder (the SuperNode's --state-dir): the cache goes to "
        "STATE_DIR/ingest, where the site's ClientApp reads it",
    )
    where.add_argument("--out", type=Path, help="write the cache and reports to this folder itself")
    p.add_argument("--workers", type=int, default=1, help="worker processes (default 1)")
    p.set_defaults(handler=_cmd_ingest)


#: Subcommand registrars, in help order.
SUBCOMMANDS: list[Callable[[argparse._SubParsersAction], None]] = [
    _add_ingest,
    add_ledger,
    add_check,
    add_keygen,
    add_join,
    add_approve,
    add_model,
    add_predict,
]


def build_parser() -> argparse.ArgumentParser:
    """The ``fedmi-site`` argument parser with every registered subcommand."""
    parser = argparse.ArgumentParser(prog="fedmi-site", description="fedmi hospital-site tools")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in SUBCOMMANDS:
        add(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``fedmi-site``; returns the exit status."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    handler: Handler = args.handler
    return handler(args)


if __name__ == "__main__":
    raise SystemExit(main())
