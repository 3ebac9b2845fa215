"""``fedmi-sim compare`` table logic with the runs stubbed out (fast)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from fedmi.simulations import compare as cmp
from fedmi.simulations import runner

AUC = {"local": 0.6, "pooled": 0.9, "fedavg": 0.7, "fedprox": 0.7, "fedbn": 0.75, "fedmi": 0.85}


def _fake_run(*, method, seed, out_dir, **_):
    per_site = [
        {"site_id": "site-a", "role": "train", "auc": AUC[method] + 0.01 * seed},
        {"site_id": "site-e", "role": "holdout", "auc": AUC[method] + 0.01 * seed},
    ]
    if method == "fedmi":
        per_site[0]["harmonization"] = "trained"
        per_site[1]["harmonization"] = "adapted"
    out_dir.mkdir(parents=True, exist_ok=True)
    return {
        "method": method,
        "final": {
            "per_site": per_site,
            "pooled": {
                "train": {"auc_histogram": per_site[0]["auc"]},
                "holdout": {"auc_histogram": per_site[1]["auc"]},
            },
        },
    }


def _compare(tmp_path, **kw) -> dict:
    """compare() over seeds 0/1/2 on an empty data folder (the runs are stubbed)."""
    (tmp_path / "data").mkdir()
    args = dict(task="amyloid", out_dir=tmp_path / "out", rounds=2, seeds=[0, 1, 2], local_epochs=1)
    return cmp.compare(data_root=tmp_path / "data", **{**args, **kw})


def test_compare_table_and_gap(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(runner, "run", _fake_run)
    doc = _compare(tmp_path)
    hold = doc["summary"]["fedmi"][cmp.HOLDOUT]
    assert hold["n"] == 3 and hold["mean"] == pytest.approx(0.86)
    assert hold["sd"] == pytest.approx(0.01)
    assert doc["gap_closed"]["fedmi"] == pytest.approx((0.86 - 0.71) / (0.91 - 0.71))
    assert doc["gap_closed"]["fedavg"] == pytest.approx(0.0) and doc["complete"]
    assert doc["harmonization"]["fedmi: site-e seed 0"] == "adapted"
    saved = json.loads((tmp_path / "out" / "compare.json").read_text())
    assert saved["methods"] == list(cmp.COMPARE_METHODS)
    md = (tmp_path / "out" / "compare.md").read_text()
    assert "| fedmi | 0.860 ± 0.010" in md and "meets the target" in md
    assert "fedmi" in capsys.readouterr().out


def test_a_gap_within_seed_noise_is_not_shared_out(tmp_path, monkeypatch):
    """pooled 0.001 above FedAvg with seeds scattering ±0.01: no 'gap closed' shares."""
    wobble = {0: 0.0, 1: 0.02, 2: -0.01}

    def fake(*, method, seed, out_dir, **_):
        rep = _fake_run(method="fedavg", seed=0, out_dir=out_dir)
        auc = (
            0.95
            + (0.001 if method == "pooled" else 0.0)
            + (wobble[seed] if method == "pooled" else 0.0)
        )
        rep["method"] = method
        rep["final"]["per_site"][1]["auc"] = auc
        rep["final"]["pooled"]["holdout"]["auc_histogram"] = auc
        return rep

    monkeypatch.setattr(runner, "run", fake)
    doc = _compare(tmp_path, methods=["pooled", "fedavg", "fedmi"])
    gap, se = cmp.holdout_gap(doc["summary"])
    assert gap == pytest.approx(0.001 + 0.01 / 3)
    assert se == pytest.approx(np.std([0.0, 0.02, -0.01], ddof=1) / np.sqrt(3))
    assert all(v is None for v in doc["gap_closed"].values())
    assert any("no measurable" in n for n in doc["notes"])


def test_every_run_spends_its_own_privacy_budget(tmp_path, monkeypatch):
    """Under DP each run gets its own ledger folder, so no method finds the budget spent."""
    seen: list[dict] = []

    def fake(*, extra, **kw):
        seen.append({**extra, "out_dir": kw["out_dir"]})
        return _fake_run(**kw)

    monkeypatch.setattr(runner, "run", fake)
    (tmp_path / "data").mkdir()
    kw = dict(data_root=tmp_path / "data", task="amyloid", rounds=1, seeds=[0], local_epochs=1)
    cmp.compare(out_dir=tmp_path / "out", methods=["fedavg", "fedmi"], **kw)
    roots = [e["sim-ledger-root"] for e in seen]
    assert len(set(roots)) == 2
    for e in seen:
        assert e["sim-ledger-root"] == str((e["out_dir"] / "site-ledgers").resolve())
    # a folder the caller chose is kept
    seen.clear()
    mine = str(tmp_path / "mine")
    cmp.compare(
        out_dir=tmp_path / "out2", methods=["fedavg"], extra={"sim-ledger-root": mine}, **kw
    )
    assert seen[0]["sim-ledger-root"] == mine


def test_fedmi_without_adaptation_is_fedmi_run_with_adaptation_off(tmp_path, monkeypatch):
    """The variant row runs the fedmi method with ``adaptation = "off"`` (and nothing else
    differs); reuse tells the two rows apart, and a report written before rows had their own
    name is reused for its method."""
    calls: list[tuple[str, dict]] = []

    def fake(*, method, extra, **kw):
        calls.append((method, dict(extra)))
        rep = _fake_run(method=method, **kw)
        if extra.get("adaptation") == "off":
            rep["final"]["per_site"][1]["harmonization"] = "identity"
        return rep

    monkeypatch.setattr(runner, "run", fake)
    kw = dict(methods=["fedmi", "fedmi-noadapt"], seeds=[0])
    doc = _compare(tmp_path, **kw)
    assert [m for m, _ in calls] == ["fedmi", "fedmi"]
    assert "adaptation" not in calls[0][1] and calls[1][1]["adaptation"] == "off"
    same = {k: v for k, v in calls[0][1].items() if k != "sim-ledger-root"}
    assert {
        k: v for k, v in calls[1][1].items() if k not in ("adaptation", "sim-ledger-root")
    } == same
    assert doc["harmonization"] == {
        "fedmi: site-e seed 0": "adapted",
        "fedmi: site-a seed 0": "trained",
        "fedmi-noadapt: site-e seed 0": "identity",
        "fedmi-noadapt: site-a seed 0": "trained",
    }
    assert set(doc["summary"]) == {"fedmi", "fedmi-noadapt"}
    runs = tmp_path / "out" / "runs"
    assert (
        json.loads((runs / "fedmi-noadapt-seed0" / "report.json").read_text())["compare_method"]
        == "fedmi-noadapt"
    )
    # reuse: nothing reruns; an older report (no compare_method) counts for its method
    old = json.loads((runs / "fedmi-seed0" / "report.json").read_text())
    del old["compare_method"]
    (runs / "fedmi-seed0" / "report.json").write_text(json.dumps(old))
    calls.clear()
    cmp.compare(data_root=tmp_path / "data", task="amyloid", out_dir=tmp_path / "out", rounds=2,
                local_epochs=1, reuse=True, **kw)  # fmt: skip
    assert calls == []
    (tmp_path / "x").mkdir()
    with pytest.raises(ValueError, match="fedmi-noadapt"):
        _compare(tmp_path / "x", methods=["fedmi-adapt"])


def test_the_sites_exact_auc_is_preferred_to_the_merged_histogram():
    """k-merged histogram bins can flatten a site's histogram AUC to 0.5; the site's exact
    AUC (auc) is what the table shows, also as the pooled value of a lone holdout."""
    report = {
        "final": {
            "per_site": [
                {"site_id": "site-a", "role": "train", "auc_histogram": 0.8, "auc": 0.83},
                {"site_id": "site-b", "role": "train", "auc": None, "status": "suppressed"},
                {"site_id": "site-e", "role": "holdout", "auc_histogram": 0.5, "auc": 0.96},
            ],
            "pooled": {
                "train": {"auc_histogram": 0.8, "auc_histogram_bound": 0.01},
                "holdout": {"auc_histogram": 0.5, "auc_histogram_bound": 0.5},
            },
        }
    }
    aucs, roles, _ = cmp._results(report)
    assert aucs["site-a"] == 0.83 and aucs["site-b"] is None and aucs["site-e"] == 0.96
    assert aucs[cmp.HOLDOUT] == 0.96  # the one holdout site
    assert aucs[cmp.TRAIN] == 0.8  # two training sites: the pooled histogram AUC
    assert roles == {"site-a": "train", "site-b": "train", "site-e": "holdout"}


def test_a_coarse_pooled_histogram_auc_is_not_shown():
    report = {
        "final": {
            "per_site": [
                {"site_id": "site-a", "role": "train", "auc": None},
                {"site_id": "site-b", "role": "train", "auc": None},
            ],
            "pooled": {
                "train": {"auc_histogram": 0.5, "auc_histogram_bound": 0.5},
                "holdout": None,
            },
        }
    }
    aucs, _, _ = cmp._results(report)
    assert aucs[cmp.TRAIN] is None and aucs[cmp.HOLDOUT] is None


def test_each_holdout_site_gets_its_own_gap(tmp_path, monkeypatch):
    """Two holdout sites whose pooled histogram AUC is too coarse to use: the gap is
    measured per site on the sites' exact AUCs, and the note says why the pooled one is not."""
    exact = {  # site-e has a gap that fedmi closes by 3/4; site-f has none
        "site-e": {"pooled": 0.97, "fedavg": 0.95, "fedmi": 0.965},
        "site-f": {"pooled": 0.98, "fedavg": 0.98, "fedmi": 0.98},
    }
    wobble = {0: 0.0, 1: 0.002, 2: -0.001}

    def fake(*, method, seed, out_dir, **_):
        rep = _fake_run(method="fedavg", seed=0, out_dir=out_dir)
        rep["method"] = method
        rep["final"]["per_site"][1:] = [
            {"site_id": s, "role": "holdout", "auc_histogram": 0.5, "auc": a[method] + wobble[seed]}
            for s, a in exact.items()
        ]
        rep["final"]["pooled"]["holdout"] = {"auc_histogram": 0.6, "auc_histogram_bound": 0.3}
        return rep

    monkeypatch.setattr(runner, "run", fake)
    doc = _compare(tmp_path, methods=["pooled", "fedavg", "fedmi"])
    assert doc["gap_closed"]["fedmi"] is None  # the pooled column is unusable
    e, f = doc["site_gaps"]["site-e"], doc["site_gaps"]["site-f"]
    assert e["gap"] == pytest.approx(0.02) and e["se"] == pytest.approx(0.0, abs=1e-12)
    assert e["closed"]["fedmi"] == pytest.approx(0.75)
    assert f["gap"] == pytest.approx(0.0, abs=1e-12) and f["closed"]["fedmi"] is None
    notes = "\n".join(doc["notes"])
    assert "holdout: no FedAvg-to-pooled gap to measure: the AUC is missing" in notes
    assert "site-e (holdout): fedmi closes 75 % of the FedAvg-to-pooled gap: meets" in notes
    assert "site-f (holdout): no measurable FedAvg-to-pooled gap" in notes
    md = (tmp_path / "out" / "compare.md").read_text()
    assert "site-e (holdout): fedmi closes 75 %" in md


def test_one_holdout_site_has_no_separate_site_gap(tmp_path, monkeypatch):
    monkeypatch.setattr(runner, "run", _fake_run)
    doc = _compare(tmp_path, methods=["pooled", "fedavg", "fedmi"])
    assert doc["site_gaps"] == {}
    target = "holdout: fedmi closes 75 % of the FedAvg-to-pooled gap: meets the target"
    assert [n for n in doc["notes"] if "FedAvg-to-pooled" in n] == [f"{target} of at least half."]


def _fake_run_with_operating_point(*, method, seed, out_dir, **kw):
    report = _fake_run(method=method, seed=seed, out_dir=out_dir, **kw)
    report["operating_point"] = {
        "threshold": 0.4,
        "per_site": [
            {
                "site_id": "site-e",
                "role": "holdout",
                "balanced_accuracy": 0.8 + 0.01 * seed,
                "best_balanced_accuracy": 0.9,
                "sensitivity": {"value": 0.7},
                "specificity": {"value": 0.9},
                "calibration": {"ece": 0.1},
                "calibration_recalibrated": {"ece": 0.05},
            }
        ],
    }
    return report


def test_operating_point_figures_per_holdout_site(tmp_path, monkeypatch):
    monkeypatch.setattr(runner, "run", _fake_run_with_operating_point)
    doc = _compare(tmp_path, methods=["pooled", "fedavg"])
    ba = doc["operating_point"]["fedavg"]["site-e"]["ba"]
    assert ba["mean"] == pytest.approx(0.81) and ba["sd"] == pytest.approx(0.01)
    md = (tmp_path / "out" / "compare.md").read_text()
    row = "| fedavg | site-e | 0.400 ± 0.000 | 0.810 ± 0.010 | 0.900 ± 0.000 | 0.700 ± 0.000"
    assert row in md and "| 0.100 ± 0.000 | 0.050 ± 0.000 |" in md
