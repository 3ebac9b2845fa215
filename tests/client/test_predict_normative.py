"""``fedmi-site predict`` with the federation's normative model: z-scores, anomaly score,
named regions, z-map, the HTML figure and the DICOM objects; a malformed member is refused."""

from __future__ import annotations

import dataclasses
import html
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from fedmi.client.anomaly import (
    AGE_UNKNOWN,
    FIGURE_CAPTION,
    normative_record,
    zmap_figure,
    zmap_volume,
)
from fedmi.client.cli import main
from fedmi.client.ingest.cache import read_volume
from fedmi.client.ingest.report import load_unlabelled
from fedmi.client.model import pull
from fedmi.server.package import PUBLIC_FILE, write_model_package
from fedmi.shared.contract import array_record
from fedmi.shared.model import ModelSpec, build_model, federated_state_dict
from fedmi.shared.normative import NormativeModel, profile_of
from fedmi.shared.package import NORMATIVE
from fedmi.shared.regional import region_index
from fedmi.shared.tasks import get_task
from tests.client.ingest.helpers import write_pet
from tests.client.packages import test_card

TASK = "fdg-ad"
GRID = get_task(TASK).grid
SD = 0.05  # the hand-made model's residual SD (log units)
LOW = 0.75  # the lowered region keeps 75 % of its uptake


def _model(profile: np.ndarray, names: tuple[str, ...], raise_region: int | None = None):
    """A normative model whose normal profile is ``profile`` (no age or sex effect)."""
    intercept = np.array(profile, dtype=np.float64)
    if raise_region is not None:  # the model expects more here: the scan reads as 25 % low
        intercept[raise_region] -= np.log(LOW)
    r = len(names)
    return NormativeModel(
        region_names=names,
        centre=np.zeros(r),
        intercept=intercept,
        slopes=np.zeros((2, r)),
        sigma2=np.full(r, SD**2),
        tau2=np.zeros(r),
        n_sites=3,
        n_scans=120.0,
        adjust_age=True,
        dp=True,
    )


def _predict(state: Path, dicom: Path, out: Path, package: Path) -> int:
    return main(
        [
            "predict",
            "--state-dir",
            str(state),
            "--dicom",
            str(dicom),
            "--out",
            str(out),
            "--package",
            str(package),
            "--mc-passes",
            "3",
        ]
    )


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("predict-normative")
    torch.manual_seed(3)
    model = build_model(ModelSpec(arch="regional"))
    card = test_card(model)
    run = root / "run"
    run.mkdir()
    arrays = array_record(federated_state_dict(model))
    plain = write_model_package(run, card, arrays)
    state = root / "state"
    pull(plain, state, run / PUBLIC_FILE)
    dicom = root / "dicom"
    write_pet(dicom / "p1", "P1", patient_age_years=68, patient_sex="F")
    write_pet(dicom / "p2", "P2", patient_age_years=999)  # "999Y": age unknown
    out_plain = root / "out-plain"
    assert _predict(state, dicom, out_plain, plain) == 0
    rows = load_unlabelled(out_plain / ".work" / "ingest")
    volume = read_volume(Path(rows[0]["cached_path"]), rows[0]["volume_sha256"])
    profile, names = profile_of(volume, GRID)
    lowered = int(np.argsort(profile)[len(names) // 2])
    normative = _model(profile, names, raise_region=lowered)
    member = {NORMATIVE: normative.to_json().encode()}
    package = write_model_package(run, card, arrays, extra_members=member)
    out = root / "out"
    assert _predict(state, dicom, out, package) == 0
    records = [json.loads(p.read_text()) for p in sorted(out.glob("study-*.json"))]
    return {
        "run": run,
        "card": card,
        "arrays": arrays,
        "state": state,
        "dicom": dicom,
        "plain": out_plain,
        "out": out,
        "records": records,
        "volume": volume,
        "profile": profile,
        "names": names,
        "lowered": lowered,
    }


def test_a_lowered_region_is_named_and_a_normal_volume_names_none(setup) -> None:
    volume, profile, names = setup["volume"], setup["profile"], setup["names"]
    normal = _model(profile, names)
    index, grid_names = region_index(GRID)
    assert grid_names == names
    rec, z = normative_record(normal, volume, GRID, 68.0, "F")
    assert rec["regions_below"] == [] and np.allclose(z, 0.0, atol=1e-6)
    assert rec["anomaly_score"] == pytest.approx(0.0, abs=1e-3) and rec["notes"] == []
    r = setup["lowered"]
    low = volume.copy().reshape(-1)
    low[index == r] *= LOW
    rec, z = normative_record(normal, low.reshape(GRID.shape), GRID, 68.0, "F")
    assert [b["region"] for b in rec["regions_below"]] == [names[r]]
    assert rec["regions_below"][0]["z"] < -2 and z[r] == z.min()
    assert rec["zscores"][names[r]] == round(float(z[r]), 2)
    assert rec["anomaly_score"] > 0
    assert rec["model"] == {"n_sites": 3, "n_scans": 120.0, "dp": True, "adjust_age": True}
    zmap = zmap_volume(z, GRID).reshape(-1)
    assert np.allclose(zmap[index == r], z[r]) and np.all(np.isnan(zmap[index < 0]))
    rgb = zmap_figure(zmap.reshape(GRID.shape), low.reshape(GRID.shape), GRID, "t")
    assert rgb.dtype == np.uint8 and rgb.ndim == 3 and rgb.shape[2] == 3


def test_unknown_age_is_said_and_flagged(setup) -> None:
    rec, _ = normative_record(
        _model(setup["profile"], setup["names"]), setup["volume"], GRID, None, "X"
    )
    assert rec["age_unknown"] and rec["age_years"] is None and rec["sex"] is None
    assert AGE_UNKNOWN in rec["notes"] and "age unknown: compared with 70-year-olds" == AGE_UNKNOWN


def test_predict_records_name_the_region_and_flag_unknown_age(setup) -> None:
    names, r = setup["names"], setup["lowered"]
    records = setup["records"]
    assert len(records) == 2 and all(rec["assessable"] for rec in records)
    by_age = {rec["normative"]["age_unknown"]: rec for rec in records}
    known, unknown = by_age[False], by_age[True]
    assert known["normative"]["age_years"] == 68 and known["normative"]["sex"] == "F"
    assert known["normative"]["notes"] == []
    assert AGE_UNKNOWN in unknown["normative"]["notes"]
    for rec in records:
        nv = rec["normative"]
        assert nv["regions_below"][0]["region"] == names[r] and nv["regions_below"][0]["z"] < -2
        assert len(nv["zscores"]) == len(names) and nv["threshold"] == -2.0
        assert nv["model"]["n_sites"] == 3 and nv["model"]["dp"] is True
        zmap = np.load(setup["out"] / nv["zmap"]["file"])
        assert zmap.shape == GRID.shape and nv["zmap"]["grid"]["shape"] == list(GRID.shape)
        index, _ = region_index(GRID)
        assert np.allclose(zmap.reshape(-1)[index == r], nv["zscores"][names[r]], atol=0.01)
    page = (setup["out"] / "study-001.html").read_text()
    assert "data:image/png;base64," in page and html.escape(FIGURE_CAPTION) in page
    assert "Anomaly score" in page and names[r] in page
    pdf = (setup["out"] / "study-001.pdf").read_bytes()
    assert pdf.startswith(b"%PDF-") and b"/Subtype /Image" in pdf  # the z-map figure
    assert b"/Subtype /Image" not in (setup["plain"] / "study-001.pdf").read_bytes()


def test_without_the_member_predict_is_unchanged(setup) -> None:
    plain = [json.loads(p.read_text()) for p in sorted(setup["plain"].glob("study-*.json"))]
    assert plain and all(rec["normative"] is None for rec in plain)
    assert all(len(rec["dicom"]) == 3 for rec in plain)  # SR, SC, Encapsulated PDF
    assert not list(setup["plain"].glob("*-zmap.npy"))
    assert "data:image/png" not in (setup["plain"] / "study-001.html").read_text()


def test_sr_and_sc_carry_the_anomaly_score(setup) -> None:
    import highdicom as hd
    import pydicom

    rec = setup["records"][0]
    nv = rec["normative"]
    files = [setup["out"] / "dicom" / n for n in rec["dicom"]]
    assert sorted(f.name.split("-")[0] for f in files) == ["pdf", "sc", "sr", "zmap"]
    datasets = [pydicom.dcmread(f) for f in files]
    assert len({ds.SeriesInstanceUID for ds in datasets}) == 4
    assert len({ds.StudyInstanceUID for ds in datasets}) == 1
    sr = hd.sr.srread(next(f for f in files if f.name.startswith("sr-")))
    groups = hd.sr.MeasurementReport.from_sequence([sr]).get_image_measurement_groups()
    assert len(groups) == 2
    values = {m.name.meaning: m.value for m in groups[1].get_measurements()}
    assert float(values["Normative anomaly score"]) == pytest.approx(nv["anomaly_score"], abs=1e-6)
    region = nv["regions_below"][0]
    assert float(values[f"Regional z-score: {region['region']}"[:64]]) == pytest.approx(
        region["z"], abs=1e-6
    )
    zmap = pydicom.dcmread(next(f for f in files if f.name.startswith("zmap-")))
    assert zmap.Modality == "OT" and zmap.pixel_array.shape[-1] == 3
    assert f"anomaly score {nv['anomaly_score']:.2f}" in zmap.ImageComments
    assert region["region"] in zmap.ImageComments


@pytest.mark.parametrize(
    "member",
    [b"{not json", b'{"schema_version": 1}', "wrong regions"],
    ids=["not-json", "missing-keys", "wrong-regions"],
)
def test_malformed_member_is_refused_and_nothing_scored(setup, tmp_path, capsys, member) -> None:
    if member == "wrong regions":
        names = tuple(f"r{i}" for i in range(4))
        member = _model(np.zeros(4), names).to_json().encode()
    package = write_model_package(
        setup["run"], setup["card"], setup["arrays"], extra_members={NORMATIVE: member}
    )
    out = tmp_path / "out"
    assert _predict(setup["state"], setup["dicom"], out, package) == 2
    err = capsys.readouterr().err
    assert NORMATIVE in err and "no study was scored" in err
    assert not out.exists()


@pytest.fixture(scope="module")
def site_state(setup, tmp_path_factory):
    """A state folder whose federation ingest holds three labelled normals (and an AD)."""
    from fedmi.client.ingest.pipeline import ingest_site

    root = tmp_path_factory.mktemp("predict-offset")
    site = root / "site"
    for pid, age in (("N1", 60), ("N2", 70), ("N3", 80), ("A1", 75)):
        write_pet(site / "dicom" / pid, pid, patient_age_years=age, patient_sex="M")
    (site / "labels.csv").write_text("PatientID,label\nN1,CN\nN2,CN\nN3,CN\nA1,AD\n")
    state = root / "state"
    shutil.copytree(setup["state"], state)  # the coordinator's key pinned
    ingest_site(site, TASK, state / "ingest")
    return state


def test_the_sites_own_offset_comes_from_its_ingested_normals(setup, site_state) -> None:
    from fedmi.client.anomaly import site_offset_from_ingest
    from fedmi.client.ingest.report import load_accepted

    model = dataclasses.replace(  # the site reads 5 % high; sites vary by τ = σ
        _model(setup["profile"] - 0.05, setup["names"]), tau2=np.full(len(setup["names"]), SD**2)
    )
    offset, n = site_offset_from_ingest(model, site_state / "ingest", TASK, GRID)
    assert n == 3  # the AD scan is not a normal
    rows = [r for r in load_accepted(site_state / "ingest") if r["label"] == "CN"]
    profiles = np.array(
        [profile_of(read_volume(Path(r["cached_path"]), r["volume_sha256"]), GRID)[0] for r in rows]
    )
    want = model.site_offset(profiles, [r["age_years"] for r in rows], ["M"] * 3)
    assert np.array_equal(offset[0], want[0]) and np.array_equal(offset[1], want[1])
    # no ingest of this task, or no folder: the population model alone
    assert site_offset_from_ingest(model, site_state / "ingest", "amyloid", GRID) == (None, 0)
    assert site_offset_from_ingest(model, site_state / "nothing", TASK, GRID) == (None, 0)
    rec, _ = normative_record(model, setup["volume"], GRID, 68.0, "F", offset, n)
    plain, _ = normative_record(model, setup["volume"], GRID, 68.0, "F")
    assert rec["site_offset"] is True and rec["site_normals"] == 3
    assert plain["site_offset"] is False and plain["site_normals"] == 0
    # the site's high reading is absorbed: z about +1 everywhere, about 0 after the offset
    assert abs(rec["anomaly_score"]) < 0.3 < 0.7 < abs(plain["anomaly_score"])


def test_predict_uses_the_sites_own_offset(setup, site_state, tmp_path) -> None:
    member = {NORMATIVE: _model(setup["profile"], setup["names"]).to_json().encode()}
    package = write_model_package(
        setup["run"], setup["card"], setup["arrays"], extra_members=member
    )
    out = tmp_path / "out"
    assert _predict(site_state, setup["dicom"], out, package) == 0
    records = [json.loads(p.read_text()) for p in sorted(out.glob("study-*.json"))]
    assert records and all(r["normative"]["site_offset"] for r in records)
    assert all(r["normative"]["site_normals"] == 3 for r in records)
    assert "this site's own offset from its 3 normal scans" in (out / "study-001.html").read_text()
    # the records of the setup, whose state folder has no ingest, used none
    assert not any(r["normative"]["site_offset"] for r in setup["records"])
    assert "without this site's own offset" in (setup["out"] / "study-001.html").read_text()


def test_a_damaged_cached_normal_is_left_out_of_the_offset(setup, site_state, tmp_path, caplog):
    from fedmi.client.anomaly import site_offset_from_ingest
    from fedmi.client.ingest.report import load_accepted

    state = tmp_path / "state"
    shutil.copytree(site_state, state)
    rows = [r for r in load_accepted(state / "ingest") if r["label"] == "CN"]
    Path(rows[0]["cached_path"]).write_bytes(b"damaged")
    model = _model(setup["profile"], setup["names"])
    offset, n = site_offset_from_ingest(model, state / "ingest", TASK, GRID)
    assert offset is not None and n == 2
    assert "unreadable (DamagedCache)" in caplog.text and str(state) not in caplog.text
