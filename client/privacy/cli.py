"""``fedmi-site ledger``: what the site's privacy ledger has spent, per run and in total."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from fedmi.client.privacy.accounting import epsilon_of
from fedmi.client.privacy.ledger import LEDGER_FILE, LedgerError, PrivacyLedger
from fedmi.client.privacy.ledger_admin import read_old_ledger, reset_ledger, upgrade_ledger
from fedmi.client.privacy.seal import key_id
from fedmi.client.privacy.settings import DEFAULT_DELTA, DEFAULT_EPSILON


def ledger_summary(
    ledger: PrivacyLedger,
    *,
    epsilon_budget: float | None = None,
    delta: float | None = None,
    accountant: str = "rdp",
) -> dict[str, object]:
    """Spend per run (ε of that run alone and cumulative ε after it), total and remaining."""
    budget = ledger.body.get("budget") or {}
    eps_budget = float(epsilon_budget or budget.get("epsilon") or DEFAULT_EPSILON)
    delta = float(delta or budget.get("delta") or DEFAULT_DELTA)
    runs = []
    so_far: list[tuple[float, float, int]] = []
    for run_id in ledger.run_ids():
        own = ledger.history(run_id)
        so_far += own
        charges = [c for c in ledger.body["charges"] if c["run_id"] == run_id]
        plan = ledger.run_plan(run_id) or {}
        runs.append(
            {
                "run_id": run_id,
                "rounds": len(charges),
                "steps": sum(s for _, _, s in own),
                "noise_multiplier": plan.get("noise_multiplier", charges[-1]["noise_multiplier"]),
                "sample_rate": charges[-1]["sample_rate"],
                "max_grad_norm": charges[-1]["max_grad_norm"],
                "epsilon_run": epsilon_of(own, delta, accountant),
                "epsilon_cumulative": epsilon_of(so_far, delta, accountant),
                "first": charges[0]["time"],
                "last": charges[-1]["time"],
            }
        )
    total = epsilon_of(ledger.history(), delta, accountant)
    return {
        "ledger": str(ledger.path),
        "ledger_id": ledger.body["ledger_id"],
        "site_id": ledger.body.get("site_id", ""),
        "revision": ledger.body.get("revision", 0),
        "seal_key_id": key_id(ledger.secret) if ledger.secret else None,
        "accountant": accountant,
        "delta": delta,
        "epsilon_budget": eps_budget,
        "epsilon_spent": total,
        "epsilon_remaining": max(0.0, eps_budget - total),
        "steps": sum(s for _, _, s in ledger.history()),
        "runs": runs,
        "resets": ledger.body.get("resets", []),
        "upgrades": ledger.body.get("upgrades", []),
    }


def _cmd_upgrade(args: argparse.Namespace) -> int:
    """``--upgrade``: show what a version-1 ledger spent, and seal it when confirmed."""
    try:
        old = read_old_ledger(args.state_dir)
        if not args.yes:
            s = ledger_summary(old, accountant=args.accountant)
            print(
                f"{old.path} (old unsealed format) shows ε = {s['epsilon_spent']:.3f} spent "
                f"in {len(s['runs'])} run(s), {s['steps']} DP-SGD steps. If that matches this "
                "site's records, add --yes to seal it with the site's ledger secret."
            )
            return 2
        archived = upgrade_ledger(args.state_dir)
    except LedgerError as exc:
        print(f"fedmi-site ledger: {exc}")
        return 3
    print(f"ledger sealed; the old file is kept as {archived.name}")
    return 0


def _cmd_ledger(args: argparse.Namespace) -> int:
    folder: Path = args.state_dir
    if args.upgrade:
        return _cmd_upgrade(args)
    if args.reset:
        if not args.yes:
            print(
                "fedmi-site ledger --reset forgets every privacy charge of this dataset; the old "
                "ledger is archived beside it. Add --yes to confirm."
            )
            return 2
        try:
            archived = reset_ledger(folder, reason=args.reason)
        except LedgerError as exc:
            print(f"fedmi-site ledger: {exc}")
            return 3
        print(f"ledger reset; previous ledger archived as {archived.name if archived else '—'}")
        return 0
    try:
        ledger = PrivacyLedger.open(folder, create=False)
    except FileNotFoundError:
        print(f"no privacy ledger ({LEDGER_FILE}) in {folder}: nothing spent yet")
        return 1
    except LedgerError as exc:
        print(f"fedmi-site ledger: {exc}")
        return 3
    s = ledger_summary(
        ledger, epsilon_budget=args.epsilon_budget, delta=args.delta, accountant=args.accountant
    )
    if args.json:
        print(json.dumps(s, indent=2))
        return 0
    print(
        f"privacy ledger {s['ledger_id']} of site {s['site_id'] or '(unclaimed)'}, revision "
        f"{s['revision']} ({s['accountant'].upper()} accountant, δ = {s['delta']:g})"
    )
    header = f"{'run':<22} {'rounds':>6} {'steps':>7} {'sigma':>7} {'q':>7} {'C':>5} {'eps run':>8} {'eps cum':>8}"
    print(header)
    print("-" * len(header))
    for r in s["runs"]:  # type: ignore[union-attr]
        print(
            f"{str(r['run_id'])[:22]:<22} {r['rounds']:>6} {r['steps']:>7} "
            f"{r['noise_multiplier']:>7.3f} {r['sample_rate']:>7.4f} {r['max_grad_norm']:>5.2g} "
            f"{r['epsilon_run']:>8.3f} {r['epsilon_cumulative']:>8.3f}"
        )
    print(
        f"spent ε = {s['epsilon_spent']:.3f} of {s['epsilon_budget']:g}; "
        f"remaining {s['epsilon_remaining']:.3f} ({s['steps']} DP-SGD steps in all)"
    )
    print(f"sealed with the ledger secret of key id {s['seal_key_id']} (keep it in your records)")
    for reset in s["resets"]:  # type: ignore[union-attr]
        print(f"reset at {reset['time']}: {reset.get('reason', '')}")
    for up in s["upgrades"]:  # type: ignore[union-attr]
        print(f"sealed at {up['time']} from format {up['from_version']} ({up['archived_as']})")
    return 0


def add_ledger(sub: argparse._SubParsersAction) -> None:
    """Register ``fedmi-site ledger``."""
    p = sub.add_parser(
        "ledger",
        help="show (or reset) the site's differential-privacy ledger",
        description=(
            "Show the privacy spent by this site's dataset: per run (rounds, DP-SGD steps, "
            "noise multiplier, sampling rate, clipping norm, ε of the run and cumulative ε), "
            "the total and what remains of the budget. The ledger is DIR/privacy_ledger.json, "
            "sealed with DIR/ledger.secret (deployment: the SuperNode's state-dir; simulation: "
            "<data-root>/.fedmi-cache/<site>); back both up (docs/privacy.md)."
        ),
    )
    p.add_argument("--state-dir", type=Path, required=True, help="folder holding the ledger")
    p.add_argument("--epsilon-budget", type=float, default=None, help="budget (default: ledger's)")
    p.add_argument("--delta", type=float, default=None, help="δ (default: the ledger's)")
    p.add_argument("--accountant", choices=("rdp", "prv"), default="rdp", help="default rdp")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument(
        "--reset",
        action="store_true",
        help="archive the ledger and start from zero (a deliberate, logged act; needs --yes)",
    )
    p.add_argument(
        "--upgrade",
        action="store_true",
        help="seal a ledger of the old unsealed format (version 1) once; shows its spend "
        "first, needs --yes",
    )
    p.add_argument("--yes", action="store_true", help="confirm --reset or --upgrade")
    p.add_argument("--reason", default="reset by a person", help="why (kept in the ledger)")
    p.set_defaults(handler=_cmd_ledger)
