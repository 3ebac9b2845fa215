"""fedmi-sim's bad-input paths: one line on stderr, exit code 2, nothing started."""

from __future__ import annotations

import pytest

from fedmi.simulations.cli import main


@pytest.mark.parametrize("command", ["run", "compare"])
def test_a_missing_data_folder_is_named_with_the_fix(command, tmp_path, capsys):
    out = tmp_path / "out"
    assert main([command, "--data", str(tmp_path / "nowhere"), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "nowhere is not a folder" in err and "fedmi-sim generate" in err
    assert not out.exists()


def test_a_bad_run_setting_fails_before_any_work(tmp_path, capsys):
    (tmp_path / "data").mkdir()
    args = ["run", "--data", str(tmp_path / "data"), "--out", str(tmp_path / "out")]
    assert main([*args, "--config", "batch-size=-1"]) == 2
    assert "batch-size" in capsys.readouterr().err
