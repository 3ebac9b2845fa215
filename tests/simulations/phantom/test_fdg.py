"""The FDG phantom: AD hypometabolism and MCI conversion."""

from __future__ import annotations

import numpy as np

from fedmi.simulations.phantom.tasks import build_basis, subject_coefficients
from tests.simulations.phantom.helpers import GRID, draw


def test_fdg_ad_lowers_pcc_relative_to_pons() -> None:
    basis = build_basis("fdg-ad", GRID)
    cn = draw("fdg-ad", 1)
    ad = draw("fdg-ad", 1)
    cn.severity, ad.severity = 0.0, 1.0
    ratio = {}
    for name, t in (("cn", cn), ("ad", ad)):
        c = subject_coefficients(t, basis)
        ratio[name] = (basis.region_means["posterior_cingulate"] @ c) / (
            basis.region_means["pons"] @ c
        )
    assert 0.75 < ratio["ad"] / ratio["cn"] < 0.9  # −10…−25 % at severity 1 (§2.3)
    assert ratio["cn"] > 1.3  # cortex well above pons in FDG


def test_fdg_mci_labels_and_converters() -> None:
    subjects = [draw("fdg-ad", s, group_probs={"MCI": 1.0}) for s in range(200)]
    assert {t.label for t in subjects} == {"MCI-stable", "MCI-converter"}
    sev_conv = np.mean([t.severity for t in subjects if t.converter])
    sev_stable = np.mean([t.severity for t in subjects if not t.converter])
    assert sev_conv > sev_stable
