"""``fedmi-site predict``: verified package only; probabilities, classes, not-assessable reasons."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from pydicom.data import get_testdata_file

from fedmi.client.cli import main
from fedmi.client.ingest.cache import read_volume
from fedmi.client.ingest.report import load_unlabelled
from fedmi.client.model import pull
from fedmi.client.training.loop import predict
from fedmi.server.package import PUBLIC_FILE, write_model_package
from fedmi.shared.contract import array_record
from fedmi.shared.model import ModelSpec, build_model, federated_state_dict
from fedmi.simulations.dicom import PetMeta, write_pet_series
from tests.client.ingest.helpers import brain, write_pet
from tests.client.packages import test_card

TASK = "fdg-ad"


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("predict")
    torch.manual_seed(3)
    model = build_model(ModelSpec(arch="regional"))
    with torch.no_grad():  # a head that gives non-trivial probabilities
        model.backbone.head.weight.normal_(0, 0.5)
    card = test_card(model)
    run = root / "run"
    run.mkdir()
    path = write_model_package(run, card, array_record(federated_state_dict(model)))
    state = root / "state"
    pull(path, state, run / PUBLIC_FILE)
    dicom = root / "dicom"
    write_pet(dicom / "p1", "P1")
    suv, aff = brain(shift_mm=(4.0, -3.0, 2.0))
    write_pet_series(suv, aff, PetMeta(patient_id="P2"), dicom / "p2")
    write_pet(dicom / "amy", "AMY", tracer="florbetapir")
    (dicom / "ct").mkdir()
    shutil.copy(get_testdata_file("CT_small.dcm"), dicom / "ct" / "ct")
    out = root / "out"
    rc = main(["predict", "--state-dir", str(state), "--dicom", str(dicom), "--out", str(out)])
    assert rc == 0
    records = [json.loads(p.read_text()) for p in sorted(out.glob("study-*.json"))]
    return model, path, state, dicom, out, records


def test_probabilities_match_the_evaluation_function(setup):
    model, _, _, _, out, records = setup
    rows = load_unlabelled(out / ".work" / "ingest")
    assert len(rows) == 2
    x = torch.from_numpy(
        np.stack([read_volume(Path(r["cached_path"]), r["volume_sha256"]) for r in rows])[:, None]
    )
    expected = predict(model.eval(), x, device=torch.device("cpu"))
    got = {r["series_uid"]: r for r in records if r["assessable"]}
    for row, p in zip(rows, expected, strict=True):
        rec = got[row["series_uid"]]
        assert abs(rec["probability"] - float(p)) < 1e-6
        assert rec["positive"] == (float(p) >= 0.4) and rec["threshold_source"] == "model card"
        assert rec["class"] == ("AD" if p >= 0.4 else "CN")
        assert rec["interval"]["low"] <= rec["interval"]["high"]
        assert len(rec["regions"]) == 5 and rec["study_uid"]


def test_regions_explain_the_logit(setup):
    model, _, _, _, out, records = setup
    rows = load_unlabelled(out / ".work" / "ingest")
    x = torch.from_numpy(
        read_volume(Path(rows[0]["cached_path"]), rows[0]["volume_sha256"])[None, None]
    )
    with torch.no_grad():
        feats = model.backbone.encoder(x)[0]
        contrib = feats * model.backbone.head.weight[0]
    rec = next(r for r in records if r["series_uid"] == rows[0]["series_uid"])
    top = float(contrib.abs().max())
    assert abs(abs(rec["regions"][0]["logit_contribution"]) - top) < 1e-3


def test_out_of_scope_is_not_assessable_with_reason(setup):
    *_, out, records = setup
    reasons = {r["reason"] for r in records if not r["assessable"]}
    assert {"wrong_tracer", "wrong_modality"} <= reasons
    for r in records:
        if not r["assessable"]:
            assert "class" not in r and "probability" not in r and len(r["message"]) > 20
    page = next(p for p in sorted(out.glob("study-*.html")) if "wrong_tracer" in p.read_text())
    text = page.read_text()
    assert "Not assessable" in text and "Research use only" in text


def test_no_verified_package_no_prediction(setup, tmp_path, capsys):
    _, path, state, dicom, _, _ = setup
    bad = tmp_path / "bad.fmp"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 1
    bad.write_bytes(bytes(data))
    out = tmp_path / "out"
    rc = main(
        [
            "predict",
            "--state-dir",
            str(state),
            "--dicom",
            str(dicom),
            "--out",
            str(out),
            "--package",
            str(bad),
        ]
    )
    assert rc == 2 and "signature does not verify" in capsys.readouterr().err
    assert not out.exists()
    rc = main(
        [
            "predict",
            "--state-dir",
            str(tmp_path / "unpinned"),
            "--dicom",
            str(dicom),
            "--out",
            str(out),
            "--package",
            str(path),
        ]
    )
    assert rc == 2 and "no coordinator key is pinned" in capsys.readouterr().err
    assert not out.exists()


IDENTIFIERS = (
    "PatientName",
    "PatientID",
    "PatientBirthDate",
    "PatientSex",
    "AccessionNumber",
    "OtherPatientIDs",
    "InstitutionName",
    "ReferringPhysicianName",
    "StudyID",
)


def test_dicom_outputs_reread_and_reference_the_study(setup):
    import highdicom as hd
    import pydicom

    _, path, state, dicom, out, records = setup
    from fedmi.client.model import load_verified

    pkg = load_verified(path, state)
    rec = next(r for r in records if r["assessable"])
    files = [out / "dicom" / n for n in rec["dicom"]]
    assert sorted(f.name.split("-")[0] for f in files) == ["pdf", "sc", "sr"]
    src = next(
        pydicom.dcmread(p, stop_before_pixels=True)
        for p in dicom.rglob("*")
        if p.is_file()
        and pydicom.dcmread(p, stop_before_pixels=True, force=True).get("SeriesInstanceUID")
        == rec["series_uid"]
    )
    seen_series = set()
    for f in files:
        ds = pydicom.dcmread(f)
        assert ds.StudyInstanceUID == src.StudyInstanceUID == rec["study_uid"]
        assert ds.SeriesInstanceUID != src.SeriesInstanceUID
        assert ds.SOPInstanceUID not in {src.SOPInstanceUID}
        seen_series.add(ds.SeriesInstanceUID)
        for key in IDENTIFIERS:  # nothing but the input's own identifiers
            if key in ds:
                assert str(ds[key].value or "") == str(src.get(key, "") or ""), key
        eq = next(e for e in ds.ContributingEquipmentSequence if "fedmi" in e.Manufacturer)
        assert eq.DeviceUID == pkg.device_uid and eq.SoftwareVersions == pkg.version
    assert len(seen_series) == 3
    sr_file = next(f for f in files if f.name.startswith("sr-"))
    sr = hd.sr.srread(sr_file)
    assert sr.VerificationFlag == "UNVERIFIED"
    assert sr.SOPClassUID == "1.2.840.10008.5.1.4.1.1.88.34"  # Comprehensive 3D SR
    evidence = sr.CurrentRequestedProcedureEvidenceSequence[0]
    assert evidence.StudyInstanceUID == src.StudyInstanceUID
    report = hd.sr.MeasurementReport.from_sequence([sr])
    group = report.get_image_measurement_groups()[0]
    values = {m.name.meaning: m.value for m in group.get_measurements()}
    assert abs(values["Probability"] - rec["probability"]) < 1e-6
    sc = pydicom.dcmread(next(f for f in files if f.name.startswith("sc-")))
    assert sc.Modality == "OT" and sc.pixel_array.shape[-1] == 3
    doc = pydicom.dcmread(next(f for f in files if f.name.startswith("pdf-")))
    assert doc.SOPClassUID == "1.2.840.10008.5.1.4.1.1.104.1"  # Encapsulated PDF Storage
    assert doc.file_meta.MediaStorageSOPClassUID == doc.SOPClassUID
    assert doc.Modality == "DOC" and doc.MIMETypeOfEncapsulatedDocument == "application/pdf"
    assert doc.BurnedInAnnotation == "YES" and doc.DocumentTitle
    assert doc.ConceptNameCodeSequence[0].CodingSchemeDesignator == "LN"
    assert doc.InstanceCreationDate and doc.ContentDate and doc.ContentTime
    assert len(doc.EncapsulatedDocument) % 2 == 0
    pdf = doc.EncapsulatedDocument[: doc.EncapsulatedDocumentLength]
    study = sorted(out.glob("study-*.json"))[
        [json.loads(p.read_text())["series_uid"] for p in sorted(out.glob("study-*.json"))].index(
            rec["series_uid"]
        )
    ]
    assert pdf == study.with_suffix(".pdf").read_bytes()
    assert pdf.startswith(b"%PDF-") and pdf.rstrip().endswith(b"%%EOF")


def test_out_of_distribution_study_is_not_assessable(setup, tmp_path):
    from fedmi.client.model import load_verified
    from fedmi.client.predict import load_model, score_rows
    from fedmi.server.package import ood_member
    from fedmi.shared.ood import FeatureDescription

    model, path, state, _, out, _ = setup
    rows = load_unlabelled(out / ".work" / "ingest")
    x = torch.from_numpy(
        np.stack([read_volume(Path(r["cached_path"]), r["volume_sha256"]) for r in rows])[:, None]
    )
    with torch.no_grad():
        feats = model.features(x).double().numpy()
    d = feats.shape[1]
    # the training data's single class sits one unit from both scans (identical after
    # spatial normalisation)
    shift = np.zeros(d)
    shift[0] = 1.0
    desc = FeatureDescription(feats[:1] + shift, np.eye(d), 10)
    run = path.parent.parent  # the same coordinator key
    card = json.loads(load_verified(path, state).members["model_card.json"])
    arrays = array_record(federated_state_dict(model))

    def scored(limit: float) -> list[dict]:
        report = {"ood": {"threshold": {"distance": limit, "quantile": 0.95, "from": "test"}}}
        member = ood_member(desc, report)
        pkg_path = write_model_package(run, card, arrays, extra_members=member)
        return score_rows(load_model(load_verified(pkg_path, state)), rows, mc_passes=3)

    inside = scored(1.5)
    assert all(r["assessable"] for r in inside)
    assert abs(inside[0]["ood_distance"] - 1.0) < 1e-6
    outside = scored(0.5)
    assert [r["reason"] for r in outside] == ["out_of_distribution"] * 2
    assert "class" not in outside[0] and "probability" not in outside[0]
    assert abs(outside[0]["ood_distance"] - 1.0) < 1e-6 and "0.50" in outside[0]["message"]
    assert ood_member(None, {"ood": {"threshold": {"distance": 1.0}}}) == {}
    assert ood_member(desc, {"ood": None}) == {}
