"""A tiny federation's model package at a site: predict equals the final evaluation (slow)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

pytestmark = pytest.mark.slow


def test_predict_with_the_package_matches_the_final_evaluation(tiny_fdg, tmp_path):
    from fedmi.client.cli import main
    from fedmi.client.data import site_data
    from fedmi.client.ingest.report import load_unlabelled
    from fedmi.client.training.loop import predict
    from fedmi.server.report.document import load_arrays
    from fedmi.shared.model import ModelSpec, build_model, load_federated_state
    from fedmi.simulations.runner import run, site_settings

    out = tmp_path / "run"
    extra = {
        "sim-min-cell-count": 2,
        "sim-default-dp": "off",
        "sim-ledger-root": str(tmp_path / "l"),
    }
    run(
        data_root=tiny_fdg,
        task="fdg-ad",
        out_dir=out,
        rounds=1,
        method="fedavg",
        extra=extra,
        isolate=False,
    )
    packages = sorted((out / "model_package").glob("*.fmp"))
    assert len(packages) == 1 and (out / "coordinator.pub").is_file()
    card = json.loads((out / "model_card.json").read_text())

    # the holdout site's final evaluation: the federated weights on all its labelled scans
    site = next(s for s in site_settings(tiny_fdg, out, extra) if s.role == "holdout")
    data = site_data(site, "fdg-ad", 0)
    arch = card["architecture"]
    model = build_model(ModelSpec(arch=arch["arch"], task=arch["task"]))
    load_federated_state(
        model,
        {k: torch.from_numpy(v.numpy()) for k, v in load_arrays(out / "final_model.npz").items()},
    )
    x, _ = data.subset("all")
    evaluated = dict(zip(data.patient_keys, predict(model, x), strict=True))

    state = tmp_path / "site-state"
    assert (
        main(
            [
                "model",
                "pull",
                "--package",
                str(packages[0]),
                "--state-dir",
                str(state),
                "--coordinator",
                str(out / "coordinator.pub"),
            ]
        )
        == 0
    )
    pred = tmp_path / "pred"
    assert (
        main(
            [
                "predict",
                "--state-dir",
                str(state),
                "--dicom",
                str(site.data_dir / "dicom"),
                "--out",
                str(pred),
                "--all",
            ]
        )
        == 0
    )
    records = {
        r["series_uid"]: r for r in (json.loads(p.read_text()) for p in pred.glob("study-*.json"))
    }
    by_patient = {
        r["patient_id"]: records[r["series_uid"]]
        for r in load_unlabelled(pred / ".work" / "ingest")
    }
    assert set(evaluated) <= set(by_patient) and evaluated
    compared = 0
    for pid, p in evaluated.items():
        rec = by_patient[pid]
        if not rec["assessable"]:  # beyond the federation's OOD distance: no class at all
            assert rec["reason"] == "out_of_distribution" and "probability" not in rec
            continue
        compared += 1
        assert abs(rec["probability"] - float(p)) < 1e-6
        # the federation's operating point from the card (a fixed 0.5 when it chose none)
        threshold = card["operating_point"]["threshold"]
        assert rec["threshold_source"] == "model card" and rec["threshold"] == threshold
        assert rec["positive"] == (float(p) >= threshold)
    assert compared >= 1
    # every scan, OOD-flagged ones included: the verified package's model on the volumes
    # predict ingested gives the evaluation's probabilities
    from fedmi.client.ingest.cache import read_volume
    from fedmi.client.model import load_verified
    from fedmi.client.predict import load_model

    loaded = load_model(load_verified(packages[0], state))
    rows = load_unlabelled(pred / ".work" / "ingest")
    vols = torch.from_numpy(
        np.stack([read_volume(Path(r["cached_path"]), r["volume_sha256"]) for r in rows])[:, None]
    )
    again = dict(zip([r["patient_id"] for r in rows], predict(loaded.model, vols), strict=True))
    for pid, p in evaluated.items():
        assert abs(float(again[pid]) - float(p)) < 1e-6
    # one SR per assessable study (the site's MCI scans, never evaluated, included)
    assessable = sum(r["assessable"] for r in records.values())
    assert assessable >= compared and len(list((pred / "dicom").glob("sr-*.dcm"))) == assessable
    # issue 21: the package's normative model flags the holdout's bvFTD scans (never in any
    # training label) with frontal regions named, and leaves its normals in the normal range
    import csv

    from fedmi.shared.normative import DISORDER_REGIONS

    truth = {
        r["PatientID"]: r
        for r in csv.DictReader((tiny_fdg / "_truth" / f"{site.data_dir.name}.csv").open())
    }
    groups: dict[str, list[dict]] = {}
    for pid, rec in by_patient.items():
        groups.setdefault(truth[pid]["group"], []).append(rec["normative"])
    assert groups["FTD"] and all(n is not None for v in groups.values() for n in v)
    frontal = set(DISORDER_REGIONS["FTD"])
    for n in groups["FTD"]:
        named = {r["region"].rsplit("_", 1)[0] for r in n["regions_below"]}
        assert n["flagged"] and named & {"frontal_lateral", "frontal_medial", "orbitofrontal"}
        assert named <= frontal | {"cingulate_middle", "temporal_lateral", "thalamus"}, named
    # a model of the tiny federation's 12 normals: normals are mostly, not always, in range
    normal = groups["CN"]
    assert sum(not n["flagged"] for n in normal) > len(normal) / 2
    assert max(n["anomaly_score"] for n in groups["FTD"]) > max(n["anomaly_score"] for n in normal)
