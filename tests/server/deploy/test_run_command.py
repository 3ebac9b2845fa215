"""``fedmi-server run`` exits non-zero unless the run wrote its report and did its job."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from fedmi.server import cli
from fedmi.server.deploy import cli as deploy_cli


def _flower_run_that(monkeypatch: pytest.MonkeyPatch, code: str) -> None:
    """``flwr run`` replaced by a real process that runs ``code`` and exits."""
    monkeypatch.setattr(deploy_cli, "run_command", lambda *a, **k: [sys.executable, "-c", code])


def test_a_run_that_wrote_no_report_exits_non_zero(monkeypatch, tmp_path: Path, capsys):
    _flower_run_that(monkeypatch, "raise SystemExit(0)")
    assert cli.main(["run", "--out", str(tmp_path / "run")]) == 1
    assert "the run ended without" in capsys.readouterr().err


def test_a_failed_run_exits_non_zero_with_its_reasons(monkeypatch, tmp_path: Path, capsys):
    out = tmp_path / "run"
    doc = {"outcome": {"status": "failed", "reasons": ["no site was evaluated"]}}
    write = f"open({str(out / 'report.json')!r}, 'w').write({json.dumps(json.dumps(doc))})"
    _flower_run_that(monkeypatch, write)
    assert cli.main(["run", "--out", str(out)]) == 1
    assert "the run failed: no site was evaluated" in capsys.readouterr().err


def test_flowers_own_failure_code_is_kept(monkeypatch, tmp_path: Path):
    _flower_run_that(monkeypatch, "raise SystemExit(3)")
    assert cli.main(["run", "--out", str(tmp_path / "run")]) == 3
