"""A site's unlabelled archive after ingest: kept apart from the labelled split, and loaded
by :func:`fedmi.client.data.load_unlabelled_volumes` as volumes without labels, at a
training site and at a holdout."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import pytest
import torch

from fedmi.client.data import NotIngested, load_site_data, load_unlabelled_volumes
from fedmi.client.ingest.pipeline import ingest_site
from fedmi.client.ingest.report import load_accepted, load_unlabelled
from fedmi.shared.tasks import get_task

generator = pytest.importorskip("fedmi.simulations.generator")

TASK = "fdg-ad"


@pytest.fixture(scope="module")
def federation(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, dict]:
    """Two small sites (train, holdout), each with an archive as large as its labelled
    scans, ingested into STATE/<site-id>."""
    tmp = tmp_path_factory.mktemp("archive")
    root, state = tmp / "fed", tmp / "state"
    manifest = generator.generate_federation(
        root,
        TASK,
        "tiny",
        seed=5,
        n_sites=2,
        subjects_scale=0.25,
        memory_clinic=False,
        unlabelled_archive=1.0,
        workers=1,
    )
    for site in manifest["sites"]:
        ingest_site(root / site["site_id"], TASK, state / site["site_id"])
    return root, state, manifest


def _ids(path: Path, labelled: bool | None = None) -> set[str]:
    with path.open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    return {r["PatientID"] for r in rows if labelled is None or r["labelled"] == str(labelled)}


def test_archive_is_ingested_apart_from_the_split(federation) -> None:
    root, state, manifest = federation
    assert [s["role"] for s in manifest["sites"]] == ["train", "holdout"]
    for site in manifest["sites"]:
        site_id, cache = site["site_id"], state / site["site_id"]
        archive = _ids(root / "_truth" / f"{site_id}.csv", labelled=False)
        labelled = _ids(root / site_id / "labels.csv")
        assert len(archive) == site["n_archive"] == site["n_unlabelled"] > 0
        unlabelled = load_unlabelled(cache)
        assert {r["patient_id"] for r in unlabelled} == archive
        assert all(r["label"] is None and r["class_index"] is None for r in unlabelled)
        accepted = load_accepted(cache)
        assert {r["patient_id"] for r in accepted} == labelled
        data = load_site_data(accepted + unlabelled, get_task(TASK), seed=0)
        train = {k for k, t in zip(data.patient_keys, data.is_test, strict=True) if not t}
        test = {k for k, t in zip(data.patient_keys, data.is_test, strict=True) if t}
        assert not (train | test) & archive
        assert train | test <= labelled


def test_load_unlabelled_volumes(federation) -> None:
    _, state, manifest = federation
    grid = get_task(TASK).grid.shape
    for site in manifest["sites"]:  # the holdout too
        cache = state / site["site_id"]
        x = load_unlabelled_volumes(cache, TASK)
        assert isinstance(x, torch.Tensor)  # volumes alone: no labels to unpack
        assert x.dtype == torch.float32 and tuple(x.shape) == (site["n_archive"], 1, *grid)
        assert bool(torch.isfinite(x).all()) and float(x.amax()) > 0.0
        assert torch.equal(load_unlabelled_volumes(cache), x)  # the report's task


def test_load_unlabelled_volumes_refusals(federation, tmp_path: Path) -> None:
    _, state, manifest = federation
    cache = state / manifest["sites"][0]["site_id"]
    with pytest.raises(NotIngested, match="ingest_report.json"):
        load_unlabelled_volumes(tmp_path / "nothing")
    with pytest.raises(NotIngested, match="dat-pd"):
        load_unlabelled_volumes(cache, "dat-pd")
    copy = tmp_path / "copy"
    shutil.copytree(cache, copy)
    victim = Path(load_unlabelled(copy)[0]["cached_path"])
    victim.write_bytes(victim.read_bytes()[:-10])
    with pytest.raises(NotIngested, match="damaged"):
        load_unlabelled_volumes(copy)


def test_no_unlabelled_scans_gives_an_empty_tensor(tmp_path: Path) -> None:
    root = tmp_path / "fed"
    manifest = generator.generate_federation(
        root, TASK, "tiny", seed=5, n_sites=2, subjects_scale=0.2, memory_clinic=False
    )
    site = manifest["sites"][0]
    ingest_site(root / site["site_id"], TASK, tmp_path / "state")
    x = load_unlabelled_volumes(tmp_path / "state")
    assert tuple(x.shape) == (0, 1, *get_task(TASK).grid.shape)
