"""The DaT phantom: posterior putamen first, the affected side, SWEDD label noise."""

from __future__ import annotations

import pytest

from fedmi.simulations.phantom.dat import DAT_TRUE_RATIO_YOUNG
from tests.simulations.phantom.helpers import draw


def test_dat_pd_posterior_putamen_first() -> None:
    subjects = [draw("dat-pd", s, group_probs={"PD": 1.0}, label_noise=0.0) for s in range(20)]
    for t in subjects:
        r = t.dat_ratio_true
        for side in "LR":
            assert r[f"putamen_post_{side}"] < r[f"putamen_ant_{side}"] < r[f"caudate_{side}"]
        other = "L" if t.affected_side == "R" else "R"
        assert r[f"putamen_post_{t.affected_side}"] < r[f"putamen_post_{other}"] * 1.1
    hc = draw("dat-pd", 3)
    young = DAT_TRUE_RATIO_YOUNG
    assert 0.5 * young < hc.dat_ratio_true["caudate_L"] < 1.4 * young
    row = hc.row()
    assert row["putamen_sbr_true_L"] == pytest.approx(
        (hc.dat_ratio_true["putamen_ant_L"] + hc.dat_ratio_true["putamen_post_L"]) / 2 - 1, abs=1e-3
    )


def test_dat_swedd_label_noise() -> None:
    t = draw("dat-pd", 0, group_probs={"PD": 1.0}, label_noise=1.0)
    assert t.label == "PD" and t.swedd and t.label_noise
    assert min(t.dat_ratio_true.values()) > 2.0
