"""The privacy ledger: spend accumulates across rounds, runs and restarts; the site refuses
at its budget; a corrupt or missing ledger is never silently reset to zero."""

from __future__ import annotations

import json

import pytest

from fedmi.client.cli import main as site_cli
from fedmi.client.privacy import cli as ledger_cli
from fedmi.client.privacy.accounting import epsilon_of
from fedmi.client.privacy.ledger import LEDGER_FILE, MARKER_FILE, LedgerError, PrivacyLedger
from fedmi.client.privacy.lock import LOCK_FILE
from fedmi.client.privacy.release import reserved_releases
from fedmi.client.privacy.rounds import private_round
from fedmi.client.privacy.seal import SECRET_FILE
from fedmi.client.privacy.settings import PrivacyConfigError, PrivacySettings, resolve_privacy
from fedmi.client.training.loop import TrainSettings
from tests.client.privacy.helpers import fake_site, tiny_data, tiny_model

TRAIN = TrainSettings(
    epochs=1, batch_size=4, seed=1, augment=False, learning_rate=1e-3, optimizer="adamw"
)


def _round(site, settings, run_id, server_round, planned):
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
        planned_rounds=planned,
    )


def test_spend_accumulates_across_rounds_restarts_and_runs(tmp_path):
    site = fake_site(tmp_path)
    settings = PrivacySettings(epsilon=4.0, delta=1e-5)
    eps = []
    for r in (1, 2):
        out = _round(site, settings, "run-1", r, planned=3)
        assert out.status == "ok" and out.metrics["dp-steps"] == 3
        eps.append(out.metrics["epsilon"])
    # a "restart": nothing in memory, the ledger is read back from disk
    reloaded = PrivacyLedger.open(site.state_dir)
    assert reloaded.history() == [(out.metrics["noise-multiplier"], 1 / 3, 3)] * 2
    assert epsilon_of(reloaded.history(), 1e-5) == pytest.approx(eps[-1])
    out3 = _round(site, settings, "run-1", 3, planned=3)
    assert out3.metrics["noise-multiplier"] == out.metrics["noise-multiplier"]  # plan kept
    eps.append(out3.metrics["epsilon"])
    assert eps[0] < eps[1] < eps[2] < 4.0
    # the run was planned to use the budget: training plus the run's reserved releases
    ledger = PrivacyLedger.open(site.state_dir)
    reserved = reserved_releases(ledger, settings, site.role, "run-1")
    assert len(reserved) == 1 and reserved[0][1:] == (1.0, 1)
    assert epsilon_of([*ledger.history(), *reserved], 1e-5) == pytest.approx(4.0, abs=0.02)
    # a new run on the same dataset finds the budget spent
    new_run = _round(site, settings, "run-2", 1, planned=3)
    assert new_run.status == "budget-exhausted" and new_run.result is None
    assert new_run.metrics["epsilon"] == pytest.approx(eps[2])


def test_a_later_run_gets_only_what_is_left(tmp_path):
    site = fake_site(tmp_path)
    _round(site, PrivacySettings(epsilon=2.0), "run-1", 1, planned=1)
    bigger = PrivacySettings(epsilon=5.0)  # the site raised its budget
    out = _round(site, bigger, "run-2", 1, planned=2)
    assert out.status == "ok"
    second = _round(site, bigger, "run-2", 2, planned=2)
    ledger = PrivacyLedger.open(site.state_dir)
    reserved = reserved_releases(ledger, bigger, site.role, "run-2")
    planned = epsilon_of([*ledger.history(), *reserved], 1e-5)
    assert second.metrics["epsilon"] < planned == pytest.approx(5.0, abs=0.02)
    summary = ledger_cli.ledger_summary(PrivacyLedger.open(site.state_dir))
    assert [r["run_id"] for r in summary["runs"]] == ["run-1", "run-2"]
    assert summary["runs"][0]["epsilon_run"] < 2.0  # run 1 left its release share unused
    assert summary["epsilon_remaining"] == pytest.approx(5.0 - second.metrics["epsilon"], abs=0.02)


def test_refuses_a_round_beyond_the_plan_at_the_budget(tmp_path):
    site = fake_site(tmp_path)
    settings = PrivacySettings(epsilon=3.0)
    assert _round(site, settings, "run-1", 1, planned=1).status == "ok"
    steps_before = PrivacyLedger.open(site.state_dir).history()
    out = _round(site, settings, "run-1", 2, planned=1)
    assert out.status == "budget-exhausted"
    assert PrivacyLedger.open(site.state_dir).history() == steps_before  # nothing charged


@pytest.mark.parametrize("damage", ["edit", "garbage", "delete"])
def test_a_damaged_or_missing_ledger_refuses_and_never_resets(tmp_path, damage):
    site = fake_site(tmp_path)
    settings = PrivacySettings(epsilon=4.0)
    assert _round(site, settings, "run-1", 1, planned=4).status == "ok"
    path = site.state_dir / LEDGER_FILE
    if damage == "edit":  # someone lowers the spend by hand
        doc = json.loads(path.read_text())
        doc["body"]["charges"][0]["steps"] = 0
        path.write_text(json.dumps(doc))
    elif damage == "garbage":
        path.write_bytes(path.read_bytes()[:50])
    else:
        path.unlink()
    before = path.read_bytes() if path.exists() else None
    with pytest.raises(LedgerError):
        PrivacyLedger.open(site.state_dir)
    out = _round(site, settings, "run-1", 2, planned=4)
    assert out.status == "ledger-error" and out.result is None
    assert (path.read_bytes() if path.exists() else None) == before  # left for a person
    # the CLI says so too, and a deliberate reset archives what was there
    assert site_cli(["ledger", "--state-dir", str(site.state_dir)]) == 3
    assert site_cli(["ledger", "--state-dir", str(site.state_dir), "--reset"]) == 2
    assert site_cli(["ledger", "--state-dir", str(site.state_dir), "--reset", "--yes"]) == 0
    fresh = PrivacyLedger.open(site.state_dir)
    assert fresh.history() == [] and fresh.body["resets"]
    assert _round(site, settings, "run-1", 2, planned=4).status == "ok"


def test_writes_are_atomic_sealed_and_private(tmp_path):
    site = fake_site(tmp_path)
    _round(site, PrivacySettings(), "run-1", 1, planned=2)
    files = sorted(p.name for p in site.state_dir.iterdir())
    # no temporary file left behind; the seal's secret and the lock file beside the ledger
    assert files == sorted([LEDGER_FILE, MARKER_FILE, SECRET_FILE, LOCK_FILE])
    for name in files:
        assert (site.state_dir / name).stat().st_mode & 0o777 == 0o600, name
    for folder in (site.state_dir, site.state_dir.parent):  # both created by the ledger
        assert folder.stat().st_mode & 0o777 == 0o700
    doc = json.loads((site.state_dir / LEDGER_FILE).read_text())
    assert doc["format"] == "fedmi-privacy-ledger" and doc["version"] == 2
    assert len(doc["hmac_sha256"]) == 64 and "sha256" not in doc
    assert doc["body"]["site_id"] == "site-a" and doc["body"]["revision"] >= 2
    charge = doc["body"]["charges"][0]
    assert {"run_id", "round", "noise_multiplier", "sample_rate", "steps", "epsilon"} <= set(charge)


def test_cli_reports_spend_per_run(tmp_path, capsys):
    site = fake_site(tmp_path)
    _round(site, PrivacySettings(epsilon=3.0), "run-7", 1, planned=2)
    assert site_cli(["ledger", "--state-dir", str(site.state_dir)]) == 0
    out = capsys.readouterr().out
    assert "run-7" in out and "remaining" in out and "of 3" in out and "site-a" in out
    assert site_cli(["ledger", "--state-dir", str(tmp_path / "none")]) == 1


def test_privacy_settings_come_from_the_site(tmp_path):
    site = fake_site(tmp_path)
    sim = {"partition-id": 0}
    assert resolve_privacy(site, {}, {}) == PrivacySettings()  # on by default
    assert resolve_privacy(site, sim, {"sim-default-epsilon": 3}).epsilon == 3.0
    (site.data_dir / "site.toml").write_text(
        '[site]\nrole = "train"\n[privacy]\nepsilon = 2.5\ndelta = 1e-6\n[truth]\nx = [broken\n'
    )
    got = resolve_privacy(site, sim, {"sim-default-epsilon": 3, "sim-ledger-root": "/x"})
    assert (got.dp, got.epsilon, got.delta) == (True, 2.5, 1e-6)  # the site's own wins
    assert str(got.ledger_dir) == f"/x/{site.data_dir.name}"
    assert resolve_privacy(site, sim, {}).ledger_dir == site.cache_dir
    node = {"data-dir": str(site.data_dir), "dp": "off", "epsilon": 1}
    assert resolve_privacy(site, node, {"sim-default-epsilon": 9}).dp is False
    for bad in ({"dp": "maybe"}, {"epsilon": -1}, {"delta": 2}):
        with pytest.raises(PrivacyConfigError):
            resolve_privacy(site, {"data-dir": "d", **bad}, {})


def test_simulated_sites_take_the_runs_pretraining_share_unless_they_set_their_own(tmp_path):
    """``sim-default-pretrain-share`` stands in for a simulated site's ``[privacy]
    pretrain-share`` (0: the built-in share); the site's own value and its SuperNode's win;
    a deployed site never reads it; a share outside [0, 1] or a text is refused, named."""
    from fedmi.client.site.config import DEFAULT_PRETRAIN_SHARE
    from fedmi.shared.run_settings import RUN_CONFIG

    site = fake_site(tmp_path)
    sim = {"partition-id": 0}
    assert resolve_privacy(site, sim, {}).pretrain_share == DEFAULT_PRETRAIN_SHARE
    run = {"sim-default-pretrain-share": 0.8}
    assert resolve_privacy(site, sim, run).pretrain_share == 0.8
    assert resolve_privacy(site, sim, {"sim-default-pretrain-share": 0}).pretrain_share == (
        DEFAULT_PRETRAIN_SHARE
    )
    deployed = {"data-dir": str(site.data_dir)}
    assert resolve_privacy(site, deployed, run).pretrain_share == DEFAULT_PRETRAIN_SHARE
    assert resolve_privacy(site, {**sim, "pretrain-share": 0.5}, run).pretrain_share == 0.5
    (site.data_dir / "site.toml").write_text(
        '[site]\nrole = "train"\n[privacy]\npretrain-share = 0.2\n'
    )
    assert resolve_privacy(site, sim, run).pretrain_share == 0.2
    for bad in (1.5, -0.1, "0.8"):
        with pytest.raises(PrivacyConfigError, match="sim-default-pretrain-share"):
            resolve_privacy(site, sim, {"sim-default-pretrain-share": bad})
    # the setting's text names the built-in share it stands in for
    doc = RUN_CONFIG.setting("sim-default-pretrain-share").doc
    assert f"built-in {DEFAULT_PRETRAIN_SHARE}" in doc
