"""``fedmi-server`` deployment subcommands: certs, start, stop, register, run, status.

Every command checks its inputs first and reports a problem as one line naming the file
or setting and the fix (exit status 2); Flower's own output is shown only when a Flower
command itself fails.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

from fedmi.server.deploy.certs import CertificateError, check_public_key, make_certificates
from fedmi.server.deploy.flower import (
    CONNECTION,
    DeploymentError,
    flower_env,
    list_nodes,
    list_runs,
    register_site,
    run_command,
    unregister_node,
)
from fedmi.server.deploy.processes import read_pid
from fedmi.server.deploy.superlink import (
    DEFAULT_PORT,
    PID_FILE,
    coordinator_state,
    start_superlink,
    stop_superlink,
)
from fedmi.server.federation.identity import (
    REGISTRY_FILE,
    RegistryError,
    add_site,
    read_registry,
    remove_node,
)
from fedmi.shared.config_schema import flower_pairs
from fedmi.shared.fingerprint import key_fingerprint
from fedmi.shared.run_config import RunConfig, RunConfigError


def _fail(message: str) -> int:
    print(f"fedmi-server: {message}", file=sys.stderr)
    return 2


def _certs(args: argparse.Namespace) -> int:
    try:
        paths = make_certificates(
            Path(args.out), list(args.address), days=args.days, overwrite=args.overwrite
        )
    except CertificateError as exc:
        return _fail(str(exc))
    print(f"CA certificate   {paths.ca_cert}   (give this file to every site)")
    print(f"CA key           {paths.ca_key}   (keep offline; never share)")
    print(f"server cert/key  {paths.server_cert}, {paths.server_key}")
    print(f"valid for: {', '.join(args.address)}")
    return 0


def _start(args: argparse.Namespace) -> int:
    try:
        result = start_superlink(
            Path(args.certs),
            Path(args.state),
            host=args.host,
            port=args.port,
            background=args.background,
        )
    except (CertificateError, DeploymentError) as exc:
        return _fail(str(exc))
    if args.background:
        print(
            f"SuperLink running (PID {result}); sites connect to {args.host}:{args.port} "
            f"(Fleet API only); Control on this host's loopback (`flwr` connection "
            f"{CONNECTION}); logs and PID files in {Path(args.state).resolve()}"
        )
        return 0
    return int(result)


def _stop(args: argparse.Namespace) -> int:
    pid = stop_superlink(Path(args.state))
    print(f"stopped the SuperLink (PID {pid})" if pid else "no SuperLink was running")
    return 0


def _register(args: argparse.Namespace) -> int:
    try:
        check_public_key(Path(args.key))
        fingerprint = key_fingerprint(Path(args.key).read_text())
        registry = coordinator_state(args.state) / REGISTRY_FILE
        taken = [n for n, e in read_registry(registry).items() if e["site"] == args.site]
        if taken:
            raise RegistryError(
                f"site {args.site!r} is already registered as node {taken[0]}: to rotate its "
                f"key, run `fedmi-server unregister --node {taken[0]}` first"
            )
        node = register_site(Path(args.key), args.connection)
        add_site(registry, int(node), args.site, fingerprint)
    except (CertificateError, DeploymentError, RegistryError, ValueError) as exc:
        return _fail(str(exc))
    print(f"registered {args.key} as node {node}, site {args.site}")
    print(f"key fingerprint {fingerprint}: confirm it with the site by telephone")
    return 0


def _approve(args: argparse.Namespace) -> int:
    from fedmi.shared.trust import TrustError, approve, installed_fab_hash

    try:
        state = coordinator_state(args.state)
        digest = approve(state, args.app)
    except (DeploymentError, TrustError) as exc:
        return _fail(str(exc))
    print(f"approved app {digest}: the coordinator will start its ServerApp")
    print(f"(the installed fedmi, {installed_fab_hash()}, is always approved)")
    return 0


def _unregister(args: argparse.Namespace) -> int:
    try:
        registry = coordinator_state(args.state) / REGISTRY_FILE
        unregister_node(args.node, args.connection)
        site = remove_node(registry, args.node)
    except (DeploymentError, RegistryError) as exc:
        return _fail(str(exc))
    print(f"unregistered node {args.node}" + (f" (site {site})" if site else ""))
    return 0


def check_run_config(text: str) -> dict[str, object]:
    """``--run-config`` (Flower's ``key=value`` syntax) parsed and validated before submitting.

    Flower's Control API refuses unknown keys too, but only after the app is packed and
    sent, and without naming the close match.

    Raises
    ------
    RunConfigError
        Not Flower's syntax, an unknown key (with the close match), a wrong type or a
        value out of range.
    """
    values = flower_pairs(text, "--run-config", RunConfigError)
    if values:
        RunConfig.from_mapping(values, source="--run-config")
    return values


def _run(args: argparse.Namespace) -> int:
    try:
        check_run_config(args.run_config or "")
    except RunConfigError as exc:
        return _fail(str(exc))
    try:
        cmd = run_command(
            Path(args.out),
            args.run_config or "",
            app=Path(args.app) if args.app else None,
            connection=args.connection,
        )
    except DeploymentError as exc:
        return _fail(str(exc))
    out = Path(args.out).expanduser().resolve()
    out.mkdir(parents=True, exist_ok=True)
    if (out / "resume.json").exists():
        print(f"{out} holds an interrupted run: it resumes after its last completed round")
    code = subprocess.call(cmd, env=flower_env())
    report = out / "report.json"
    failed = failed_outcome(report)
    if failed:
        print(f"fedmi-server: the run failed: {'; '.join(failed)}", file=sys.stderr)
        return code or 1
    if code == 0 and report.is_file():
        from fedmi.server.report.document import summary_table  # torch: only when needed

        doc = json.loads(report.read_text())
        print(f"task {doc['task']}, method {doc['method']}")
        print(summary_table(doc))
        print(f"report: {report} and {out / 'report.html'}")
    elif code == 0:  # Flower said the run ended, but it wrote no report: it did not do its job
        print(
            f"fedmi-server: the run ended without {report}: see `flwr log` and the SuperLink log",
            file=sys.stderr,
        )
        return 1
    return code


def failed_outcome(report_path: Path) -> list[str]:
    """The reasons of a finished run's report whose ``outcome`` is ``failed``, else ``[]``."""
    try:
        outcome = json.loads(report_path.read_text()).get("outcome") or {}
    except (OSError, ValueError):
        return []
    return list(outcome.get("reasons") or ["unknown"]) if outcome.get("status") == "failed" else []


def last_round(out_dir: Path) -> tuple[int | None, list[dict]]:
    """The last completed round in a run folder and its per-round ``missing`` lists."""
    rounds: list[dict] = []
    last = None
    for name in ("resume.json", "report.json"):
        path = out_dir / name
        if not path.is_file():
            continue
        try:
            doc = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            continue
        got = [r for r in doc.get("rounds", []) if isinstance(r, dict)]
        if got and (last is None or max(r["round"] for r in got) >= last):
            rounds = got
            last = max(r["round"] for r in got)
    return last, rounds


def _status(args: argparse.Namespace) -> int:
    code = 0
    try:
        state = coordinator_state(args.state)
    except DeploymentError:
        state = None
    if state is not None and read_pid(state / PID_FILE) is None:
        print(f"no SuperLink is running (state folder {state}): `fedmi-server start`")
        code = 1
    try:
        if code:
            raise DeploymentError("")
        names = (
            {n: e["site"] for n, e in read_registry(state / REGISTRY_FILE).items()} if state else {}
        )
        nodes = list_nodes(args.connection)
        online = [n for n in nodes if n.get("status") == "online"]
        print(f"sites: {len(nodes)} registered, {len(online)} online")
        for n in nodes:
            site = names.get(int(n.get("node-id", 0) or 0), "not in the site registry")
            print(f"  node {n.get('node-id')} ({site}): {n.get('status')}")
        runs = list_runs(args.connection)
        print(f"runs: {len(runs)}")
        for r in runs:
            print(f"  run {r.get('run-id')}: {r.get('status')} ({r.get('fab-id', '')})")
    except (DeploymentError, RegistryError) as exc:
        if str(exc):
            print(f"fedmi-server: {exc} (is the SuperLink running? `fedmi-server start`)")
            code = 2
    if args.out:
        out = Path(args.out)
        last, rounds = last_round(out)
        if last is None:
            print(f"{out}: no completed round yet")
        else:
            done = (out / "final_model.npz").exists()
            print(f"{out}: last completed round {last}{' (run finished)' if done else ''}")
            for r in rounds:
                for m in r.get("missing", []):
                    print(
                        f"  round {r['round']}: {m['site_id']} missing ({m['stage']}: {m['reason']})"
                    )
    return code


def add_deploy_commands(sub: argparse._SubParsersAction) -> None:
    """Register the deployment subcommands on ``fedmi-server``'s parser."""
    p = sub.add_parser("certs", help="create the federation CA and the SuperLink certificate")
    p.add_argument("--out", required=True, help="folder for ca.crt, ca.key, server.pem, server.key")
    p.add_argument(
        "--address",
        action="append",
        required=True,
        help="IP or DNS name the sites use for the coordinator (repeat for several)",
    )
    p.add_argument("--days", type=int, default=825, help="validity in days (default 825)")
    p.add_argument("--overwrite", action="store_true", help="replace existing files")
    p.set_defaults(func=_certs)

    p = sub.add_parser("start", help="start the SuperLink (TLS, site authentication)")
    p.add_argument("--certs", required=True, help="folder written by `fedmi-server certs`")
    p.add_argument("--state", required=True, help="state folder (database, PID file, log)")
    p.add_argument("--port", type=int, default=DEFAULT_PORT, help="the one port (default 8000)")
    p.add_argument(
        "--host",
        default="127.0.0.1",
        help="interface to listen on (default 127.0.0.1; 0.0.0.0 for real sites)",
    )
    p.add_argument("--background", action="store_true", help="detach once the port is open")
    p.set_defaults(func=_start)

    p = sub.add_parser("stop", help="stop the SuperLink started with --state")
    p.add_argument("--state", required=True, help="the state folder given to `start`")
    p.set_defaults(func=_stop)

    p = sub.add_parser("register", help="allow a site's public key (site.pub) to connect")
    p.add_argument("--key", required=True, help="the site's site.pub")
    p.add_argument("--site", required=True, help="the site's pseudonym (its site-id)")
    p.add_argument("--state", type=Path, help="state folder (default: the last started)")
    p.add_argument("--connection", default=CONNECTION, help=argparse.SUPPRESS)
    p.set_defaults(func=_register)

    p = sub.add_parser("unregister", help="revoke a site's key (before registering a new one)")
    p.add_argument("--node", type=int, required=True, help="node id (`fedmi-server status`)")
    p.add_argument("--state", type=Path, help="state folder (default: the last started)")
    p.add_argument("--connection", default=CONNECTION, help=argparse.SUPPRESS)
    p.set_defaults(func=_unregister)

    p = sub.add_parser("approve", help="allow one more app (FAB file or SHA-256) as ServerApp")
    p.add_argument("app", help="a .fab file or its SHA-256 (64 hex digits)")
    p.add_argument("--state", type=Path, help="state folder (default: the last started)")
    p.set_defaults(func=_approve)

    p = sub.add_parser("run", help="run fedmi on the connected sites, outputs into --out")
    p.add_argument("--out", required=True, help="run folder (the same folder resumes a run)")
    p.add_argument("--run-config", default="", help="e.g. 'num-server-rounds=20 min-nodes=4'")
    p.add_argument("--app", help="fedmi source folder (default: this installation)")
    p.add_argument("--connection", default=CONNECTION, help=argparse.SUPPRESS)
    p.set_defaults(func=_run)

    p = sub.add_parser("status", help="sites online, runs, last completed round")
    p.add_argument("--out", help="a run folder to report on")
    p.add_argument("--state", type=Path, help="state folder (default: the last started)")
    p.add_argument("--connection", default=CONNECTION, help=argparse.SUPPRESS)
    p.set_defaults(func=_status)
