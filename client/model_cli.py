"""``fedmi-site model pull|show|export``'s command line.

The work is in :mod:`fedmi.client.model` (verify, pin, keep, show) and
:mod:`fedmi.client.export` (TorchScript/ONNX, which loads through the model module); this
module only registers the three actions, so neither imports the other's command line.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from fedmi.client.export import add_export
from fedmi.client.model import _cmd_pull, _cmd_show


def add_model(sub: argparse._SubParsersAction) -> None:
    """``fedmi-site model pull|show|export``."""
    p = sub.add_parser("model", help="receive, verify and show the federation's model package")
    msub = p.add_subparsers(dest="model_command", required=True, metavar="ACTION")
    pp = msub.add_parser(
        "pull",
        help="verify a model package against the pinned coordinator key and keep it",
        description=(
            "Verify PACKAGE (a .fmp file from the coordinator's run folder) against the "
            "coordinator key this site pinned, then keep a copy under STATE_DIR/model/packages. "
            "--coordinator pins the key on first use (the ca.crt the site joined with)."
        ),
    )
    pp.add_argument("--package", type=Path, required=True, help="the .fmp file")
    pp.add_argument("--state-dir", type=Path, required=True, help="the site's state folder")
    pp.add_argument("--coordinator", type=Path, help="coordinator ca.crt / coordinator.pub to pin")
    pp.set_defaults(handler=_cmd_pull)
    ps = msub.add_parser("show", help="verify a kept package and print its model card summary")
    ps.add_argument("--state-dir", type=Path, required=True, help="the site's state folder")
    ps.add_argument("--package", type=Path, help="a package file (default: newest kept)")
    ps.set_defaults(handler=_cmd_show)
    add_export(msub)
