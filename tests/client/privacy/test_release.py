"""Statistic releases under DP: the mechanisms' sensitivity, the query policy, the charge."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from flwr.app import ConfigRecord, MetricRecord, RecordDict

from fedmi.client.evaluation.private import (
    DP_HIST_BINS,
    EVALUATION_MECHANISMS,
    auc_m,
    private_evaluation,
)
from fedmi.client.privacy.accounting import epsilon_of
from fedmi.client.privacy.ledger import PrivacyLedger
from fedmi.client.privacy.release import (
    Release,
    ReleaseRefused,
    kind_rho,
    open_release,
    reserved_releases,
)
from fedmi.client.privacy.rounds import private_round
from fedmi.client.privacy.settings import PrivacySettings
from fedmi.client.training.loop import TrainSettings
from fedmi.shared import contract
from fedmi.shared.contract.privacy import rho_for_epsilon
from fedmi.shared.stats import delong_auc, sufficient_statistics
from tests.client.privacy.helpers import fake_site, tiny_data, tiny_model

EXACT = {name: 1e-9 for name in EVALUATION_MECHANISMS}  # noise sd ~0: the statistic itself


def _scores(rng, n_pos: int, n_neg: int):
    scores = np.concatenate([rng.uniform(0.3, 1, n_pos), rng.uniform(0, 0.7, n_neg)])
    labels = np.array([1] * n_pos + [0] * n_neg)
    return scores, labels


def test_the_auc_statistic_has_sensitivity_at_most_one_over_m():
    """Adding or removing any one scan moves S / (max(P, m)·max(N, m)) by at most 1/m."""
    rng = np.random.default_rng(0)
    for n_pos, n_neg, m in [(3, 5, 4), (6, 6, 3), (10, 2, 5), (1, 1, 2)]:
        s, y = _scores(rng, n_pos, n_neg)
        s = np.round(s, 1)  # ties too
        base = auc_m(s, y, m)
        for i in range(len(y)):  # remove one
            keep = np.arange(len(y)) != i
            assert abs(auc_m(s[keep], y[keep], m) - base) <= 1 / m + 1e-12
        for score, label in itertools.product(np.linspace(0, 1, 11), (0, 1)):  # add one
            moved = auc_m(np.append(s, score), np.append(y, label), m)
            assert abs(moved - base) <= 1 / m + 1e-12


def test_with_both_classes_at_least_m_it_is_the_exact_auc():
    s, y = _scores(np.random.default_rng(1), 12, 15)
    assert auc_m(s, y, 10) == pytest.approx(delong_auc(s, y).auc, abs=1e-12)


def test_without_noise_the_release_is_the_decile_statistics():
    """Derived counts come from the released histogram alone (post-processing)."""
    s, y = _scores(np.random.default_rng(2), 30, 30)
    stats, status = private_evaluation(s, y, Release(EXACT, 0.0), 10)
    assert status == "ok"
    reply = RecordDict(
        {
            contract.METRICS: MetricRecord(stats),  # type: ignore[arg-type]
            contract.SITE: ConfigRecord({"site-id": "s", "role": "holdout", "status": "ok"}),
        }
    )
    assert contract.check_reply(contract.EVALUATE, reply) == []  # declared, in range
    exact = sufficient_statistics(s, y)
    assert stats["tp"] == exact["tp"] and stats["fp"] == exact["fp"]
    assert stats["auc-exact"] == pytest.approx(delong_auc(s, y).auc, abs=1e-6)
    deciles = [sum(stats["hist-pos"][i : i + 10]) for i in range(0, 100, 10)]  # type: ignore[index]
    assert sum(v > 0 for v in stats["hist-pos"]) <= DP_HIST_BINS  # type: ignore[union-attr]
    assert sum(deciles) == 30 and stats["num-positive"] == 30


def test_a_class_below_k_sends_its_noisy_histograms_for_the_pooled_choice_only():
    """Status suppressed: no hist-pos/hist-neg (nothing of the site is reported), but the
    same, already charged, noisy deciles as pool-hist-* for the federation's threshold."""
    s, y = _scores(np.random.default_rng(4), 6, 30)
    stats, status = private_evaluation(s, y, Release(EXACT, 0.0), 10)
    assert status == "suppressed"
    assert "hist-pos" not in stats and "auc-exact" not in stats and "tp" not in stats
    reply = RecordDict(
        {
            contract.METRICS: MetricRecord(stats),  # type: ignore[arg-type]
            contract.SITE: ConfigRecord({"site-id": "s", "role": "train", "status": status}),
        }
    )
    assert contract.check_reply(contract.EXTERNAL, reply) == []
    assert sum(stats["pool-hist-pos"]) == 6 and sum(stats["pool-hist-neg"]) == 30
    exact = sufficient_statistics(s, y)
    for mine, full in (("pool-hist-pos", "hist-pos"), ("pool-hist-neg", "hist-neg")):
        deciles = [sum(stats[mine][i : i + 10]) for i in range(0, 100, 10)]
        assert deciles == [sum(exact[full][i : i + 10]) for i in range(0, 100, 10)]


def test_the_interval_includes_the_noise():
    """Over many draws the released interval covers the exact AUC about as often as it says."""
    rng = np.random.default_rng(3)
    s, y = _scores(rng, 28, 29)
    exact = delong_auc(s, y).auc
    noisy = {name: 1.0 for name in EVALUATION_MECHANISMS}
    covered = draws = 0
    for _ in range(300):
        stats, _ = private_evaluation(s, y, Release(noisy, 0.0), 10)
        if "auc-exact" in stats:
            draws += 1
            covered += stats["auc-ci-low"] <= exact <= stats["auc-ci-high"]
            assert stats["auc-noise-sd"] > 0
    assert draws > 250 and covered / draws >= 0.9


def test_the_noise_comes_from_the_operating_system():
    one, two = Release({"count": 1.0}, 0.0), Release({"count": 1.0}, 0.0)
    assert not np.array_equal(
        one.gaussian("count", np.zeros(20)), two.gaussian("count", np.zeros(20))
    )


@pytest.fixture
def site(tmp_path):
    return fake_site(tmp_path)


def _open(site, settings, kind, run="run-1"):
    return open_release(site, settings, run_id=run, kind=kind, mechanisms=EVALUATION_MECHANISMS)


def test_the_query_policy_caps_each_kind_per_run_and_all_per_day(site):
    settings = PrivacySettings(max_releases_per_day=4)
    _open(site, settings, contract.EXTERNAL)
    with pytest.raises(ReleaseRefused, match="1 evaluate.external") as refused:
        _open(site, settings, contract.EXTERNAL)
    assert refused.value.status == "refused"
    with pytest.raises(
        ReleaseRefused, match="releases no evaluate statistics"
    ):  # no per-round evaluations by default
        _open(site, settings, contract.EVALUATE)
    _open(site, settings, contract.QUERY)
    _open(site, settings, contract.QUERY)
    with pytest.raises(ReleaseRefused):
        _open(site, settings, contract.QUERY)
    _open(site, settings, contract.EXTERNAL, run="run-2")  # a new run: its own caps ...
    with pytest.raises(ReleaseRefused, match="4 releases today"):  # ... but not a new day
        _open(site, settings, contract.QUERY, run="run-3")
    ledger = PrivacyLedger.open(site.state_dir)
    kinds = [c["kind"] for c in ledger.charges()]
    assert kinds == [contract.EXTERNAL, contract.QUERY, contract.QUERY, contract.EXTERNAL]
    assert all(c["sample_rate"] == 1.0 and c["steps"] == 1 for c in ledger.charges())


def test_a_release_over_the_budget_is_refused_and_not_charged(site):
    settings = PrivacySettings(epsilon=0.5, release_share=0.999)
    granted = []
    with pytest.raises(ReleaseRefused) as refused:
        for run in range(10):  # one validation per run, until the budget is spent
            granted.append(_open(site, settings, contract.EXTERNAL, run=f"run-{run}"))
    assert refused.value.status == "budget-exhausted" and 1 <= len(granted) < 10
    charges = PrivacyLedger.open(site.state_dir).charges()
    assert len(charges) == len(granted) and charges[-1]["epsilon"] <= 0.5


def test_a_holdout_may_release_with_its_whole_budget_a_training_site_with_its_share(tmp_path):
    settings = PrivacySettings(epsilon=10.0)
    train_rho = kind_rho(settings, "train", contract.EXTERNAL)
    holdout_rho = kind_rho(settings, "holdout", contract.EXTERNAL)
    assert holdout_rho > 10 * train_rho
    assert kind_rho(settings, "holdout", contract.FEATURES) == 0.0  # not a holdout's kind
    # the kinds' shares of a training site add up to the run's release ρ
    kinds = (
        contract.QUERY,
        contract.EXTERNAL,
        contract.FEATURES,
        contract.OOD_STATS,
        contract.NORMATIVE_STATS,  # capped at one release per run
    )
    total = sum(
        kind_rho(settings, "train", k)
        * (2 if k in (contract.QUERY, contract.FEATURES, contract.OOD_STATS) else 1)
        for k in kinds
    )
    assert total == pytest.approx(rho_for_epsilon(0.2 * 10.0, settings.delta))


dp_accounting = pytest.importorskip("dp_accounting")


def test_the_ledger_composes_training_and_every_release_as_dp_accounting_does(site):
    """ε after training rounds and releases = dp_accounting's RDP composition (1e-3 rel.)."""
    settings = PrivacySettings(epsilon=6.0)
    x, y = tiny_data(24)
    train = TrainSettings(epochs=1, batch_size=8, learning_rate=0.1, optimizer="sgd", augment=False)
    _open(site, settings, contract.QUERY)
    for r in (1, 2):
        out = private_round(
            site,
            settings,
            tiny_model(),
            x,
            y,
            train,
            run_id="run-1",
            server_round=r,
            planned_rounds=2,
        )
        assert out.status == "ok"
    _open(site, settings, contract.OOD_STATS)
    _open(site, settings, contract.EXTERNAL)
    ledger = PrivacyLedger.open(site.state_dir)
    acc = dp_accounting.rdp.RdpAccountant()
    for c in ledger.charges():
        gaussian = dp_accounting.GaussianDpEvent(c["noise_multiplier"])
        if c["kind"] == "train":
            event = dp_accounting.PoissonSampledDpEvent(c["sample_rate"], gaussian)
            acc.compose(dp_accounting.SelfComposedDpEvent(event, c["steps"]))
        else:
            acc.compose(gaussian)
    theirs = acc.get_epsilon(settings.delta)
    ours = epsilon_of(ledger.history(), settings.delta)
    assert ours == pytest.approx(theirs, rel=1e-3)
    assert ours == pytest.approx(ledger.charges()[-1]["epsilon"], rel=1e-9) and ours <= 6.0
    assert [c["kind"] for c in ledger.charges()] == [
        contract.QUERY,
        "train",
        "train",
        contract.OOD_STATS,
        contract.EXTERNAL,
    ]
    assert reserved_releases(ledger, settings, "train", "run-1") == [] or math.isfinite(
        reserved_releases(ledger, settings, "train", "run-1")[0][0]
    )
