"""fedmi-sim's bad-input paths: one line on stderr, exit code 2, nothing started."""

from __future__ import annotations

import re
import shutil

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


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    """A tiny federation written by `fedmi-sim generate --preset tiny` (never modified)."""
    root = tmp_path_factory.mktemp("cli") / "data"
    assert main(["generate", "--out", str(root), "--preset", "tiny"]) == 0
    return root


def _files(root) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


@pytest.fixture
def no_flower(monkeypatch):
    """Fail the test if ingest or the simulation starts."""
    from fedmi.simulations import federated, runner

    def started(*_a, **_k):
        raise AssertionError("nothing may start before the configuration is valid")

    monkeypatch.setattr(runner, "ingest_all", started)
    monkeypatch.setattr(federated, "run_isolated", started)


def test_an_unknown_config_key_stops_run_with_the_close_match(
    tiny_data, tmp_path, capsys, no_flower
):
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    data_before = _files(tiny_data)
    args = ["run", "--data", str(tiny_data), "--out", str(out), "--config", "modle=cnn"]
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["error: --config: `modle` is not a run config setting; did you mean `model`?"]
    assert _files(out) == ["notes.txt"]  # no report.json, no checkpoints
    assert _files(tiny_data) == data_before  # no cache, no ledger


@pytest.mark.parametrize(
    ("item", "message"),
    [
        ("num-server-rounds=many", r"`num-server-rounds` must be a whole number \(at least 1\)"),
        ("sim-default-dp=maybe", r'`sim-default-dp` must be one of "", "on", "off"'),
    ],
)
def test_a_config_value_of_the_wrong_type_names_the_key(item, message, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["run", "--out", str(out), "--config", item]) == 2
    assert re.search(message, capsys.readouterr().err)
    assert not out.exists()  # nothing generated


def test_compare_validates_its_config_before_generating(tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["compare", "--out", str(out), "--config", "modle=cnn"]) == 2
    assert "did you mean `model`?" in capsys.readouterr().err
    assert not out.exists()


def test_a_bad_site_toml_stops_the_run_before_training(tiny_data, tmp_path, capsys, no_flower):
    data = tmp_path / "data"
    shutil.copytree(tiny_data, data)
    bad = data / "site-b" / "site.toml"
    bad.write_text(bad.read_text().replace("[privacy]\n", "[privacy]\nepsilom = 1\n"))
    data_before = _files(data)
    out = tmp_path / "out"
    assert main(["run", "--data", str(data), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and re.fullmatch(
        rf"error: {re.escape(str(bad.resolve()))}: `epsilom` is not a setting of \[privacy\]; "
        r"did you mean `epsilon`\?",
        err[0],
    ), err
    assert _files(data) == data_before  # no ingest cache, no privacy ledger
    assert not out.exists()  # nothing written: not even the run folder


def test_a_failed_run_exits_non_zero_with_its_reasons(capsys):
    """What `fedmi-sim run` does once the runner reads a report whose outcome is failed
    (the runner calls check_outcome after writing it; see the fake-grid federation tests
    for the run that produces such a report)."""
    from fedmi.server.federation.run import check_outcome
    from fedmi.simulations.cli import _guarded

    report = {"outcome": {"status": "failed", "reasons": ["no update was aggregated"]}}
    assert _guarded(lambda: check_outcome(report)) == 1
    assert "no update was aggregated" in capsys.readouterr().err
    assert _guarded(lambda: check_outcome({"outcome": {"status": "ok", "reasons": []}})) == 0
