"""``fedmi-server``: the coordinator's command line.

Subcommands:

* ``summary RUN_DIR``: print the final per-site table of a run's ``report.json``.
* ``package --run-dir RUN --key ca.key``: sign the run's model package with the CA key.
* ``certs``, ``start``, ``stop``, ``register``, ``run``, ``status``: deploying on real sites
  (see :mod:`fedmi.server.deploy.cli` and docs/coordinator-guide.md).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from fedmi.server.deploy.cli import add_deploy_commands


def _summary(args: argparse.Namespace) -> int:
    from fedmi.server.report.document import summary_table  # torch and MONAI: only when needed

    path = Path(args.run_dir) / "report.json"
    if not path.exists():
        print(
            f"fedmi-server: {path} not found: give the folder a run wrote its outputs to",
            file=sys.stderr,
        )
        return 2
    try:
        report = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        print(
            f"fedmi-server: {path} is not valid JSON ({exc}); the run may still be writing it",
            file=sys.stderr,
        )
        return 2
    print(f"task {report['task']}, method {report['method']}")
    print(summary_table(report))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="fedmi-server", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("summary", help="print the final results table of a run")
    p.add_argument("run_dir", help="the run's output folder (holding report.json)")
    p.set_defaults(func=_summary)
    add_deploy_commands(sub)  # certs, start, stop, register, run, status
    from fedmi.server.package import add_package_command

    add_package_command(sub)
    args = parser.parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    raise SystemExit(main())
