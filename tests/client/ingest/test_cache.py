"""Cache: an unchanged folder re-ingests without reading DICOM; a changed series is re-done."""

from __future__ import annotations

import json
import os
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from fedmi.client.cli import main
from fedmi.client.ingest.pipeline import ingest_site
from fedmi.client.ingest.report import load_accepted
from fedmi.shared.tasks import get_task
from tests.client.ingest.helpers import write_labels, write_pet


@pytest.fixture()
def site(tmp_path: Path) -> Path:
    site = tmp_path / "site"
    write_pet(site / "dicom" / "a", "P1")
    write_pet(site / "dicom" / "b", "P2", file_naming="uid")
    write_labels(site, {"P1": "CN", "P2": "MCI-stable"})
    (site / "site.toml").write_text('[site]\nsite-id = "site-x"\nrole = "train"\ntask = "fdg-ad"\n')
    return site


def test_reingest_hits_cache_and_changes_redo(site: Path, tmp_path: Path) -> None:
    state = tmp_path / "state"
    first = ingest_site(site, "fdg-ad", state)
    assert first.site_id == "site-x"
    assert first.summary["series_accepted"] == 2 and first.summary["files_read"] == 80
    assert not any(r["from_cache"] for r in first.accepted)

    again = ingest_site(site, "fdg-ad", state)
    assert again.summary["files_read"] == 0
    assert all(r["from_cache"] for r in again.accepted)
    assert [r["cached_path"] for r in again.accepted] == [r["cached_path"] for r in first.accepted]

    touched = next((site / "dicom" / "b").iterdir())
    st = touched.stat()
    os.utime(touched, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    third = ingest_site(site, "fdg-ad", state)
    assert third.summary["files_read"] == 1
    by_pid = {r["patient_id"]: r for r in third.accepted}
    assert by_pid["P1"]["from_cache"] and not by_pid["P2"]["from_cache"]
    cached = sorted(p.name for p in (state / "cache").glob("*.nii.gz"))
    assert len(cached) == 2  # the stale volume of the old P2 key was pruned


def test_cached_volume_and_loader(site: Path, tmp_path: Path) -> None:
    state = tmp_path / "state"
    ingest_site(site, "fdg-ad", state)
    rows = load_accepted(state)
    grid = get_task("fdg-ad").grid
    assert {r["label"] for r in rows} == {"CN", "MCI-stable"}
    assert {r["class_index"] for r in rows} == {0, None}
    for row in rows:
        img = nib.load(row["cached_path"])
        assert Path(row["cached_path"]).is_absolute()
        assert img.shape == grid.shape and img.get_data_dtype() == np.float32
        np.testing.assert_allclose(img.affine, grid.affine)
    manifest = json.loads((state / "data_manifest.json").read_text())
    assert manifest["by_tracer"] == {"fdg": 2} and manifest["n_series"] == 2
    assert "P1" not in json.dumps(manifest)


def test_cli_ingest(site: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    state = tmp_path / "out"
    caplog.set_level("INFO")
    rc = main(["ingest", "--site-dir", str(site), "--task", "fdg-ad", "--out", str(state)])
    assert rc == 0
    report = json.loads((state / "ingest_report.json").read_text())
    assert report["task"] == "fdg-ad" and len(report["accepted"]) == 2
    assert "ingested 2/2 series" in caplog.text
    for forbidden in ("P1", "P2", str(site), "dicom/"):
        assert forbidden not in caplog.text


def test_cli_task_mismatch_is_an_error(site: Path, tmp_path: Path) -> None:
    rc = main(
        ["ingest", "--site-dir", str(site), "--task", "amyloid", "--out", str(tmp_path / "o")]
    )
    assert rc == 2


def test_cli_ingest_of_a_folder_with_no_usable_series_fails(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    """Only non-DICOM files (and a site.toml): nothing accepted, exit 1 with the reason."""
    site = tmp_path / "empty-site"
    (site / "dicom").mkdir(parents=True)
    (site / "dicom" / "notes.txt").write_text("not a DICOM file")
    write_labels(site, {"P1": "CN"})
    (site / "site.toml").write_text('[site]\nsite-id = "site-y"\nrole = "train"\ntask = "fdg-ad"\n')
    rc = main(["ingest", "--site-dir", str(site), "--task", "fdg-ad", "--out", str(tmp_path / "o")])
    assert rc == 1
    assert "no usable series" in capsys.readouterr().err
    assert (tmp_path / "o" / "ingest_report.json").exists()  # the reasons are still written


@pytest.mark.slow
def test_worker_processes_give_the_same_volumes(site: Path, tmp_path: Path) -> None:
    one = ingest_site(site, "fdg-ad", tmp_path / "one")
    two = ingest_site(site, "fdg-ad", tmp_path / "two", workers=2)
    for a, b in zip(one.accepted, two.accepted, strict=True):
        va = nib.load(tmp_path / "one" / a["cached_path"]).get_fdata()
        vb = nib.load(tmp_path / "two" / b["cached_path"]).get_fdata()
        np.testing.assert_array_equal(va, vb)
