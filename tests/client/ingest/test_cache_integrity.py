"""A damaged cache entry is re-done by the next ingest; training never uses a damaged volume
or a label that labels.csv no longer gives; the cache and reports are private (0600/0700)."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest

from fedmi.client import data as site_data_module
from fedmi.client.data import NotIngested, site_data
from fedmi.client.ingest import cache
from fedmi.client.ingest.pipeline import ingest_site
from fedmi.client.site.settings import SiteSettings
from tests.client.ingest.helpers import write_labels, write_pet


@pytest.fixture()
def site(tmp_path: Path) -> Path:
    site = tmp_path / "site"
    write_pet(site / "dicom" / "a", "P1")
    write_pet(site / "dicom" / "b", "P2", file_naming="uid")
    write_labels(site, {"P1": "CN", "P2": "AD"})
    (site / "site.toml").write_text('[site]\nsite-id = "site-x"\nrole = "train"\ntask = "fdg-ad"\n')
    return site


def _rows(report) -> dict[str, dict]:
    return {r["patient_id"]: r for r in report.accepted}


def _key(row: dict) -> str:
    return Path(row["cached_path"]).name.removesuffix(".nii.gz")


def _damage(state: Path, key: str, how: str) -> None:
    volume = state / cache.volume_relpath(key)
    entry = state / cache.CACHE_DIR / f"{key}.json"
    if how == "truncated-volume":
        volume.write_bytes(volume.read_bytes()[:500])
    elif how == "overwritten-volume":  # same size, other bytes: only the checksum sees it
        volume.write_bytes(bytes(len(volume.read_bytes())))
    elif how == "missing-volume":
        volume.unlink()
    elif how == "garbage-entry":
        entry.write_bytes(entry.read_bytes()[:40])
    elif how == "edited-entry":  # still JSON, but not what ingest wrote
        doc = json.loads(entry.read_text())
        doc["row"]["suv_factor"] = 1.0
        entry.write_text(json.dumps(doc))
    else:  # an entry of an older fedmi: no checksums
        doc = json.loads(entry.read_text())
        doc.pop("sha256")
        doc["row"].pop("volume_sha256")
        entry.write_text(json.dumps(doc))


@pytest.mark.parametrize(
    "how",
    [
        "truncated-volume",
        "overwritten-volume",
        "missing-volume",
        "garbage-entry",
        "edited-entry",
        "entry-without-checksums",
    ],
)
def test_a_damaged_entry_is_rebuilt_by_the_next_ingest(site: Path, tmp_path: Path, how: str):
    state = tmp_path / "state"
    first = _rows(ingest_site(site, "fdg-ad", state))
    key = _key(first["P1"])
    original = (state / cache.volume_relpath(key)).read_bytes()
    _damage(state, key, how)
    again = _rows(ingest_site(site, "fdg-ad", state))
    assert not again["P1"]["from_cache"] and again["P2"]["from_cache"]
    assert (state / cache.volume_relpath(key)).read_bytes() == original
    assert again["P1"]["volume_sha256"] == hashlib.sha256(original).hexdigest()
    assert again["P1"]["suv_factor"] == first["P1"]["suv_factor"]
    third = _rows(ingest_site(site, "fdg-ad", state))  # and the rebuilt entry is used again
    assert third["P1"]["from_cache"] and third["P2"]["from_cache"]


def _site(site: Path, state: Path) -> SiteSettings:
    return SiteSettings("site-x", "train", site, state.parent, state)


def test_training_refuses_a_volume_damaged_after_ingest(site: Path, tmp_path: Path):
    state = tmp_path / "state"
    key = _key(_rows(ingest_site(site, "fdg-ad", state))["P2"])
    settings = _site(site, state)
    assert len(site_data(settings, "fdg-ad", 0)) == 2
    site_data_module._DATA_CACHE.clear()  # a new ClientApp process
    volume = state / cache.volume_relpath(key)
    volume.write_bytes(volume.read_bytes()[:-100])
    with pytest.raises(NotIngested, match="damaged .checksum mismatch.*fedmi-site ingest") as err:
        site_data(settings, "fdg-ad", 0)
    assert str(volume) in str(err.value)
    ingest_site(site, "fdg-ad", state)
    assert len(site_data(settings, "fdg-ad", 0)) == 2


def test_a_labels_edit_invalidates_the_ingested_labels(site: Path, tmp_path: Path):
    state = tmp_path / "state"
    ingest_site(site, "fdg-ad", state)
    settings = _site(site, state)

    def labels() -> dict[str, float]:
        data = site_data(settings, "fdg-ad", 0)
        return dict(zip(data.patient_keys, data.y.tolist(), strict=True))

    assert labels() == {"P1": 0.0, "P2": 1.0}
    write_labels(site, {"P1": "CN", "P2": "CN"})  # P2 was mislabelled
    with pytest.raises(NotIngested, match="labels.csv changed since the last ingest .1 "):
        site_data(settings, "fdg-ad", 0)
    report = _rows(ingest_site(site, "fdg-ad", state))
    assert report["P2"]["label"] == "CN" and report["P2"]["from_cache"]  # no DICOM re-read
    assert labels() == {"P1": 0.0, "P2": 0.0}
    write_labels(site, {"P2": "CN"})  # P1's row removed: its old label must not survive
    with pytest.raises(NotIngested, match="labels.csv changed"):
        site_data(settings, "fdg-ad", 0)
    (site / "labels.csv").unlink()
    with pytest.raises(NotIngested, match=r"\(2 ingested scan"):
        site_data(settings, "fdg-ad", 0)


def test_the_cache_and_reports_are_private(site: Path, tmp_path: Path):
    state = tmp_path / "new" / "state"
    ingest_site(site, "fdg-ad", state)
    for folder in (tmp_path / "new", state, state / cache.CACHE_DIR):
        assert folder.stat().st_mode & 0o777 == 0o700, folder
    names = []
    for folder, _, files in os.walk(state):
        for name in files:
            assert (Path(folder) / name).stat().st_mode & 0o777 == 0o600, name
            names.append(name)
    assert {"ingest_report.json", "data_manifest.json", cache.INDEX_FILE} <= set(names)
    assert sum(n.endswith(".nii.gz") for n in names) == 2
