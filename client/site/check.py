"""``fedmi-site check``: validate a site and show exactly what it would share, sending nothing.

Runs (or reuses) the ingest of the site's DICOM into ``STATE_DIR/ingest`` (the folder the
SuperNode uses), reads ``site.toml`` ``[site]`` and ``[privacy]`` as the SuperNode would,
builds the very reply the site gives to the coordinator's ``query`` (through the same egress
check as a real reply) and prints it: labelled scans per class, the train/test split, scans
per tracer / manufacturer / model after the site's small-cell rule, and the site's DP
settings (which stay at the site). It also lists the scans whose spatial normalisation was
flagged (``qc.flags`` of ingest_report.json) and writes ``qc_montage.png`` beside the report: a
few slices of each normalised scan, flagged ones first, over the template brain outline. No
network connection is made.
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from fedmi.client.ingest.report import REPORT_FILE
from fedmi.client.site.config import SiteConfigError, load_site_config
from fedmi.shared import contract
from fedmi.shared.tasks import TASKS, get_task

if TYPE_CHECKING:
    from fedmi.client.privacy.settings import PrivacySettings
    from fedmi.client.site.settings import SiteSettings

log = logging.getLogger(__name__)

#: The QC montage beside ingest_report.json, and how many scans it shows.
MONTAGE_FILE = "qc_montage.png"
MONTAGE_SCANS = 12


def _resolve(
    site_dir: Path, task: str, state_dir: Path, role: str | None
) -> tuple[SiteSettings, PrivacySettings]:
    """The site and its DP settings exactly as its SuperNode's ClientApp resolves them."""
    from fedmi.client.privacy.settings import resolve_privacy
    from fedmi.client.site.settings import resolve_site

    if not site_dir.is_dir():
        raise SiteConfigError(f"--site-dir {site_dir} does not exist: give the site folder")
    toml = load_site_config(site_dir)
    if toml.task and toml.task != task:
        raise SiteConfigError(
            f"{site_dir / 'site.toml'}: [site] task is {toml.task!r} but --task {task}: "
            "join the federation for the site's task, or correct site.toml"
        )
    node_config: dict[str, object] = {"data-dir": str(site_dir), "state-dir": str(state_dir)}
    if role:
        node_config["role"] = role
    site = resolve_site(node_config, {})
    return site, resolve_privacy(site, node_config, {})


def _ingest_lines(site: SiteSettings, task: str) -> list[str]:
    """Ingest the site's DICOM into its cache (explicitly) and summarise the outcome."""
    from fedmi.client.ingest.pipeline import ingest_site

    s = ingest_site(site.data_dir, task, site.cache_dir).summary
    report = site.cache_dir / REPORT_FILE
    lines = [
        f"site {site.site_id}: role {site.role}, task {task}, small-cell rule k={site.min_cell_count}",
        f"DICOM: {s['files_found']} files, {s['series_accepted']} series accepted, "
        f"{s['series_rejected']} rejected (details: {report})",
    ]
    lines += [f"  rejected {reason}: {n}" for reason, n in s["by_reason"].items()]
    if s["series_accepted"] == 0:
        raise SiteConfigError(
            f"no usable series for task {task} under {site.data_dir / 'dicom'}: see "
            f"{report} for each file's reason"
        )
    return lines + _qc_lines(site, task)


def _qc_lines(site: SiteSettings, task: str, max_scans: int = MONTAGE_SCANS) -> list[str]:
    """The flagged scans of the last ingest, and the QC montage written beside its report."""
    from fedmi.client.ingest.montage import montage_rows, write_montage
    from fedmi.client.ingest.report import load_accepted

    accepted = load_accepted(site.cache_dir)
    flagged = [r for r in accepted if r["qc"].get("flags")]
    lines = [f"spatial normalisation: {len(flagged)} of {len(accepted)} accepted scans flagged"]
    for r in flagged:
        qc = r["qc"]
        lines.append(
            f"  flagged {r['patient_id']} (series {r['series_uid']}): {', '.join(qc['flags'])}; "
            f"correlation {qc.get('similarity', float('nan')):.2f}, brain coverage "
            f"{qc['brain_coverage']:.2f}, tilt {qc.get('rotation_deg', float('nan')):.0f} deg"
        )
    rows = montage_rows(accepted, max_scans)
    path = write_montage(rows, get_task(task), site.cache_dir / MONTAGE_FILE)
    lines.append(f"QC montage ({len(rows)} scans, flagged first): {path}")
    return lines


def _shared_lines(shared: dict[str, dict], site: SiteSettings, task: str) -> list[str]:
    """What the query reply would release, in words."""
    m = shared[contract.METRICS]
    spec = get_task(task)
    n, pos = int(m["num-examples"]), int(m["num-positive"])
    lines = [
        "",
        "What this site would send to the coordinator when asked (nothing is sent now):",
        f"  site: {dict(shared[contract.SITE])}",
        f"  labelled scans: {n} ({spec.classes[0]} {n - pos}, {spec.classes[1]} {pos}); "
        f"split {m['num-train']} train / {m['num-test']} test",
    ]
    inv = shared.get(contract.INVENTORY, {})
    for field in contract.INVENTORY_FIELDS:
        names, counts = inv.get(f"{field}-names", []), inv.get(f"{field}-counts", [])
        items = ", ".join(f"{a} {b}" for a, b in zip(names, counts, strict=False)) or "—"
        lines.append(f"  scans per {field}: {items}")
    lines.append(
        f"  small cells pooled or withheld: {int(m.get('suppressed-cells', 0))} "
        f"(categories with fewer than {site.min_cell_count} scans)"
    )
    return lines


def site_check(
    site_dir: Path, task: str, state_dir: Path, role: str | None = None
) -> tuple[dict[str, object], list[str]]:
    """Validate the site, ingest its DICOM and build its query reply.

    Returns
    -------
    (dict, list[str])
        The reply's content as plain values (record → key → value) and the report lines.

    Raises
    ------
    SiteConfigError
        When site.toml, the labels or the DICOM give nothing usable (message names the fix).
    """
    # imported here: `fedmi-site --help` and keygen need neither torch nor Flower
    from fedmi.client.egress import check_outbound
    from fedmi.client.site.query import handle_query
    from fedmi.shared.instructions import QueryInstruction

    site, privacy = _resolve(Path(site_dir).resolve(), task, Path(state_dir).resolve(), role)
    lines = _ingest_lines(site, task)
    content = check_outbound(contract.QUERY, handle_query(site, QueryInstruction(task=task)), None)
    shared = {name: dict(rec) for name, rec in content.items()}
    lines += _shared_lines(shared, site, task)
    lines += [
        "During training it sends model weights and declared metrics only; evaluation sends "
        "score histograms and counts, suppressed below k. Never: images, DICOM headers, "
        "UIDs, names, dates, paths or per-patient values.",
        f"Differential privacy (stays here): {'on' if privacy.dp else 'OFF'}, epsilon budget "
        f"{privacy.epsilon:g}, delta {privacy.delta:g}, clipping norm {privacy.max_grad_norm:g}",
    ]
    return shared, lines


def _cmd_check(args: argparse.Namespace) -> int:
    from fedmi.client.privacy.settings import PrivacyConfigError

    try:
        if args.state_dir:
            _, lines = site_check(args.site_dir, args.task, args.state_dir, args.role)
        else:
            with tempfile.TemporaryDirectory(prefix="fedmi-check-") as tmp:
                _, lines = site_check(args.site_dir, args.task, Path(tmp), args.role)
    except (SiteConfigError, PrivacyConfigError, ValueError) as exc:
        print(f"fedmi-site check: {exc}", file=sys.stderr)
        return 2
    print("\n".join(lines))
    return 0


def add_check(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "check",
        help="validate the site and print exactly what it would share (sends nothing)",
        description=(__doc__ or "").split("\n\n")[1],
    )
    p.add_argument(
        "--site-dir", type=Path, required=True, help="site folder (dicom/, labels.csv, site.toml)"
    )
    p.add_argument("--task", required=True, choices=sorted(TASKS), help="clinical task")
    p.add_argument("--state-dir", type=Path, help="the SuperNode's state folder (reuses its cache)")
    p.add_argument("--role", choices=("train", "holdout"), help="override site.toml's role")
    p.set_defaults(handler=_cmd_check)
