"""Centiloid equations and the amyloid phantom's exact true SUVR."""

from __future__ import annotations

import pytest

from fedmi.simulations.phantom.amyloid import (
    AMYLOID_THRESHOLD_CL,
    CENTILOID_EQUATIONS,
    centiloid_from_suvr,
    suvr_from_centiloid,
)
from fedmi.simulations.phantom.tasks import build_basis, subject_coefficients
from tests.simulations.phantom.helpers import GRID, draw


@pytest.mark.parametrize(
    ("tracer", "slope", "intercept"),
    [
        ("florbetapir", 175.4, -182.3),
        ("florbetaben", 153.4, -154.9),
        ("flutemetamol", 121.42, -121.16),
    ],
)
def test_centiloid_equations_are_the_published_lines(
    tracer: str, slope: float, intercept: float
) -> None:
    for cl in (0.0, 24.0, 100.0):
        assert suvr_from_centiloid(cl, tracer) == (cl - intercept) / slope
        assert centiloid_from_suvr(suvr_from_centiloid(cl, tracer), tracer) == pytest.approx(cl)
    assert suvr_from_centiloid(100.0, "florbetapir") == (100 + 182.3) / 175.4


def test_pib_anchors() -> None:
    assert suvr_from_centiloid(0.0, "pib") == pytest.approx(1.009, abs=1e-12)
    assert suvr_from_centiloid(100.0, "pib") == pytest.approx(2.076, abs=1e-12)
    assert CENTILOID_EQUATIONS["pib"][0] == pytest.approx(93.72, abs=0.01)


def test_amyloid_true_suvr_is_exact() -> None:
    basis = build_basis("amyloid", GRID)
    for seed, tracer in enumerate(["pib", "florbetapir", "florbetaben", "flutemetamol"]):
        t = draw("amyloid", seed, tracer=tracer, group_probs={"CN": 0.5, "AD": 0.5})
        c = subject_coefficients(t, basis)
        ctx = basis.region_means["cortex_composite"] @ c
        wc = basis.region_means["whole_cerebellum"] @ c
        assert ctx / wc == pytest.approx(t.suvr_true, rel=1e-9)
        assert wc == pytest.approx(t.global_level, rel=1e-9)
        assert t.suvr_true == pytest.approx(suvr_from_centiloid(t.centiloid, tracer), abs=1e-5)
        assert t.amyloid_positive_true == (t.centiloid >= AMYLOID_THRESHOLD_CL)
