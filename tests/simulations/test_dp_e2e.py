"""A whole tiny federation with every site's DP on (the default): what each site released,
what it refused, and that its ledger holds exactly that."""

from __future__ import annotations

import json

import pytest

from fedmi.client.privacy.accounting import epsilon_of
from fedmi.client.privacy.ledger import PrivacyLedger
from fedmi.shared import contract


@pytest.mark.slow
def test_every_release_of_a_dp_run_is_in_the_sites_ledger(tiny_fdg, tmp_path):
    from fedmi.simulations.runner import run

    ledgers = tmp_path / "ledgers"
    report = run(
        data_root=tiny_fdg,
        task="fdg-ad",
        out_dir=tmp_path / "run",
        rounds=2,
        extra={"sim-min-cell-count": 2, "sim-ledger-root": str(ledgers)},
    )
    releases = {r["site_id"]: r for r in report["privacy"]["releases"]}
    for site in ("site-a", "site-b"):  # training sites
        assert releases[site]["released"] == {
            contract.QUERY: 1,
            contract.OOD_STATS: 1,
            contract.EXTERNAL: 1,
            contract.NORMATIVE_STATS: 1,  # the normative model's statistics (fdg-ad)
        }
        # no per-round evaluations under DP by default: each was refused, and declared
        assert releases[site]["refused"] == {contract.EVALUATE: {"refused": 2}}
    # the holdout evaluates the anomaly score when the noisy statistics could be fitted (on
    # this tiny federation the OS noise decides: a noisy normal count can leave too few)
    fitted = report["normative"]["model"] is not None
    assert releases["site-c"]["released"] == {
        contract.QUERY: 1,
        contract.EXTERNAL: 1,
        **({contract.NORMATIVE_EVAL: 1} if fitted else {}),
    }
    if fitted:  # fitted from noisy statistics, and it says how noisy
        assert report["normative"]["model"]["dp"] is True
        assert "noise_dominated" in report["normative"]["model"]["dp_noise"]
    for site, row in releases.items():
        ledger = PrivacyLedger.open(ledgers / site, site_id=site)
        kinds = [c["kind"] for c in ledger.charges()]
        released = sum(row["released"].values())
        assert len([k for k in kinds if k != "train"]) == released
        assert ("train" in kinds) == (site != "site-c")
        total = epsilon_of(ledger.history(), 1e-5)
        assert total == pytest.approx(row["epsilon"], rel=1e-6) or row["epsilon"] < total
        assert total <= 10.0
    assert report["final"]["missing"] == []


@pytest.mark.slow
def test_a_federation_whose_sites_are_all_budget_exhausted_exits_non_zero(tiny_fdg, tmp_path):
    """A budget of ε = 0.01 is spent by the first statistic each site would release: every
    site answers budget-exhausted, `fedmi-sim run` exits 1 with the reason, and the report
    says so at the top."""
    from fedmi.simulations.cli import main

    out = tmp_path / "run"
    rc = main(
        [
            "run",
            "--data",
            str(tiny_fdg),
            "--out",
            str(out),
            "--rounds",
            "1",
            "--min-cell-count",
            "2",
            "--config",
            f"sim-ledger-root={tmp_path / 'ledgers'}",
            "--config",
            "sim-default-epsilon=0.01",
        ]
    )
    assert rc == 1
    report = json.loads((out / "report.json").read_text())
    assert report["outcome"]["status"] == "failed"
    assert "budget-exhausted" in report["outcome"]["reasons"][0]
    assert "This run failed" in (out / "report.html").read_text()
    assert (out / "fedmi.log").exists()
