"""A whole 3-site tiny federation under Flower's simulation engine (slow)."""

from __future__ import annotations

import json
import logging
import re
import sys
from pathlib import Path

import numpy as np
import pydicom
import pytest

from fedmi.server.strategy import base as server_strategy
from fedmi.shared import contract
from tests.report_schema import assert_valid_report

pytestmark = pytest.mark.slow


def _identities(root: Path) -> set[str]:
    """Every identifying string of the generated sites: names, IDs, dates, UIDs, paths."""
    found: set[str] = set()
    for site in sorted(p for p in root.iterdir() if (p / "site.toml").exists()):
        found.add(str(site.resolve()))
        for path in sorted((site / "dicom").rglob("*")):
            if not path.is_file():
                continue
            found.add(str(path.relative_to(site)))
            ds = pydicom.dcmread(path, stop_before_pixels=True)
            for key in (
                "PatientName",
                "PatientID",
                "PatientBirthDate",
                "AccessionNumber",
                "StudyInstanceUID",
                "SeriesInstanceUID",
            ):
                value = str(getattr(ds, key, "") or "")
                if value:
                    found.add(value)
            family = str(ds.PatientName).split("^")[0]
            if len(family) > 3:
                found.add(family)
    return found


def _contains(text: str, needle: str) -> bool:
    if needle.isdigit():
        return re.search(rf"(?<![\d.]){re.escape(needle)}(?!\d)", text) is not None
    return needle in text


def _strings_of(content) -> list[str]:
    out = []
    for name, record in content.items():
        out.append(name)
        for key, value in record.items():
            out.append(str(key))
            if not hasattr(value, "numpy"):
                out.append(str(value))
    return out


def test_tiny_federation_end_to_end_leaks_no_identity(
    tiny_fdg, tmp_path, monkeypatch, caplog, capfd
):
    from fedmi.simulations.runner import run

    received: list[str] = []
    real_check = server_strategy.check_inbound

    def recording_check(message_type, msg, *args, **kwargs):
        if not msg.has_error():
            received.extend(_strings_of(msg.content))
        return real_check(message_type, msg, *args, **kwargs)

    # every server module that checks replies (strategy, sites, collect, external, ...)
    import fedmi.server.federation.run  # noqa: F401 - loads the federation modules

    users = [m for n, m in sys.modules.items() if n.startswith("fedmi.server.")]
    users = [m for m in users if getattr(m, "check_inbound", None) is real_check]
    assert server_strategy in users and len(users) >= 4
    for module in users:
        monkeypatch.setattr(module, "check_inbound", recording_check)
    caplog.set_level(logging.DEBUG)

    out = tmp_path / "run"
    # tiny sites have a handful of scans: k = 2 (each site's own rule, simulated) keeps
    # the holdout's statistics; the training sites' 2–4 test scans are suppressed. DP off:
    # a six-scan holdout releases too little under DP (tests/simulations/test_dp_e2e.py)
    report = run(
        data_root=tiny_fdg,
        task="fdg-ad",
        out_dir=out,
        rounds=2,
        method="fedavg",
        extra={
            "sim-min-cell-count": 2,
            "sim-default-dp": "off",
            "sim-ledger-root": str(tmp_path / "l"),
        },
        isolate=False,  # in this process, so the server side can be observed
    )

    # the run completed and reported every site, in a report.json the schema accepts
    assert_valid_report(json.loads((out / "report.json").read_text()))
    assert report["outcome"] == {"status": "ok", "reasons": []}
    assert [r["round"] for r in report["rounds"]] == [1, 2]
    final = {r["site_id"]: r for r in report["final"]["per_site"]}
    assert set(final) == {"site-a", "site-b", "site-c"}
    assert final["site-c"]["role"] == "holdout"
    assert final["site-c"]["n"] > 0 and final["site-c"]["auc"] is not None
    assert final["site-c"]["auc_ci"] and final["site-c"]["brier"] is not None
    assert all(s["min_cell_count"] == 2 for s in report["sites"])
    assert report["data_counts"]["total"]["tracer"]["fdg"] > 0
    assert "all" in report["validation"]["roc"]["pooled"]
    for row in final.values():  # a statistic leaves a site only from at least k cases
        assert row["status"] == "suppressed" or row["n"] >= 2
    page = (out / "report.html").read_text()
    assert "http://" not in page and "https://" not in page and "Results per site" in page
    for rnd in report["rounds"]:
        assert set(rnd["train"]) == {"site-a", "site-b"}, "the holdout site must never train"
        assert rnd["dropped"] == []
    assert (out / "final_model.npz").exists() and (out / "model_card.json").exists()
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == [
        "round-000.npz",
        "round-001.npz",
        "round-002.npz",
    ]
    card = json.loads((out / "model_card.json").read_text())
    assert card["task"] == "fdg-ad" and card["input"]["grid_shape"] == [40, 48, 40]
    # the federation's operating point, chosen on the training sites' histograms
    op = card["operating_point"]
    assert 0.0 <= op["threshold"] <= 1.0 and op["criterion"] in ("youden", "fixed")
    assert op == {k: v for k, v in report["operating_point"].items() if k in op}
    sites_at_op = {r["site_id"] for r in report["operating_point"]["per_site"]}
    assert sites_at_op == {k for k, r in final.items() if r["status"] == "ok"}
    # the regional head's weights are named by region, in order
    head = np.load(out / "final_model.npz")["backbone.head.weight"]
    assert len(card["architecture"]["regions"]) == head.shape[-1]
    assert "precuneus_L" in card["architecture"]["regions"]
    assert received, "no inbound message was recorded"
    assert set(received) >= {contract.METRICS, contract.SITE}

    # planted identities appear nowhere the coordinator can see
    logs = caplog.text + "".join(capfd.readouterr())
    written = "".join(
        p.read_bytes().decode("latin-1")
        for p in sorted(out.rglob("*"))
        if p.is_file() and "site-state" not in p.parts
    )
    inbound = "\n".join(received)
    identities = _identities(tiny_fdg)
    assert len(identities) > 20
    for needle in sorted(identities):
        assert not _contains(inbound, needle), f"server received {needle!r}"
        assert not _contains(written, needle), f"run folder contains {needle!r}"
        assert not _contains(logs, needle), f"logs contain {needle!r}"
