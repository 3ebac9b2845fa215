"""PET series → native SUVbw volume: values, geometry, file order and encodings."""

from __future__ import annotations

import random
import shutil
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.uid import ImplicitVRLittleEndian

from fedmi.client.ingest.errors import IngestError
from fedmi.client.ingest.pipeline import ingest_site
from fedmi.client.ingest.series import load_series
from fedmi.client.ingest.template import head_shift, to_template
from fedmi.shared.anatomy import region_weights
from fedmi.shared.tasks import get_task
from fedmi.simulations.dicom import PetMeta, write_pet_series
from tests.client.ingest.helpers import brain, write_pet


@pytest.fixture(scope="module")
def pet(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    return write_pet(tmp_path_factory.mktemp("pet") / "s", file_naming="im")


def test_suv_equals_truth(pet: list[Path]) -> None:
    truth, aff = brain()
    native = load_series(pet)
    assert native.modality == "PT" and native.tracer == "fdg"
    assert native.volume.shape == truth.shape
    np.testing.assert_allclose(native.affine_lps, aff, atol=1e-4)
    hot = truth > 0.1 * truth.max()
    rel = np.abs(native.volume[hot] - truth[hot]) / truth[hot]
    assert rel.max() < 0.005
    assert native.suv_factor == pytest.approx(
        70.0 * 1000.0 / (185e6 * 2.0 ** (-2700.0 / 6586.2)), rel=1e-6
    )
    assert native.voxel_size_mm == [3.5, 3.5, 3.5]


def test_order_and_names_do_not_matter(pet: list[Path], tmp_path: Path) -> None:
    ref = load_series(pet).volume
    shuffled = list(pet)
    random.Random(3).shuffle(shuffled)
    renamed = []
    for i, p in enumerate(reversed(pet)):
        renamed.append(tmp_path / f"z{i:03d}")
        shutil.copy(p, renamed[-1])
    for files in (pet[::-1], shuffled, renamed):
        np.testing.assert_array_equal(load_series(files).volume, ref)


def test_implicit_vr_little_endian(pet: list[Path], tmp_path: Path) -> None:
    out = []
    for p in pet:
        ds = pydicom.dcmread(p)
        ds.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian
        out.append(tmp_path / p.name)
        ds.save_as(out[-1], enforce_file_format=True)
    assert pydicom.dcmread(out[0]).file_meta.TransferSyntaxUID == ImplicitVRLittleEndian
    np.testing.assert_array_equal(load_series(out).volume, load_series(pet).volume)
    site = tmp_path / "site"
    (site / "dicom").mkdir(parents=True)
    for p in out:
        p.rename(site / "dicom" / p.name)
    (site / "labels.csv").write_text("PatientID,label\nP01,CN\n")
    report = ingest_site(site, "fdg-ad", tmp_path / "state")
    assert report.summary["series_accepted"] == 1 and report.rejected == []


def test_feet_first_slices_are_sorted_by_position(tmp_path: Path) -> None:
    truth, aff = brain()
    rev = aff.copy()
    rev[:3, 3] = aff[:3, 3] + aff[:3, 2] * (truth.shape[2] - 1)
    rev[:3, 2] = -aff[:3, 2]
    files = write_pet_series(truth[:, :, ::-1], rev, PetMeta(), tmp_path)
    native = load_series(files)
    np.testing.assert_allclose(native.affine_lps, aff, atol=1e-4)
    hot = truth > 0.1 * truth.max()
    np.testing.assert_allclose(native.volume[hot], truth[hot], rtol=5e-3)


def test_template_ratio_and_head_shift(tmp_path: Path) -> None:
    task = get_task("fdg-ad")
    shift = (9.0, -12.0, 6.0)
    suv, aff = brain(shift_mm=shift)
    files = write_pet_series(suv, aff, PetMeta(), tmp_path)
    native = load_series(files)
    centred = head_shift(native.volume, native.affine_ras, task.grid)
    base = load_series(write_pet(tmp_path / "base"))
    shift0 = head_shift(base.volume, base.affine_ras, task.grid)
    np.testing.assert_allclose(centred - shift0, shift, atol=1.5)
    result = to_template(native.volume, native.affine_ras, task)
    w = region_weights(task.reference_region, task.grid)
    assert result.volume.shape == task.grid.shape and result.volume.dtype == np.float32
    assert float(np.sum(w * result.volume) / np.sum(w)) == pytest.approx(1.0, rel=1e-5)
    assert result.coverage > 0.95
    assert 0.5 < result.reference_value < 4.0


def test_missing_weight_is_an_ingest_error(tmp_path: Path) -> None:
    files = write_pet(tmp_path, extra={"PatientWeight": None})
    with pytest.raises(IngestError) as err:
        load_series(files)
    assert err.value.reason == "missing_suv_tags"
    assert "(0010,1030)" in err.value.message
