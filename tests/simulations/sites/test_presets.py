"""Presets: site counts and sizes; ``ood`` (a seen-resolution control holdout and an
unseen-resolution holdout) and ``harmonization`` (resolutions 3.5–14 mm)."""

from __future__ import annotations

from fedmi.simulations.sites.profiles import make_sites
from fedmi.simulations.sites.scanners import PET_SCANNERS


def test_presets_site_counts() -> None:
    tiny = make_sites("fdg-ad", "tiny", seed=0)
    assert [s.role for s in tiny] == ["train", "train", "holdout"]
    for task in ("fdg-ad", "amyloid", "dat-pd"):
        sites = make_sites(task, "default", seed=0)
        assert [s.role for s in sites] == ["train"] * 4 + ["holdout"]
        assert 300 <= sum(s.n_subjects for s in sites) <= 450
    amy = make_sites("amyloid", "default", seed=0)
    assert len({s.tracer for s in amy if s.role == "train"}) == 4
    assert all(s.modality == "NM" for s in make_sites("dat-pd", "default", seed=0))
    assert len(make_sites("fdg-ad", "tiny", seed=0, n_sites=6)) == 6


def test_ood_preset_has_an_unseen_resolution_holdout():
    sites = make_sites("fdg-ad", "ood", seed=0)
    train = [s for s in sites if s.role == "train"]
    hold = [s for s in sites if s.role == "holdout"]
    assert [s.site_id for s in hold] == ["site-e", "site-f"]
    worst_train = max(s.fwhm_mm for s in train)
    assert hold[0].fwhm_mm <= 9.0  # the control: a resolution the training scanners cover
    assert 12.0 <= hold[1].fwhm_mm <= 14.0 and hold[1].fwhm_mm > worst_train + 3
    assert hold[1].model not in PET_SCANNERS and all(s.tracer == "fdg" for s in sites)
    assert len(hold[1].convolution_kernel) <= 16  # DICOM SH


def test_other_presets_draw_as_before():
    default = make_sites("fdg-ad", "default", seed=0)
    assert [s.n_subjects for s in default] == [101, 60, 55, 46, 79]
    assert [s.role for s in default].count("holdout") == 1
    ood = make_sites("fdg-ad", "ood", seed=0)
    assert [s.fwhm_mm for s in ood[:5]] == [s.fwhm_mm for s in default]


def test_harmonization_preset_spans_3_5_to_14_mm():
    """Amyloid: four training sites of three tracers on 3.5–9 mm scanners; a holdout with a
    tracer and a vendor no training site has, and one coarser than every training site."""
    sites = make_sites("amyloid", "harmonization", seed=0)
    train = [s for s in sites if s.role == "train"]
    hold = [s for s in sites if s.role == "holdout"]
    assert [s.site_id for s in hold] == ["site-e", "site-f"]
    assert {s.tracer for s in train} == {"pib", "florbetapir", "flutemetamol"}
    assert 3.5 <= min(s.fwhm_mm for s in train) <= 5.0 <= 7.0 <= max(s.fwhm_mm for s in train)
    assert hold[0].tracer not in {s.tracer for s in train}
    assert hold[0].manufacturer not in {s.manufacturer for s in train}
    assert 12.0 <= hold[1].fwhm_mm <= 14.0 and hold[1].model not in PET_SCANNERS
    assert 425 <= sum(s.n_subjects for s in sites) <= 510
