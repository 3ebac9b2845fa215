"""Harmonization layers: groups from headers, local/federated split, Opacus, moments."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from opacus import GradSampleModule

from fedmi.shared import contract
from fedmi.shared.harmonization import (
    ClassMoments,
    FeatureMoments,
    build_method_model,
    group_key,
    moment_distance,
    pool_moments,
    reference_config,
    reference_from_config,
    with_groups,
)
from fedmi.shared.model import ModelSpec, build_model, federated_state_dict, local_state_dict

SPEC = ModelSpec(in_shape=(1, 16, 16, 16), channels=(4, 8), strides=(2, 2), embedding=8, arch="cnn")


def test_group_key_from_header_fields():
    row = {
        "tracer": "pib",
        "manufacturer": "SIEMENS",
        "model": "Biograph  mCT",
        "reconstruction": "PSF+TOF 4i21s",
    }
    assert group_key(row) == "pib|SIEMENS|Biograph mCT|PSF+TOF 4i21s"
    # an older ingest cache without (0054,1103): still grouped by tracer and scanner
    assert group_key({**row, "reconstruction": None}).endswith("|unknown")
    assert group_key(row) != group_key({**row, "tracer": "florbetapir"})


@pytest.mark.parametrize("method", ["fedbn", "fedmi"])
def test_local_layers_are_never_federated(method):
    net = build_method_model(method, SPEC, n_groups=3)
    fed, loc = set(federated_state_dict(net)), set(local_state_dict(net))
    assert loc and not fed & loc
    # the federated names do not depend on the site's number of groups
    assert fed == set(federated_state_dict(build_method_model(method, SPEC, n_groups=1)))
    plain = set(federated_state_dict(build_model(SPEC)))
    if method == "fedbn":  # GroupNorm affines become local
        assert fed < plain and all(".N." in k for k in plain - fed)
    else:  # adapter and norm corrections are added, the federated norm stays
        assert len(fed) == len(plain)


def test_each_scan_uses_its_groups_parameters():
    torch.manual_seed(0)
    net = build_method_model("fedmi", SPEC, n_groups=2).eval()
    with torch.no_grad():
        net.harmonizer.scale.weight[1] = 2.0
    x = torch.rand(2, 1, 16, 16, 16)
    both0 = net(with_groups(x, [0, 0]))
    mixed = net(with_groups(x, [0, 1]))
    assert torch.allclose(both0[0], mixed[0])
    assert not torch.allclose(both0[1], mixed[1])
    # one channel = everybody in group 0; identity adapter = the plain input
    assert torch.allclose(net(x), both0)


@pytest.mark.parametrize("method", ["fedbn", "fedmi"])
@pytest.mark.parametrize("functorch", [False, True])
def test_opacus_per_sample_gradients(method, functorch):
    net = build_method_model(method, SPEC, n_groups=2)
    gsm = GradSampleModule(net, force_functorch=functorch)
    gsm(with_groups(torch.rand(3, 1, 16, 16, 16), [0, 1, 1])).sum().backward()
    for name, p in net.named_parameters():
        assert p.grad_sample is not None and p.grad_sample.shape[0] == 3, name


def test_pool_moments_is_exact():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(7, 4)), rng.normal(2.0, 3.0, size=(12, 4))
    parts = [FeatureMoments(len(v), v.mean(0), v.var(0)) for v in (a, b)]
    pooled = pool_moments(parts)
    both = np.concatenate([a, b])
    assert pooled is not None and pooled.count == 19
    np.testing.assert_allclose(pooled.mean, both.mean(0))
    np.testing.assert_allclose(pooled.var, both.var(0))
    assert float(moment_distance(both.mean(0), both.var(0), pooled)) == pytest.approx(0.0)


def test_feature_reply_and_harmonization_field_are_declared():
    from flwr.app import ConfigRecord, MetricRecord, RecordDict

    site = {"site-id": "a", "role": "train", "status": "ok", "task": "amyloid"}
    ok = RecordDict(
        {
            contract.METRICS: MetricRecord(
                {"num-examples": 12, "feat-mean": [0.1, 0.2], "feat-var": [1.0, 2.0]}
            ),
            contract.SITE: ConfigRecord(site),
        }
    )
    assert contract.check_reply(contract.FEATURES, ok) == []
    ragged = RecordDict(
        {
            contract.METRICS: MetricRecord(
                {"num-examples": 12, "feat-mean": [0.1], "feat-var": [1.0, 2.0]}
            ),
            contract.SITE: ConfigRecord(site),
        }
    )
    assert contract.check_reply(contract.FEATURES, ragged)
    ev = RecordDict(
        {
            contract.METRICS: MetricRecord({"num-examples": 3}),
            contract.SITE: ConfigRecord({**site, "harmonization": "adapted"}),
        }
    )
    assert contract.check_reply(contract.EXTERNAL, ev) == []
    ev[contract.SITE]["harmonization"] = "averaged-secretly"
    assert contract.check_reply(contract.EXTERNAL, ev)


def _moments(v: np.ndarray) -> FeatureMoments:
    return FeatureMoments(len(v), v.mean(0), v.var(0))


def test_class_mixture_is_exact():
    """Mixed at the pooled prevalence the classes give the pooled moments; at another
    prevalence, the moments of scans drawn in that proportion."""
    rng = np.random.default_rng(1)
    neg, pos = rng.normal(size=(30, 3)), rng.normal(1.5, 2.0, size=(20, 3))
    classes = ClassMoments(_moments(neg), _moments(pos))
    assert classes.prevalence == pytest.approx(0.4)
    pooled = pool_moments([classes.neg, classes.pos])
    assert pooled is not None
    mixed = classes.mixture(0.4)
    np.testing.assert_allclose(mixed.mean, pooled.mean)
    np.testing.assert_allclose(mixed.var, pooled.var)
    # 80 % positives: 5 negatives with all 20 positives
    sub = np.concatenate([neg[:5], pos])
    shifted = ClassMoments(_moments(neg[:5]), _moments(pos)).mixture(0.8)
    np.testing.assert_allclose(shifted.mean, sub.mean(0))
    np.testing.assert_allclose(shifted.var, sub.var(0))


def test_reference_config_round_trip():
    rng = np.random.default_rng(2)
    neg, pos = _moments(rng.normal(size=(12, 4))), _moments(rng.normal(1.0, size=(10, 4)))
    classes = ClassMoments(neg, pos)
    ref = classes.mixture(classes.prevalence)
    got, got_classes = reference_from_config(reference_config(ref, classes))
    assert got is not None and got_classes is not None
    np.testing.assert_allclose(got.mean, ref.mean)
    np.testing.assert_allclose(got_classes.pos.var, pos.var)
    assert (got_classes.neg.count, got_classes.pos.count) == (12, 10)
    # without classes, with a class of another width, or with an empty class: pooled only
    assert reference_from_config(reference_config(ref))[1] is None
    bad = reference_config(ref, classes) | {"feat-mean-pos": [0.0], "feat-var-pos": [1.0]}
    assert reference_from_config(bad)[1] is None
    empty = reference_config(ref, classes) | {"feat-count-neg": 0}
    assert reference_from_config(empty)[1] is None
    assert reference_from_config({}) == (None, None)


def test_feature_reply_with_class_moments_is_declared():
    from flwr.app import ConfigRecord, MetricRecord, RecordDict

    site = ConfigRecord({"site-id": "a", "role": "train", "status": "ok", "task": "amyloid"})
    lists = {k: [0.1, 0.2] for k in contract.FEATURE_LISTS}
    metrics = {"num-examples": 24, "num-positive": 11, **lists}
    ok = RecordDict({contract.METRICS: MetricRecord(metrics), contract.SITE: site})
    assert contract.check_reply(contract.FEATURES, ok) == []
    ragged = dict(metrics, **{"feat-var-pos": [1.0]})
    bad = RecordDict({contract.METRICS: MetricRecord(ragged), contract.SITE: site})
    assert any("one common length" in p for p in contract.check_reply(contract.FEATURES, bad))
    # per-class moments arrive complete, with both classes present, or not at all
    partial = {k: v for k, v in metrics.items() if k != "feat-var-neg"}
    for wrong, text in (
        (partial, "need all of"),
        (dict(metrics, **{"num-positive": 24}), "strictly"),
    ):
        reply = RecordDict({contract.METRICS: MetricRecord(wrong), contract.SITE: site})
        assert any(text in p for p in contract.check_reply(contract.FEATURES, reply))
