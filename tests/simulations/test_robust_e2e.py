"""One malicious training site in a whole federation: robust aggregation keeps the model.

Five generated sites (``tiny`` preset ×3: four training sites of 24–33 scans, one holdout
of 36), DP off (the attacks concern aggregation), three rounds, run in process through the
real ClientApps and the real ServerApp flow (:mod:`fedmi.simulations.malicious`).
"""

from __future__ import annotations

import pytest

from fedmi.shared.run_config import RunConfig
from fedmi.simulations.malicious import ATTACKS, holdout_auc, run_attacked

KEYS = {"sim-default-dp": "off", "sim-min-cell-count": 2}
#: the largest training site (33 scans) and a small one (24)
ATTACKERS = ("site-a", "site-b")


@pytest.fixture(scope="module")
def federation(tmp_path_factory):
    from fedmi.simulations.generator import generate_federation
    from fedmi.simulations.runner import ingest_all, site_settings

    root = tmp_path_factory.mktemp("robust") / "data"
    generate_federation(root, task="fdg-ad", preset="tiny", seed=0, n_sites=5, subjects_scale=3)
    ingest_all(site_settings(root, root.parent / "x", KEYS), "fdg-ad")
    return root


def _run(root, out, attack=None, attacker=None, **extra):
    cfg = RunConfig.from_mapping(
        {"num-server-rounds": 3, "node-wait": 0, "out-dir": str(out), **extra}
    )
    return run_attacked(cfg, root, out, attack=attack, attacker=attacker, site_keys=KEYS)


def _holdout_auc(report) -> float:
    return holdout_auc(report)


@pytest.mark.slow
def test_one_malicious_site_cannot_wreck_the_model(federation, tmp_path, flower_identity):
    clean = _run(federation, tmp_path / "clean")
    sizes = {s["site_id"]: s["num_train"] for s in clean["sites"] if s["role"] == "train"}
    assert max(sizes, key=sizes.get) == "site-a"  # the largest training site attacks too
    base = _holdout_auc(clean)
    assert base >= 0.90
    for attacker in ATTACKERS:
        for attack in ATTACKS:
            report = _run(federation, tmp_path / f"{attack}-{attacker}", attack, attacker)
            assert _holdout_auc(report) >= base - 0.05, (attack, attacker)
            named = {
                (c["round"], c["reason"])
                for c in report["robustness"]["changed"]
                if c["site_id"] == attacker
            }
            # every round's bad update is named with its reason
            want = "count-capped" if attack == "count-lie" else "norm-clipped"
            if attack != "label-flip":  # a label-flipped update can be of ordinary norm
                assert {r for r, why in named if why == want} == {1, 2, 3}, (attack, attacker)
            else:
                assert named, attacker


@pytest.mark.slow
def test_without_robust_aggregation_a_sign_flip_wrecks_the_model(
    federation, tmp_path, flower_identity
):
    report = _run(
        federation, tmp_path / "off", "sign-flip", "site-a", **{"robust-aggregation": "off"}
    )
    assert _holdout_auc(report) < 0.6
    assert report["robustness"]["changed"] == []
