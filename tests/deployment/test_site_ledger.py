"""A deployed site's privacy ledger and files, through fedmi's own commands and processes.

Separate processes, as at a hospital: ``fedmi-site keygen`` and ``fedmi-site ingest``
write the site's files; two ClientApp processes of the same site (two SuperNodes or two
runs on one state folder) train DP rounds at the same moment; then someone edits the spend
and recomputes the old plain checksum. Checked: every charge of both processes is in the
ledger, each computed from all earlier ones (none lost, none on a stale history), the
budget is never exceeded; the edit is refused by ``fedmi-site ledger`` and by the
ClientApp (nothing trained); every folder fedmi created is 0700 and every file 0600.
Processes are started by this test and waited for (or killed) by PID.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from fedmi.client.privacy.accounting import epsilon_of
from fedmi.client.privacy.ledger import LEDGER_FILE, PrivacyLedger

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
CHARGER = Path(__file__).with_name("site_charger.py")
ROUNDS = 3


def _env() -> dict[str, str]:
    path = os.pathsep.join(p for p in (os.environ.get("PYTHONPATH"), str(ROOT)) if p)
    return {
        **os.environ,
        "PYTHONPATH": path,
        "FLWR_TELEMETRY_ENABLED": "0",
        "FLWR_DISABLE_UPDATE_CHECK": "1",
    }


def _site_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "fedmi.client.cli", *args],
        cwd=ROOT,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def _charge_together(
    site: Path, state: Path, tmp: Path, runs: tuple[int, ...] = (101, 202), rounds: int = ROUNDS
) -> list[list[str]]:
    """ClientApp processes of the site (one per run), released together; their statuses."""
    go = tmp / "go"
    go.unlink(missing_ok=True)
    for marker in tmp.glob("round1-*"):  # the charger's after-round-1 barrier (see there)
        marker.unlink()
    env = {**_env(), "CHARGER_PEERS": str(len(runs))}
    procs = []
    for run_id in runs:
        out = tmp / f"run-{run_id}.json"
        cmd = [sys.executable, str(CHARGER), str(site), str(state), str(run_id)]
        procs.append(
            (
                subprocess.Popen(
                    [*cmd, str(rounds), str(go), str(out)], cwd=ROOT, env=env, text=True
                ),
                out,
            )
        )
    try:
        go.touch()
        for proc, _ in procs:
            assert proc.wait(timeout=400) == 0
    finally:
        for proc, _ in procs:
            if proc.poll() is None:
                proc.kill()
    return [json.loads(out.read_text()) for _, out in procs]


def _assert_private(*roots: Path) -> None:
    for root in roots:
        assert root.stat().st_mode & 0o777 == 0o700, root
        for folder, dirs, files in os.walk(root):
            for name in dirs:
                assert (Path(folder) / name).stat().st_mode & 0o777 == 0o700, name
            for name in files:
                assert (Path(folder) / name).stat().st_mode & 0o777 == 0o600, name


def test_concurrent_charges_are_exact_tamper_is_refused_and_files_private(tiny_fdg, tmp_path):
    site, state, keys = tiny_fdg / "site-a", tmp_path / "state", tmp_path / "keys"
    assert _site_cli("keygen", "--out", str(keys)).returncode == 0
    ingest = _site_cli(
        "ingest", "--site-dir", str(site), "--task", "fdg-ad", "--state-dir", str(state)
    )
    assert ingest.returncode == 0, ingest.stderr

    statuses = _charge_together(site, state, tmp_path)
    ok = sum(s == "ok" for run in statuses for s in run)
    assert all(run[0] == "ok" for run in statuses)  # both processes trained
    assert set(s for run in statuses for s in run) <= {"ok", "budget-exhausted"}
    ledger = PrivacyLedger.open(state, site_id="site-a")
    charges = ledger.body["charges"]
    assert len(charges) == ok  # every trained round is charged: no charge lost
    assert {c["run_id"] for c in charges} == {"101", "202"}
    budget = ledger.body["budget"]
    for i, c in enumerate(charges, 1):  # each charge was computed from every earlier one
        assert c["epsilon"] == pytest.approx(epsilon_of(ledger.history()[:i], budget["delta"]))
    assert charges[-1]["epsilon"] <= budget["epsilon"] * (1 + 1e-9)
    shown = _site_cli("ledger", "--state-dir", str(state), "--json")
    assert shown.returncode == 0
    assert json.loads(shown.stdout)["epsilon_spent"] == pytest.approx(charges[-1]["epsilon"])
    _assert_private(state, keys)

    # ε spent edited to 0 and the old plain checksum recomputed
    path = state / LEDGER_FILE
    doc = json.loads(path.read_text())
    for c in doc["body"]["charges"]:
        c["epsilon"], c["steps"] = 0.0, 0
    body = json.dumps(doc["body"], sort_keys=True, separators=(",", ":")).encode()
    doc["sha256"] = doc["hmac_sha256"] = hashlib.sha256(body).hexdigest()
    path.write_text(json.dumps(doc))
    tampered = path.read_bytes()
    refused = _site_cli("ledger", "--state-dir", str(state))
    assert refused.returncode == 3 and "fails its seal" in refused.stdout
    assert str(path) in refused.stdout
    again = _charge_together(site, state, tmp_path, runs=(303,), rounds=1)
    assert again == [["ledger-error"]]  # nothing trained
    assert path.read_bytes() == tampered
