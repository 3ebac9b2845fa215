"""The regional model: fixed atlas pooling, per-scan standardisation, a small federated head."""

import numpy as np
import torch

from fedmi.shared.anatomy import MNI_1MM, PARCELLATION_LATERAL, aal3_labels, parcellation
from fedmi.shared.grid import resample_to_grid
from fedmi.shared.model import ModelSpec, build_model, federated_state_dict
from fedmi.shared.regional import RegionPooling, region_index
from fedmi.shared.tasks import TEMPLATE_GRID_4MM


def test_region_pooling_gives_exact_region_means():
    pool = RegionPooling(TEMPLATE_GRID_4MM)
    index, ids = region_index(TEMPLATE_GRID_4MM)
    rng = np.random.default_rng(0)
    vol = rng.uniform(0.5, 2.0, TEMPLATE_GRID_4MM.shape).astype(np.float32)
    out = pool(torch.from_numpy(vol)[None, None]).numpy()[0]
    flat = vol.reshape(-1)
    for slot in (0, len(ids) // 2, len(ids) - 1):
        np.testing.assert_allclose(out[slot], flat[index == slot].mean(), rtol=1e-5)
    assert len(ids) == pool.num_regions
    assert pool.region_names == ids


def test_parcellation_covers_every_aal3_label_once_per_hemisphere():
    composite = parcellation()
    assert sorted(composite) == list(range(1, 171))
    # lateral composites pair an odd (left) AAL3 label with the next (right) one
    for left, name in composite.items():
        if name.endswith("_L"):
            assert left % 2 == 1 and composite[left + 1] == name[:-2] + "_R"
    names = region_index(TEMPLATE_GRID_4MM)[1]
    assert len(names) == len(set(names))
    assert {"precuneus_L", "precuneus_R", "putamen_L", "caudate_R", "vermis"} <= set(names)
    assert 40 <= len(names) <= len(set(composite.values()))


def test_a_composite_is_the_voxel_weighted_mean_of_its_aal3_labels():
    """Pooling a volume that is constant per AAL3 label gives each composite the mean of its
    labels weighted by their voxel counts on the grid."""
    labels = resample_to_grid(aal3_labels(), MNI_1MM.affine, TEMPLATE_GRID_4MM, order=0)
    vol = (labels.astype(np.float32) / 10.0 + 1.0).astype(np.float32)
    out = RegionPooling(TEMPLATE_GRID_4MM)(torch.from_numpy(vol)[None, None]).numpy()[0]
    names = region_index(TEMPLATE_GRID_4MM)[1]
    members = [i for i, n in parcellation().items() if n == "precuneus_L"]
    assert members == [71]
    np.testing.assert_allclose(out[names.index("precuneus_L")], 71 / 10 + 1, rtol=1e-5)
    ids = np.array(PARCELLATION_LATERAL["medial_temporal"]) + 1  # the right hemisphere
    counts = np.array([(labels == i).sum() for i in ids])
    expected = (counts * (ids / 10 + 1)).sum() / counts.sum()
    np.testing.assert_allclose(out[names.index("medial_temporal_R")], expected, rtol=1e-5)


def test_only_the_head_is_federated_and_the_atlas_is_not_sent():
    model = build_model(ModelSpec(arch="regional"))
    assert list(federated_state_dict(model)) == ["backbone.head.weight", "backbone.head.bias"]
    assert sum(p.numel() for p in model.parameters()) == model.backbone.head.in_features + 1


def test_features_ignore_the_global_level_but_keep_the_pattern():
    model = build_model(ModelSpec(arch="regional")).eval()
    rng = np.random.default_rng(1)
    x = torch.from_numpy(rng.uniform(0.8, 1.5, (2, 1, *TEMPLATE_GRID_4MM.shape)).astype(np.float32))
    f = model.features(x)
    # a global scale (e.g. a different reference-region level) does not change the features
    torch.testing.assert_close(model.features(x * 1.7), f, rtol=1e-4, atol=1e-4)
    assert not torch.allclose(f[0], f[1])


def test_opacus_per_sample_gradients_work():
    from opacus import GradSampleModule

    model = build_model(ModelSpec(arch="regional"))
    gsm = GradSampleModule(model)
    x = torch.rand(3, 1, *TEMPLATE_GRID_4MM.shape) + 0.5
    gsm(x).sum().backward()
    assert model.backbone.head.weight.grad_sample.shape == (3, 1, model.backbone.head.in_features)


def test_template_features_are_the_encoders_view_of_each_task_template():
    """The head's centre is the deterministic encoder output (pooling, scaled log, per-scan
    standardisation) of the task's own template, one value per region: mean 0, variance 1."""
    from fedmi.shared.regional import template_features
    from fedmi.shared.tasks import TASKS
    from fedmi.shared.templates import task_template

    model = build_model(ModelSpec(arch="regional")).eval()
    centres = {}
    for name, task in TASKS.items():
        t = template_features(name)
        vol = torch.from_numpy(np.array(task_template(task, TEMPLATE_GRID_4MM)))[None, None]
        torch.testing.assert_close(t, model.features(vol)[0], rtol=1e-5, atol=1e-5)
        assert t.shape == (model.backbone.head.in_features,)
        assert abs(float(t.mean())) < 1e-5 and abs(float(t.var(unbiased=False)) - 1) < 1e-3
        centres[name] = t
    # DaT's striatum dominates its pattern; FDG's and amyloid's differ from it and each other
    assert float((centres["dat-pd"] - centres["fdg-ad"]).abs().max()) > 1.0
    assert float((centres["amyloid"] - centres["fdg-ad"]).abs().max()) > 0.3


def test_the_head_reads_the_deviation_from_the_template_and_sends_nothing_more():
    from fedmi.shared.regional import template_features

    centred = build_model(ModelSpec(arch="regional", task="dat-pd")).eval()
    plain = build_model(ModelSpec(arch="regional")).eval()
    plain.load_state_dict(centred.state_dict())
    assert list(federated_state_dict(centred)) == list(federated_state_dict(plain))
    x = torch.rand(2, 1, *TEMPLATE_GRID_4MM.shape) + 0.5
    w = centred.backbone.head.weight[0]
    with torch.no_grad():
        shift = plain(x) - centred(x)
    torch.testing.assert_close(
        shift, (w @ template_features("dat-pd")).expand(2), rtol=1e-5, atol=1e-5
    )
    try:
        template_features("dat")
    except ValueError as exc:
        assert "dat-pd" in str(exc)
    else:
        raise AssertionError("an unknown task must be refused")


def test_the_default_recipe_calls_both_classes_where_the_uncentred_head_saturated():
    """DaT-like scans (the dat-pd template with a lower striatal uptake for PD): six rounds of
    the regional defaults (full-batch SGD, momentum, 3 epochs a round) separate the classes at
    0.5 with the head centred on the template; the same training of the uncentred head
    oscillates along the anatomy every scan shares until every control is called PD."""
    import dataclasses

    from fedmi.client.training.loop import TrainSettings, predict, train_local
    from fedmi.shared.run_config import MODEL_DEFAULTS
    from fedmi.shared.tasks import TASKS
    from fedmi.shared.templates import task_template

    dat = TASKS["dat-pd"]
    rng = np.random.default_rng(0)

    def scan(striatum: float) -> np.ndarray:
        uptake = dataclasses.replace(dat.uptake, regions=(("striatum", float(striatum)),))
        vol = task_template(dataclasses.replace(dat, uptake=uptake), TEMPLATE_GRID_4MM)
        vol = vol * rng.uniform(0.8, 1.2)
        return vol * (1 + 0.03 * rng.standard_normal(vol.shape)) + 0.01

    n = 40
    y = (np.arange(n) % 3 != 0).astype(np.float32)  # two thirds PD
    striatum = np.where(y == 1, rng.normal(3.0, 0.4, n), rng.normal(5.0, 0.4, n))
    x = torch.from_numpy(np.stack([scan(v) for v in striatum]).astype(np.float32))[:, None]
    d = MODEL_DEFAULTS["regional"]
    called = {}
    for task in ("dat-pd", None):
        torch.manual_seed(0)
        model = build_model(ModelSpec(arch="regional", task=task))
        for r in range(6):
            settings = TrainSettings(
                epochs=d.local_epochs,
                batch_size=d.batch_size,
                learning_rate=d.learning_rate,
                optimizer=d.optimizer,
                augment=d.augment,
                seed=r,
            )
            train_local(model, x, torch.from_numpy(y), settings)
        s = predict(model, x)
        called[task] = ((s[y == 1] >= 0.5).mean(), (s[y == 0] < 0.5).mean())
    sens, spec = called["dat-pd"]
    assert sens >= 0.9 and spec >= 0.6, called
    assert called[None][1] <= 0.1, called  # uncentred: the controls are called PD
