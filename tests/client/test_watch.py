"""``fedmi-site predict --watch``: new studies once, settled ones only, a restart resumes."""

from __future__ import annotations

import json
import logging
import os
import time

import pytest
import torch

from fedmi.client.cli import build_parser, main
from fedmi.client.model import pull
from fedmi.client.watch import STATE_FILE, watch
from fedmi.server.package import PUBLIC_FILE, write_model_package
from fedmi.shared.contract import array_record
from fedmi.shared.model import ModelSpec, build_model, federated_state_dict
from tests.client.ingest.helpers import write_pet
from tests.client.packages import test_card

TASK = "fdg-ad"


@pytest.fixture(scope="module")
def package(tmp_path_factory):
    root = tmp_path_factory.mktemp("watch-package")
    torch.manual_seed(3)
    model = build_model(ModelSpec(arch="regional"))
    card = test_card(model)
    run = root / "run"
    run.mkdir()
    path = write_model_package(run, card, array_record(federated_state_dict(model)))
    state = root / "state"
    pull(path, state, run / PUBLIC_FILE)
    return path, state


def _watcher(package, inbox, out, **kwargs):
    path, state = package
    kwargs.setdefault("settle", 0.0)
    return watch(path, state, inbox, out, interval=0.01, mc_passes=2, **kwargs)


def _reports(out):
    return sorted(p.name for p in out.glob("study-*.json"))


def test_a_new_study_is_processed_once_and_a_restart_resumes(package, tmp_path, caplog):
    inbox, out = tmp_path / "inbox", tmp_path / "out"
    write_pet(inbox / "study-a", "PA")
    watcher = _watcher(package, inbox, out)
    with caplog.at_level(logging.INFO, logger="fedmi.client.watch"):
        first = watcher.cycle()
    assert len(first) == 1 and first[0]["assessable"]
    assert _reports(out) == ["study-001.json"]
    assert (out / "study-001.pdf").is_file() and (out / "study-001.html").is_file()
    lines = [r.getMessage() for r in caplog.records if r.name == "fedmi.client.watch"]
    assert len(lines) == 1 and lines[0].startswith("study-001: ")
    assert "PA" not in lines[0] and first[0]["series_uid"] not in lines[0]
    assert str(inbox) not in lines[0]

    assert watcher.cycle() == []  # nothing new: nothing ingested again
    write_pet(inbox / "study-b", "PB")
    second = watcher.cycle()
    assert len(second) == 1 and second[0]["series_uid"] != first[0]["series_uid"]
    assert _reports(out) == ["study-001.json", "study-002.json"]
    state = json.loads((out / STATE_FILE).read_text())
    assert set(state["units"]) == {"study-a", "study-b"} and state["next_number"] == 3
    assert set(state["series"]) == {first[0]["series_uid"], second[0]["series_uid"]}

    # a restarted watcher repeats nothing
    again = _watcher(package, inbox, out)
    assert again.cycle() == [] and _reports(out) == ["study-001.json", "study-002.json"]
    # a series whose files change is processed again, as a new result
    changed = next(p for p in sorted((inbox / "study-a").rglob("*")) if p.is_file())
    t = time.time() - 100
    os.utime(changed, (t, t))
    redo = again.cycle()
    assert [r["series_uid"] for r in redo] == [first[0]["series_uid"]]
    assert _reports(out)[-1] == "study-003.json" and len(_reports(out)) == 3
    # a study folder that changes without changing its series (a stray extra file) is
    # looked at again, but no series is reported twice
    (inbox / "study-b" / "notes.txt").write_text("not DICOM")
    extra = again.cycle()
    assert all(r["series_uid"] != second[0]["series_uid"] for r in extra)


def test_a_study_still_arriving_waits_until_it_settles(package, tmp_path):
    inbox, out = tmp_path / "inbox", tmp_path / "out"
    write_pet(inbox / "late", "PL")  # written now: newer than --settle
    watcher = _watcher(package, inbox, out, settle=30.0)
    assert watcher.cycle() == [] and not _reports(out)
    assert watcher.cycle() == []  # unchanged, but not 30 s old yet
    watcher.clock = lambda: time.time() + 60  # 60 s on
    files = sorted(p for p in (inbox / "late").rglob("*") if p.is_file())
    os.utime(files[0], None)  # still being written: it changed since the last look
    assert watcher.cycle() == []
    watcher.clock = lambda: time.time() + 120
    done = watcher.cycle()  # unchanged since the last look, and old enough
    assert len(done) == 1 and _reports(out) == ["study-001.json"]


def test_the_command_line_runs_and_stops(package, tmp_path, capsys):
    path, state = package
    inbox, out = tmp_path / "inbox", tmp_path / "out"
    write_pet(inbox / "s1", "P1")
    write_pet(inbox / "s2", "P2", tracer="florbetapir")
    base = ["predict", "--state-dir", str(state), "--dicom", str(inbox), "--out", str(out)]
    args = ["--package", str(path), "--mc-passes", "2"]
    watch_args = ["--watch", "--interval", "0.01", "--settle", "0", "--max-cycles", "2"]
    assert main(base + args + watch_args) == 0
    records = [json.loads(p.read_text()) for p in sorted(out.glob("study-*.json"))]
    assert sorted(r["assessable"] for r in records) == [False, True]
    assert any(r.get("reason") == "wrong_tracer" for r in records)
    assert main(base + args + watch_args) == 0  # restarted: nothing new
    assert len(_reports(out)) == 2
    assert main(base + args + ["--interval", "5"]) == 2
    assert "--interval needs --watch" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("flag", "value"),
    [
        ("--interval", "0"),
        ("--interval", "-1"),
        ("--interval", "soon"),
        ("--interval", "inf"),
        ("--settle", "-5"),
        ("--settle", "nan"),
        ("--max-cycles", "0"),
    ],
)
def test_bad_values_are_refused_with_the_flag_named(flag, value, capsys):
    argv = ["predict", "--watch", "--dicom", "d", "--out", "o", "--state-dir", "s", flag, value]
    with pytest.raises(SystemExit) as exc:
        build_parser().parse_args(argv)
    assert exc.value.code == 2
    assert f"argument {flag}" in capsys.readouterr().err


def test_sigterm_stops_the_loop_cleanly(package, tmp_path):
    import signal
    import threading

    inbox, out = tmp_path / "inbox", tmp_path / "out"
    inbox.mkdir()
    watcher = _watcher(package, inbox, out)
    before = signal.getsignal(signal.SIGTERM)
    timer = threading.Timer(0.3, os.kill, (os.getpid(), signal.SIGTERM))
    timer.start()
    t0 = time.monotonic()
    try:
        assert watcher.run() == 0  # no --max-cycles: only the signal ends it
    finally:
        timer.cancel()
    assert time.monotonic() - t0 < 10 and watcher.stop.is_set()
    assert signal.getsignal(signal.SIGTERM) is before  # the handler is put back


def test_a_damaged_state_file_stops_the_watcher_naming_it_and_is_kept(package, tmp_path):
    out = tmp_path / "out"
    out.mkdir(mode=0o700)
    state_file = out / ".watch-state.json"
    state_file.write_text("{not json")
    (tmp_path / "inbox").mkdir()
    with pytest.raises(ValueError, match=r"\.watch-state\.json is unreadable.*move it away"):
        _watcher(package, tmp_path / "inbox", out)
    assert state_file.read_text() == "{not json"  # nothing overwritten
