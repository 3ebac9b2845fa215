"""query.normative and evaluate.normative at a site, on the tiny generated federation."""

from __future__ import annotations

import csv

import numpy as np
import pytest
import torch

from fedmi.client.egress import check_outbound
from fedmi.client.normative import (
    handle_normative_evaluation,
    handle_normative_statistics,
    load_scans,
)
from fedmi.client.privacy.ledger import PrivacyLedger
from fedmi.client.privacy.settings import PrivacySettings
from fedmi.client.site.settings import resolve_site
from fedmi.server.federation.normative import fit_from_replies, statistics_from_metrics
from fedmi.server.report.normative import summarise
from fedmi.shared import contract
from fedmi.shared import normative as nm
from fedmi.shared.instructions import NormativeEvaluation, NormativeQuery
from fedmi.shared.model import build_model, federated_state_dict
from fedmi.shared.regional import region_index
from fedmi.shared.tasks import get_task

NAMES = region_index(get_task("fdg-ad").grid)[1]


@pytest.fixture(scope="module")
def states(tiny_fdg, tmp_path_factory):
    """Every tiny site ingested once for this module (its state folder per site)."""
    from fedmi.client.ingest.pipeline import ingest_site

    root = tmp_path_factory.mktemp("normative-states")
    for name in ("site-a", "site-b", "site-c"):
        ingest_site(tiny_fdg / name, "fdg-ad", root / name / "ingest")
    return root


def _site(root, states, name: str, k: int = 1):
    return resolve_site(
        {"data-dir": str(root / name), "state-dir": str(states / name), "min-cell-count": k},
        {},
    )


@pytest.fixture
def arrays():
    torch.manual_seed(0)
    return contract.array_record(federated_state_dict(build_model()))


def test_statistics_are_the_normals_sums_and_fit_like_pooled(tiny_fdg, states, tmp_path, arrays):
    sites = [_site(tiny_fdg, states, s) for s in ("site-a", "site-b")]
    answers, pooled = [], []
    for site in sites:
        reply = check_outbound(
            contract.NORMATIVE_STATS,
            handle_normative_statistics(site, arrays, NormativeQuery(task="fdg-ad")),
        )
        assert reply[contract.SITE]["status"] == "ok"
        metrics = dict(reply[contract.METRICS])
        labels = list(csv.DictReader((site.data_dir / "labels.csv").open()))
        n_cn = sum(r["label"] == "CN" for r in labels)
        assert metrics["num-examples"] == metrics["nrm-count"] == n_cn  # normals only
        assert metrics["nrm-noise-sd"] == [0.0] * 4 and "epsilon" not in metrics
        answers.append((site.site_id, metrics))
        pooled.append(load_scans(site, "fdg-ad", ("CN",)))
    model, reference, summary = fit_from_replies(answers, NAMES, np.zeros(len(NAMES)))
    # ages came from (0010,1010): the cohort spans 50–90
    ages = [a for s in pooled for a in s.ages]
    assert all(a is not None and 40 <= a <= 95 for a in ages)
    direct = nm.fit_pooled(
        np.vstack([s.profiles for s in pooled]),
        ages,
        [x for s in pooled for x in s.sexes],
        [sid for sid, s in zip(("a", "b"), pooled, strict=True) for _ in s.labels],
        NAMES,
        np.zeros(len(NAMES)),
    )
    for key in ("intercept", "slopes", "sigma2"):
        assert np.allclose(getattr(model, key), getattr(direct, key), atol=1e-6), key
    assert summary["sites"] == ["site-a", "site-b"] and not summary["dp_noise"]["noise_dominated"]
    assert not reference.adjust_age and np.all(reference.slopes[0] == 0)


def test_dp_statistics_are_charged_before_release(tiny_fdg, states, tmp_path, arrays):
    site = _site(tiny_fdg, states, "site-a")
    privacy = PrivacySettings(epsilon=10.0, ledger_dir=tmp_path / "ledger")
    out = handle_normative_statistics(
        site, arrays, NormativeQuery(task="fdg-ad", clip=0.5), privacy=privacy, run_id="r1"
    )
    reply = check_outbound(contract.NORMATIVE_STATS, out)
    metrics = dict(reply[contract.METRICS])
    charges = PrivacyLedger.open(tmp_path / "ledger").charges(kind=contract.NORMATIVE_STATS)
    assert len(charges) == 1 and metrics["epsilon"] == pytest.approx(charges[0]["epsilon"])
    sd = metrics["nrm-noise-sd"]
    sens = nm.sensitivities(0.5)
    # each block's noise is its multiplier × its sensitivity; xty has twice yty's weight in ρ
    assert sd[2] > 0 and sd[2] / sens["xty"] == pytest.approx(sd[3] / sens["yty"] / 2**0.5)
    stats = statistics_from_metrics(metrics)
    assert np.allclose(stats.xtx, stats.xtx.T)
    # the number of normals is label-derived: only its noisy value leaves
    assert metrics["num-examples"] == max(round(metrics["nrm-count"]), 0)
    # one normative release per run: the second is refused, nothing more is charged
    again = handle_normative_statistics(
        site, arrays, NormativeQuery(task="fdg-ad"), privacy=privacy, run_id="r1"
    )
    assert again[contract.SITE]["status"] == "refused"
    assert len(PrivacyLedger.open(tmp_path / "ledger").charges(kind=contract.NORMATIVE_STATS)) == 1


def test_small_sites_and_holdouts_send_no_statistics(tiny_fdg, states, tmp_path, arrays):
    small = _site(tiny_fdg, states, "site-a", k=50)
    out = handle_normative_statistics(small, arrays, NormativeQuery(task="fdg-ad"))
    assert out[contract.SITE]["status"] == "suppressed"
    assert set(out[contract.METRICS]) == {"num-examples"}
    holdout = _site(tiny_fdg, states, "site-c")
    out = handle_normative_statistics(holdout, arrays, NormativeQuery(task="fdg-ad"))
    assert out[contract.SITE]["status"] == "no-data"
    # under DP the (private) number of normals decides nothing: the noise protects them
    privacy = PrivacySettings(epsilon=10.0, ledger_dir=tmp_path / "ledger-small")
    out = handle_normative_statistics(
        small, arrays, NormativeQuery(task="fdg-ad"), privacy=privacy, run_id="r"
    )
    assert out[contract.SITE]["status"] == "ok" and "nrm-count" in out[contract.METRICS]


def _model_from(site_scans) -> tuple[nm.NormativeModel, nm.NormativeModel]:
    y = np.vstack([s.profiles for s in site_scans])
    ages = [a for s in site_scans for a in s.ages]
    sexes = [x for s in site_scans for x in s.sexes]
    ids = [str(i) for i, s in enumerate(site_scans) for _ in s.labels]
    centre = np.zeros(len(NAMES))
    return (
        nm.fit_pooled(y, ages, sexes, ids, NAMES, centre),
        nm.fit_pooled(y, ages, sexes, ids, NAMES, centre, adjust_age=False),
    )


def test_holdout_evaluation_counts_every_group(tiny_fdg, states, tmp_path, arrays):
    train = [_site(tiny_fdg, states, s) for s in ("site-a", "site-b")]
    model, reference = _model_from([load_scans(s, "fdg-ad", ("CN",)) for s in train])
    holdout = _site(tiny_fdg, states, "site-c")
    ins = NormativeEvaluation(
        task="fdg-ad",
        normative_model=model.to_json(),
        normative_reference=reference.to_json(),
        threshold=0.5,
    )
    ins = NormativeEvaluation.from_record(ins.to_record())  # as the site receives it
    out = check_outbound(contract.NORMATIVE_EVAL, handle_normative_evaluation(holdout, arrays, ins))
    assert out[contract.SITE]["status"] == "ok"
    m = dict(out[contract.METRICS])
    labels = [r["label"] for r in csv.DictReader((holdout.data_dir / "labels.csv").open())]
    hist = np.asarray(m["nrm-hist"]).reshape(contract.NORMATIVE_GROUPS, -1)
    for i, g in enumerate(nm.evaluation_groups("fdg-ad")):
        assert hist[i].sum() == labels.count(g), g
    assert m["num-examples"] == sum(labels.count(g) for g in ("CN", "AD", "FTD", "DLB"))
    s = summarise(m, nm.evaluation_groups("fdg-ad"))
    assert s["n"]["FTD"] == labels.count("FTD") and set(s["auc"]) == {"AD", "FTD", "DLB"}
    assert 0 <= s["false_positive_rate"]["adjusted"] <= 1


def test_evaluation_withholds_small_groups_and_noises_under_dp(tiny_fdg, states, tmp_path, arrays):
    train = [_site(tiny_fdg, states, s) for s in ("site-a", "site-b")]
    model, reference = _model_from([load_scans(s, "fdg-ad", ("CN",)) for s in train])
    ins = NormativeEvaluation(
        task="fdg-ad", normative_model=model.to_json(), normative_reference=reference.to_json()
    )
    strict = _site(tiny_fdg, states, "site-c", k=50)
    m = dict(handle_normative_evaluation(strict, arrays, ins)[contract.METRICS])
    assert sum(m["nrm-hist"]) == 0 and m["nrm-old-count"] == 0.0  # every group under k
    privacy = PrivacySettings(epsilon=10.0, ledger_dir=tmp_path / "ledger-c")
    holdout = _site(tiny_fdg, states, "site-c")
    out = handle_normative_evaluation(holdout, arrays, ins, privacy=privacy, run_id="r")
    m = dict(check_outbound(contract.NORMATIVE_EVAL, out)[contract.METRICS])
    assert len(PrivacyLedger.open(tmp_path / "ledger-c").charges(kind=contract.NORMATIVE_EVAL)) == 1
    hist = np.asarray(m["nrm-hist"]).reshape(contract.NORMATIVE_GROUPS, -1)
    # noisy blocks sit in each block's middle bin only
    off = np.ones(contract.NORMATIVE_BINS, bool)
    off[contract.NORMATIVE_DP_BLOCK // 2 :: contract.NORMATIVE_DP_BLOCK] = False
    assert (hist[:, off] == 0).all() and m["nrm-noise-sd"][0] > 0
    s = summarise(
        {**m, "nrm-hist-noise-var": m["nrm-noise-sd"][0] ** 2}, ("CN", "AD", "FTD", "DLB")
    )
    assert s["noisy"] and all(v["noise_sd"] is None or v["noise_sd"] > 0 for v in s["auc"].values())


def test_exact_evaluation_scores_after_the_sites_own_offset(tiny_fdg, states, arrays):
    """Without DP the holdout scores every scan after its own offset from its normals."""
    import dataclasses

    from fedmi.client.normative import evaluate_scans

    train = [_site(tiny_fdg, states, s) for s in ("site-a", "site-b")]
    model, reference = _model_from([load_scans(s, "fdg-ad", ("CN",)) for s in train])
    holdout = _site(tiny_fdg, states, "site-c")
    groups = nm.evaluation_groups("fdg-ad")
    scans = load_scans(holdout, "fdg-ad", groups)
    probs = np.zeros(len(scans.labels))
    own = evaluate_scans(scans, groups, model, reference, probs, 0.5, own_offsets=True)
    plain = evaluate_scans(scans, groups, model, reference, probs, 0.5)
    ins = NormativeEvaluation(
        task="fdg-ad", normative_model=model.to_json(), normative_reference=reference.to_json()
    )
    m = dict(handle_normative_evaluation(holdout, arrays, ins)[contract.METRICS])
    assert m["nrm-fp"] == pytest.approx(list(own.fp)) and own.fp != plain.fp
    # what it is for: a scanner that reads every region 10 % low makes the holdout's
    # normals abnormal against the population model, not against its own offset
    low = dataclasses.replace(scans, profiles=scans.profiles - 0.1)
    own_low = evaluate_scans(low, groups, model, reference, probs, 0.5, own_offsets=True)
    plain_low = evaluate_scans(low, groups, model, reference, probs, 0.5)
    normals = groups[0]
    n = scans.labels.count(normals)
    assert plain_low.fp[0] / n > 0.5  # 0.68 here (0.05 unshifted)
    assert own_low.fp[0] / n < 0.2  # 0.11: six normals, the offset shrunk towards zero
