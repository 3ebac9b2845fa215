"""Pooling the training sites' feature moments for label-free adaptation."""

from __future__ import annotations

import numpy as np

from fedmi.server.federation.harmonization import pooled_classes, pooled_reference


def _reply(neg: np.ndarray, pos: np.ndarray, classes: bool = True) -> dict:
    both = np.concatenate([neg, pos])
    out = {
        "num-examples": len(both),
        "feat-mean": list(both.mean(0)),
        "feat-var": list(both.var(0)),
    }
    if classes:
        out |= {"num-positive": len(pos)}
        for suffix, v in (("-neg", neg), ("-pos", pos)):
            out |= {f"feat-mean{suffix}": list(v.mean(0)), f"feat-var{suffix}": list(v.var(0))}
    return out


def test_pooled_classes_are_exact_and_all_or_nothing():
    rng = np.random.default_rng(0)
    a = (rng.normal(size=(14, 3)), rng.normal(1.0, size=(11, 3)))
    b = (rng.normal(0.5, 2.0, size=(20, 3)), rng.normal(2.0, size=(30, 3)))
    classes = pooled_classes([_reply(*a), _reply(*b)])
    assert classes is not None
    np.testing.assert_allclose(classes.neg.mean, np.concatenate([a[0], b[0]]).mean(0))
    np.testing.assert_allclose(classes.pos.var, np.concatenate([a[1], b[1]]).var(0))
    assert (classes.neg.count, classes.pos.count) == (34, 41)
    pooled = pooled_reference([_reply(*a), _reply(*b)])
    assert pooled is not None
    mixed = classes.mixture(classes.prevalence)
    np.testing.assert_allclose(mixed.mean, pooled.mean)
    np.testing.assert_allclose(mixed.var, pooled.var)
    # one site without per-class moments (a class under its small-cell rule): none pooled
    assert pooled_classes([_reply(*a), _reply(*b, classes=False)]) is None
    assert pooled_classes([]) is None


def test_with_adaptation_off_no_site_is_asked_for_moments(monkeypatch):
    """``adaptation = "off"``: the coordinator asks no training site for its feature moments
    (nothing is released or charged) and the holdouts get no reference; "on" asks."""
    from fedmi.server.federation import harmonization as hz
    from fedmi.shared.run_config import RunConfig

    asked: list[str] = []

    def collect(grid, arrays, query, cfg, history):
        asked.append(query.message_type)
        return []

    monkeypatch.setattr(hz, "collect_from_training_sites", collect)
    off = RunConfig.from_mapping({"method": "fedmi", "adaptation": "off"})
    assert hz.collect_feature_reference(None, None, off, None) == (None, None)
    assert asked == []
    on = RunConfig.from_mapping({"method": "fedmi"})
    assert on.adaptation == "on"
    assert hz.collect_feature_reference(None, None, on, None) == (None, None)  # nobody answered
    assert len(asked) == 1
