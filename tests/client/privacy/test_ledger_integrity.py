"""Ledger integrity: sealed, the site's own, one writer at a time, and never reset silently.

Each test plays what someone at the site (or a second process) could do to the ledger file:
edit the spend and recompute the old plain checksum, copy another site's ledger, lose or
expose the secret, charge from two processes at once, hold the lock, or keep an old ledger.
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import shutil
import threading

import pytest

from fedmi.client.cli import main as site_cli
from fedmi.client.privacy import lock as ledger_lock_module
from fedmi.client.privacy.ledger import LEDGER_FILE, MARKER_FILE, LedgerError, PrivacyLedger
from fedmi.client.privacy.lock import ledger_lock
from fedmi.client.privacy.rounds import private_round
from fedmi.client.privacy.seal import SECRET_FILE
from fedmi.client.privacy.settings import PrivacySettings
from fedmi.client.training.loop import TrainSettings
from tests.client.privacy.helpers import fake_site, tiny_data, tiny_model
from tests.client.privacy.ledger_race import charge_many, report_charges

TRAIN = TrainSettings(
    epochs=1, batch_size=4, seed=1, augment=False, learning_rate=1e-3, optimizer="adamw"
)
# room for training after the test charges and the run's reserved release share
SETTINGS = PrivacySettings(epsilon=8.0)


def _round(site, server_round=1, run_id="run-1", settings=SETTINGS):
    x, y = tiny_data(12)
    return private_round(
        site,
        settings,
        tiny_model(),
        x,
        y,
        TRAIN,
        run_id=run_id,
        server_round=server_round,
        planned_rounds=4,
    )


def _spend(site, epsilon: float = 1.5) -> None:
    """A charge as a DP round writes it (without training: the refusals are the point)."""
    with PrivacyLedger.transaction(site.state_dir, site_id=site.site_id) as ledger:
        ledger.set_budget(SETTINGS.epsilon, SETTINGS.delta)
        ledger.charge(
            run_id="run-1",
            server_round=1,
            noise_multiplier=1.2,
            sample_rate=1 / 3,
            steps=3,
            max_grad_norm=1.0,
            delta=SETTINGS.delta,
            epsilon=epsilon,
        )


def _plain_sha256(body: dict) -> str:
    """The version-1 checksum: SHA-256 of the canonical JSON of the body (no key)."""
    return hashlib.sha256(
        json.dumps(body, sort_keys=True, separators=(",", ":")).encode()
    ).hexdigest()


def _refused(site, path, before: bytes | None, capsys, needle: str, cli: int = 3) -> None:
    """The ledger is refused by the site, named in the message, and left as it was; the
    CLI (which does not know the site) refuses it too, or shows whose it is (``cli`` 0)."""
    with pytest.raises(LedgerError, match=needle) as err:
        PrivacyLedger.open(site.state_dir, site_id=site.site_id)
    assert str(site.state_dir) in str(err.value)
    out = _round(site, server_round=2)
    assert out.status == "ledger-error" and out.result is None and out.metrics == {}
    assert site_cli(["ledger", "--state-dir", str(site.state_dir)]) == cli
    assert (needle if cli else "of site site-a,") in capsys.readouterr().out
    assert (path.read_bytes() if path.exists() else None) == before


@pytest.mark.parametrize("forgery", ["recomputed-checksum", "downgraded-to-version-1"])
def test_an_edited_spend_with_a_recomputed_checksum_is_refused(tmp_path, capsys, forgery):
    site = fake_site(tmp_path)
    _spend(site)
    path = site.state_dir / LEDGER_FILE
    doc = json.loads(path.read_text())
    for charge in doc["body"]["charges"]:  # "we never spent anything"
        charge["epsilon"], charge["steps"] = 0.0, 0
    if forgery == "recomputed-checksum":  # the old integrity check, recomputed by hand
        doc["sha256"] = doc["hmac_sha256"] = _plain_sha256(doc["body"])
        needle = "fails its seal"
    else:  # rewritten in the old, unkeyed format that the site used to accept
        doc = {"format": doc["format"], "version": 1, "sha256": _plain_sha256(doc["body"])}
        doc["body"] = json.loads(path.read_text())["body"]
        doc["body"]["charges"] = []
        doc["sha256"] = _plain_sha256(doc["body"])
        needle = "old unsealed format"
    path.write_text(json.dumps(doc))
    _refused(site, path, path.read_bytes(), capsys, needle)


def test_another_sites_ledger_is_refused(tmp_path, capsys):
    site_a, site_b = fake_site(tmp_path, "site-a"), fake_site(tmp_path, "site-b")
    _spend(site_a)
    # the whole folder copied (ledger, marker and the secret that seals it)
    shutil.copytree(site_a.state_dir, site_b.state_dir)
    path = site_b.state_dir / LEDGER_FILE
    _refused(site_b, path, path.read_bytes(), capsys, "ledger of site 'site-a'", cli=0)
    # only the ledger file copied over site-b's own: sealed with another secret
    shutil.rmtree(site_b.state_dir)
    _spend(site_b)
    (site_b.state_dir / MARKER_FILE).unlink()
    shutil.copy(site_a.state_dir / LEDGER_FILE, path)
    _refused(site_b, path, path.read_bytes(), capsys, "sealed with another secret")


def test_a_missing_or_exposed_secret_refuses_and_is_never_made_anew(tmp_path, capsys):
    site = fake_site(tmp_path)
    _spend(site)
    path, secret = site.state_dir / LEDGER_FILE, site.state_dir / SECRET_FILE
    kept = secret.read_bytes()
    secret.unlink()
    _refused(site, path, path.read_bytes(), capsys, "ledger.secret is missing")
    assert not secret.exists()  # a new secret could not vouch for the old spend
    secret.write_bytes(kept)
    secret.chmod(0o644)
    _refused(site, path, path.read_bytes(), capsys, "readable by other users")
    secret.chmod(0o600)
    assert _round(site, server_round=2).status == "ok"
    # deleting the ledger and its marker does not restart at zero while the secret is there
    path.unlink()
    (site.state_dir / MARKER_FILE).unlink()
    _refused(site, path, None, capsys, "ledger.secret shows one was kept")


def test_charges_from_threads_at_once_are_all_kept(tmp_path):
    folder = tmp_path / "ledger"
    PrivacyLedger.open(folder, site_id="site-a")
    start = threading.Event()
    done: list[int] = []
    workers = [
        threading.Thread(target=lambda: done.append(charge_many(str(folder), 15, True, start)))
        for _ in range(3)
    ]
    for w in workers:
        w.start()
    start.set()
    for w in workers:
        w.join(60)
    charges = PrivacyLedger.open(folder, site_id="site-a").body["charges"]
    assert done == [15, 15, 15] and len(charges) == 45
    # every charge saw every earlier one: the counts it recorded are exactly 1..45
    assert sorted(c["epsilon"] for c in charges) == [float(i) for i in range(1, 46)]


def _race(folder, n: int, locked: bool) -> list[int]:
    ctx = multiprocessing.get_context("spawn")
    start, results = ctx.Event(), ctx.Queue()
    procs = [
        ctx.Process(target=report_charges, args=(str(folder), n, locked, start, results))
        for _ in range(2)
    ]
    for p in procs:
        p.start()
    start.set()
    written = [results.get(timeout=120) for _ in procs]
    for p in procs:
        p.join(30)
        assert p.exitcode == 0
    return written


@pytest.mark.slow
def test_two_processes_charging_at_once_lose_no_charge(tmp_path):
    n = 20
    locked = tmp_path / "locked"
    PrivacyLedger.open(locked, site_id="site-a")
    assert _race(locked, n, locked=True) == [n, n]
    charges = PrivacyLedger.open(locked).body["charges"]
    assert len(charges) == 2 * n
    assert sorted(c["epsilon"] for c in charges) == [float(i) for i in range(1, 2 * n + 1)]
    # without the transaction a concurrent write is refused, never silently overwritten
    unlocked = tmp_path / "unlocked"
    PrivacyLedger.open(unlocked, site_id="site-a")
    written = _race(unlocked, n, locked=False)
    assert len(PrivacyLedger.open(unlocked).body["charges"]) == sum(written)


def test_a_write_outside_a_transaction_never_overwrites_a_newer_ledger(tmp_path):
    folder = tmp_path / "ledger"
    first = PrivacyLedger.open(folder, site_id="site-a")
    second = PrivacyLedger.open(folder, site_id="site-a")
    charge = dict(
        run_id="r",
        server_round=1,
        noise_multiplier=1.0,
        sample_rate=0.1,
        steps=1,
        max_grad_norm=1.0,
        delta=1e-5,
        epsilon=1.0,
    )
    first.charge(**charge)
    with pytest.raises(LedgerError, match="changed by another process"):
        second.charge(**charge)
    assert len(PrivacyLedger.open(folder).body["charges"]) == 1


def test_a_held_lock_refuses_the_round_after_the_timeout(tmp_path, monkeypatch):
    site = fake_site(tmp_path)
    _spend(site)
    monkeypatch.setattr(ledger_lock_module, "LOCK_TIMEOUT", 0.3)
    before = (site.state_dir / LEDGER_FILE).read_bytes()
    with ledger_lock(site.state_dir, timeout=1):  # another process's charge in progress
        out = _round(site, server_round=2)
    assert out.status == "ledger-error" and out.result is None
    assert (site.state_dir / LEDGER_FILE).read_bytes() == before
    assert _round(site, server_round=2).status == "ok"


def _as_version_1(site) -> dict:
    """Turn the site's ledger into one of the old format (as fedmi wrote it before)."""
    path = site.state_dir / LEDGER_FILE
    body = json.loads(path.read_text())["body"]
    for key in ("revision", "upgrades"):
        body.pop(key)
    path.write_text(
        json.dumps(
            {
                "format": "fedmi-privacy-ledger",
                "version": 1,
                "sha256": _plain_sha256(body),
                "body": body,
            }
        )
    )
    (site.state_dir / SECRET_FILE).unlink()
    return body


def test_an_old_ledger_is_refused_until_the_operator_seals_it(tmp_path, capsys):
    site = fake_site(tmp_path)
    _spend(site)
    body = _as_version_1(site)
    path = site.state_dir / LEDGER_FILE
    before = path.read_bytes()
    assert _round(site, server_round=2).status == "ledger-error"
    cli = ["ledger", "--state-dir", str(site.state_dir), "--upgrade"]
    assert site_cli(cli) == 2  # shows the spend, changes nothing without --yes
    assert "ε = " in capsys.readouterr().out and path.read_bytes() == before
    assert site_cli([*cli, "--yes"]) == 0
    kept = list(site.state_dir.glob("privacy_ledger.*.v1.json"))
    assert len(kept) == 1 and kept[0].read_bytes() == before
    assert kept[0].stat().st_mode & 0o777 == 0o600
    sealed = PrivacyLedger.open(site.state_dir, site_id="site-a")
    assert sealed.body["charges"] == body["charges"] and sealed.body["upgrades"]
    assert (site.state_dir / SECRET_FILE).stat().st_mode & 0o777 == 0o600
    assert _round(site, server_round=2).status == "ok"
    assert site_cli([*cli, "--yes"]) == 3  # already sealed


def test_an_old_ledger_that_fails_its_checksum_cannot_be_sealed(tmp_path):
    site = fake_site(tmp_path)
    _spend(site)
    _as_version_1(site)
    path = site.state_dir / LEDGER_FILE
    doc = json.loads(path.read_text())
    doc["body"]["charges"] = []  # edited without recomputing the checksum
    path.write_text(json.dumps(doc))
    cli = ["ledger", "--state-dir", str(site.state_dir), "--upgrade", "--yes"]
    assert site_cli(cli) == 3
    assert json.loads(path.read_text())["version"] == 1


def test_a_reset_after_a_lost_secret_starts_a_sealed_empty_ledger(tmp_path):
    site = fake_site(tmp_path)
    _spend(site)
    (site.state_dir / SECRET_FILE).unlink()
    assert site_cli(["ledger", "--state-dir", str(site.state_dir), "--reset", "--yes"]) == 0
    fresh = PrivacyLedger.open(site.state_dir)
    assert fresh.history() == [] and fresh.body["resets"][0]["previous_epsilon"] is None
    assert fresh.body["site_id"] == ""  # unverifiable: claimed by the next site to open it
    _spend(site)
    assert PrivacyLedger.open(site.state_dir).body["site_id"] == "site-a"
    assert len(list(site.state_dir.glob("privacy_ledger.*.reset.json"))) == 1
