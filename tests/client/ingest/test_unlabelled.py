"""Label-free ingest: studies without a label are ingested, kept apart, never trained on."""

from __future__ import annotations

from pathlib import Path

import pytest

from fedmi.client.cli import main
from fedmi.client.data import load_site_data
from fedmi.client.ingest.pipeline import ingest_site
from fedmi.client.ingest.report import load_accepted, load_unlabelled
from fedmi.shared.tasks import get_task
from tests.client.ingest.helpers import write_labels, write_pet

TASK = "fdg-ad"


@pytest.fixture(scope="module")
def partial(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Three patients, labels.csv lists two of them."""
    site = tmp_path_factory.mktemp("site")
    for pid in ("A1", "C1", "NEW"):
        write_pet(site / "dicom" / pid.lower(), pid)
    write_labels(site, {"A1": "AD", "C1": "CN"})
    state = tmp_path_factory.mktemp("state")
    ingest_site(site, TASK, state)
    return site, state


def test_unlabelled_series_is_ingested_and_kept_apart(partial) -> None:
    _, state = partial
    accepted, unlabelled = load_accepted(state), load_unlabelled(state)
    assert sorted(r["patient_id"] for r in accepted) == ["A1", "C1"]
    assert [r["patient_id"] for r in unlabelled] == ["NEW"]
    row = unlabelled[0]
    assert row["label"] is None and row["class_index"] is None
    assert Path(row["cached_path"]).is_file()


def test_training_ignores_unlabelled(partial) -> None:
    _, state = partial
    rows = load_accepted(state) + load_unlabelled(state)
    # even handed every row, the dataset keeps only labelled scans
    data = load_site_data(rows, get_task(TASK), seed=0)
    assert len(data) == 2 and sorted(data.patient_keys) == ["A1", "C1"]
    assert len(load_site_data(load_accepted(state), get_task(TASK), seed=0)) == 2


def test_labelling_later_moves_the_series_without_rereading(partial, tmp_path: Path) -> None:
    site, state = partial
    write_labels(site, {"A1": "AD", "C1": "CN", "NEW": "CN"})
    try:
        report = ingest_site(site, TASK, state)
        assert report.unlabelled == []
        assert report.summary["series_from_cache"] == 3
        assert "NEW" in {r["patient_id"] for r in report.accepted}
    finally:
        write_labels(site, {"A1": "AD", "C1": "CN"})
        ingest_site(site, TASK, state)


def test_no_labels_csv_at_all(tmp_path: Path, capsys) -> None:
    site = tmp_path / "site"
    write_pet(site / "dicom" / "x", "X1")
    rc = main(["ingest", "--site-dir", str(site), "--task", TASK, "--out", str(tmp_path / "o")])
    assert rc == 0
    assert "0 series accepted" in capsys.readouterr().out
    assert [r["patient_id"] for r in load_unlabelled(tmp_path / "o")] == ["X1"]
    assert load_accepted(tmp_path / "o") == []


def test_damaged_labels_csv_still_refuses(tmp_path: Path) -> None:
    site = tmp_path / "site"
    write_pet(site / "dicom" / "x", "X1")
    (site / "labels.csv").write_text("patient;diagnosis\nX1;AD\n")
    report = ingest_site(site, TASK, tmp_path / "o")
    assert report.unlabelled == [] and report.accepted == []
    assert report.summary["by_reason"] == {"unlabelled_patient": 1}
