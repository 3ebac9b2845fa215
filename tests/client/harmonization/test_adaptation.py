"""Site-local harmonization at a site: never sent, survives restarts, label-free adaptation."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from flwr.app import ConfigRecord, Context, Message, RecordDict
from scipy import ndimage

from fedmi.client.app import build_client_app
from fedmi.client.data import SiteData
from fedmi.client.harmonization import state as local_state
from fedmi.client.harmonization.adaptation import (
    adapt_to_reference,
    feature_moments,
    grouped_distance,
    scan_groups,
)
from fedmi.client.site.settings import SiteSettings
from fedmi.shared import contract
from fedmi.shared.harmonization import (
    ClassMoments,
    FeatureMoments,
    HarmonizedNet,
    build_method_model,
    moment_distance,
    reference_config,
    with_groups,
)
from fedmi.shared.instructions import INSTRUCTIONS, TrainInstruction
from fedmi.shared.model import ModelSpec, federated_state_dict, local_state_dict
from fedmi.shared.tasks import get_task

SPEC = ModelSpec(in_shape=(1, 16, 16, 16), channels=(4, 8), strides=(2, 2), embedding=8, arch="cnn")


def _config(method: str, message_type: str) -> ConfigRecord:
    """The instruction of ``message_type`` for ``method`` (one local epoch, batch 4)."""
    if message_type == contract.TRAIN:
        ins = TrainInstruction(
            task="fdg-ad", method=method, local_epochs=1, batch_size=4, server_round=1
        )
    else:
        ins = INSTRUCTIONS[message_type](task="fdg-ad", method=method)
    return ins.to_record()


@pytest.fixture
def context_for(tiny_fdg, tmp_path, ingested):
    def make(site: str) -> Context:
        if not (tmp_path / site / "ingest").exists():
            ingested(tiny_fdg / site, tmp_path / site)
        node_config = {
            "data-dir": str(tiny_fdg / site),
            "state-dir": str(tmp_path / site),
            "min-cell-count": 1,
            "dp": "off",
        }
        return Context(
            run_id=1, node_id=7, node_config=node_config, state=RecordDict(), run_config={}
        )

    return make


def test_fedmi_train_reply_never_carries_local_layers(flower_identity, context_for, tmp_path):
    app = build_client_app()
    torch.manual_seed(0)
    sent = contract.array_record(federated_state_dict(build_method_model("fedmi")))
    msg = Message(
        content=RecordDict(
            {contract.CONFIG: _config("fedmi", contract.TRAIN), contract.ARRAYS: sent}
        ),
        dst_node_id=7,
        message_type=contract.TRAIN,
    )
    reply = app(msg, context_for("site-a"))
    assert reply.content[contract.SITE]["status"] == "ok"
    arrays = reply.content[contract.ARRAYS]
    stored = local_state.read_state(tmp_path / "site-a" / "harmonization" / "fdg-ad-fedmi.pt")
    assert stored is not None and stored["status"] == "trained"
    local_names = set(stored["state"])
    assert local_names and not local_names & set(arrays.keys())
    assert set(arrays.keys()) == set(sent.keys())
    # no outbound array equals any trained local tensor, whatever its name
    for t in stored["state"].values():
        assert not any(
            a.numpy().shape == tuple(t.shape) and np.array_equal(a.numpy(), t.numpy())
            for a in arrays.values()
        )
    # the trained local layers moved away from identity
    assert any(
        not torch.equal(t, local_state_dict(build_method_model("fedmi"))[k])
        for k, t in stored["state"].items()
        if t.shape[0] == 1
    )

    # the site's evaluation then says it used its trained layers
    ev = Message(
        content=RecordDict(
            {contract.CONFIG: _config("fedmi", contract.EXTERNAL), contract.ARRAYS: arrays}
        ),
        dst_node_id=7,
        message_type=contract.EXTERNAL,
    )
    out = app(ev, context_for("site-a"))
    assert out.content[contract.SITE]["harmonization"] == "trained"


def _site(tmp_path) -> SiteSettings:
    return SiteSettings("s", "train", tmp_path, tmp_path / "state", tmp_path / "cache", 1)


def test_local_layers_survive_a_restart(tmp_path, monkeypatch):
    site = _site(tmp_path)
    data = SiteData(
        x=torch.rand(3, 1, 16, 16, 16),
        y=torch.tensor([0.0, 1.0, 0.0]),
        patient_keys=["a", "b", "c"],
        is_test=np.array([False, False, True]),
    )
    keys = ["pib|GE|DMI|q", "pib|GE|DMI|q", "fbp|SIEMENS|mCT|psf"]
    monkeypatch.setattr(local_state, "site_group_keys", lambda s, t: list(keys))
    hz = local_state.load_site_harmonization(site, "fdg-ad", "fedmi", data, SPEC)
    assert hz.status == "identity" and len(hz.groups) == 2
    with torch.no_grad():
        for p in local_state_dict(hz.model):
            hz.model.get_parameter(p).uniform_(-1, 1)
    before = local_state_dict(hz.model)
    path = hz.save("trained")
    assert path.exists() and not list(path.parent.glob(".*.tmp"))

    local_state.clear_caches()  # a new process: nothing in memory
    again = local_state.load_site_harmonization(site, "fdg-ad", "fedmi", data, SPEC)
    assert again.status == "trained" and again.groups == hz.groups
    after = local_state_dict(again.model)
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) for k in before)
    x, _ = again.subset(data, "test")
    assert x.shape[1] == 2 and float(x[0, 1, 0, 0, 0]) == hz.groups.index(keys[2])

    # a scanner added later: known groups keep their rows, the new one starts at identity
    keys.append("fbb|Philips|Ingenuity|blob")
    more = SiteData(
        x=torch.rand(4, 1, 16, 16, 16),
        y=torch.tensor([0.0, 1.0, 0.0, 1.0]),
        patient_keys=["a", "b", "c", "d"],
        is_test=np.array([False, False, True, True]),
    )
    grown = local_state.load_site_harmonization(site, "fdg-ad", "fedmi", more, SPEC)
    assert grown.groups[:2] == hz.groups and len(grown.groups) == 3
    scale = grown.model.harmonizer.scale.weight
    assert (
        torch.equal(scale[:2], before["harmonizer.scale.weight"])
        and float(scale[2].detach()) == 1.0
    )


def _phantom(n: int, seed: int) -> torch.Tensor:
    rng = np.random.default_rng(seed)
    vols = []
    for _ in range(n):
        v = ndimage.gaussian_filter(rng.random((16, 16, 16)), 1.0) * rng.uniform(0.8, 1.2)
        vols.append(v / v.mean())
    return torch.tensor(np.stack(vols)[:, None], dtype=torch.float32)


def test_label_free_adaptation_reduces_the_feature_distance():
    torch.manual_seed(0)
    model = build_method_model("fedmi", SPEC, n_groups=1)
    federation = _phantom(24, 0)
    ref = feature_moments(model, federation)
    # a shifted site: 30 % higher intensities and extra blur (another tracer/scanner)
    shifted = 1.3 * torch.tensor(ndimage.gaussian_filter(_phantom(16, 1).numpy(), (0, 0, 1, 1, 1)))
    x = with_groups(shifted, [0] * 16)
    result = adapt_to_reference(model, x, ref, steps=30)
    assert result.adapted and result.after < result.before
    m = feature_moments(model, x)
    assert float(moment_distance(m.mean, m.var, ref)) == pytest.approx(result.after)
    assert abs(float(model.harmonizer.scale.weight.detach()) - 1.0) > 1e-3  # the adapter moved
    # the config round trip the server uses
    cfg = reference_config(ref)
    assert cfg["feat-count"] == 24 and len(cfg["feat-mean"]) == SPEC.embedding  # type: ignore[arg-type]


def test_grouped_distance_sees_groups_the_mixture_hides():
    """Two groups shifted in opposite directions: the mixture has the reference's moments
    (distance 0), yet neither group does."""
    ref = FeatureMoments(100, np.zeros(3), np.ones(3))
    base = torch.tensor([[-1.0, -1.0, -1.0], [1.0, 1.0, 1.0]], dtype=torch.float64) * 0.6
    # each group: mean ±0.8, variance 0.36; together: mean 0, variance 0.36 + 0.64 = 1
    f = torch.cat([base - 0.8, base + 0.8])
    groups = torch.tensor([0, 0, 1, 1])
    mixture = float(moment_distance(f.mean(0), f.var(0, unbiased=False), ref))
    assert mixture == pytest.approx(0.0, abs=1e-12)
    expected = 0.8**2 / (1 + 1e-4) + float(np.log((0.36 + 1e-4) / (1 + 1e-4)) ** 2)
    assert float(grouped_distance(f, groups, ref)) == pytest.approx(expected, rel=1e-9)
    # a group of one scan has no variance: it is left out
    assert float(grouped_distance(f[:3], groups[:3], ref)) == pytest.approx(expected, rel=1e-9)


def test_adaptation_fits_each_group_of_a_two_scanner_site():
    torch.manual_seed(0)
    model = build_method_model("fedmi", SPEC, n_groups=2)
    ref = feature_moments(model, _phantom(24, 0))
    # one scanner reads 25 % low, the other 25 % high: opposite corrections are needed
    x = with_groups(
        torch.cat([0.75 * _phantom(12, 1), 1.25 * _phantom(12, 2)]), [0] * 12 + [1] * 12
    )
    groups = scan_groups(model, x)
    assert groups.tolist() == [0] * 12 + [1] * 12
    result = adapt_to_reference(model, x, ref, steps=60)
    assert result.adapted and result.after < result.before
    scale = model.harmonizer.scale.weight.detach().view(-1)
    assert scale[0] > 1.0 > scale[1]  # the low group scaled up, the high group down
    for g in (0, 1):
        m = feature_moments(model, x[groups == g])
        assert float(moment_distance(m.mean, m.var, ref)) < result.before


def test_regional_holdout_gets_the_federations_feature_moments_per_group():
    """The regional model's per-region affine is fitted in closed form: a group with enough
    scans ends with exactly the reference's per-feature mean and variance; a group too small
    to estimate a variance keeps identity."""
    from fedmi.client.harmonization.adaptation import MIN_GROUP_SCANS
    from fedmi.shared.tasks import TEMPLATE_GRID_4MM

    spec = ModelSpec(arch="regional")
    torch.manual_seed(0)
    model = build_method_model("fedmi", spec, n_groups=2)
    assert len(model.feature_affines()) == 1
    rng = np.random.default_rng(0)
    shape = (1, *TEMPLATE_GRID_4MM.shape)

    def scans(n: int, contrast: float) -> torch.Tensor:
        z = np.linspace(-1.0, 1.0, shape[-1])  # another scanner: an inferior-superior gradient
        v = rng.uniform(0.8, 1.6, (n, *shape)) * (1.0 + contrast * z)
        return torch.tensor(v, dtype=torch.float32)

    ref = feature_moments(model, scans(30, 0.0))
    n0 = MIN_GROUP_SCANS + 2
    x = with_groups(torch.cat([scans(n0, 0.3), scans(4, -0.3)]), [0] * n0 + [1] * 4)
    result = adapt_to_reference(model, x, ref)
    assert result.adapted and result.after < result.before
    m0 = feature_moments(model, x[:n0])
    np.testing.assert_allclose(m0.mean, ref.mean, atol=1e-4)
    np.testing.assert_allclose(m0.var, ref.var, rtol=1e-4)
    affine = model.feature_affines()[0]
    assert torch.count_nonzero(affine.dweight.weight[1]) == 0  # 4 scans: left at identity
    assert torch.count_nonzero(affine.dbias.weight[1]) == 0
    # the per-region affine is the site's own: never part of what leaves the site
    assert not any("dweight" in k or "dbias" in k for k in federated_state_dict(model))


def test_scan_groups_follow_the_headers(tiny_fdg, tmp_path):
    from fedmi.client.ingest.pipeline import ingest_site
    from fedmi.client.ingest.report import load_accepted

    cache = tmp_path / "cache"
    ingest_site(tiny_fdg / "site-a", "fdg-ad", cache)
    rows = load_accepted(cache)
    assert all(r.get("reconstruction") for r in rows)  # (0054,1103) recorded at ingest
    keys = local_state.scan_group_keys(rows, "fdg-ad")
    assert len(set(keys)) == 1  # one scanner, one tracer
    # the same site with a second scanner: two groups
    i = next(
        i for i, r in enumerate(rows) if get_task("fdg-ad").class_index(r["label"]) is not None
    )
    rows[i] = {**rows[i], "model": "Other Scanner"}
    assert len(set(local_state.scan_group_keys(rows, "fdg-ad"))) == 2


def test_feature_reply_adds_class_moments_only_for_releasable_classes(
    flower_identity, context_for, tmp_path
):
    """A training site's ``query.features`` reply: pooled moments over all its scans, and
    per class only when each class holds at least the site's min cell count of scans."""
    app = build_client_app()
    torch.manual_seed(0)
    sent = contract.array_record(federated_state_dict(build_method_model("fedmi")))

    def ask(kind: str, ctx: Context, arrays=sent) -> RecordDict:
        msg = Message(
            content=RecordDict({contract.CONFIG: _config("fedmi", kind), contract.ARRAYS: arrays}),
            dst_node_id=7,
            message_type=kind,
        )
        return app(msg, ctx).content

    trained = ask(contract.TRAIN, context_for("site-a"))[contract.ARRAYS]
    reply = ask(contract.FEATURES, context_for("site-a"), trained)
    m = reply[contract.METRICS]
    assert (
        reply[contract.SITE]["status"] == "ok"
        and contract.check_reply(contract.FEATURES, reply) == []
    )
    n, n_pos = int(m["num-examples"]), int(m["num-positive"])
    assert 0 < n_pos < n
    for key in contract.FEATURE_LISTS:
        assert len(m[key]) == len(m["feat-mean"])
    # pooled = the two classes mixed at the site's prevalence (law of total variance)
    neg = FeatureMoments(n - n_pos, np.array(m["feat-mean-neg"]), np.array(m["feat-var-neg"]))
    pos = FeatureMoments(n_pos, np.array(m["feat-mean-pos"]), np.array(m["feat-var-pos"]))
    mixed = ClassMoments(neg, pos).mixture(n_pos / n)
    np.testing.assert_allclose(mixed.mean, m["feat-mean"], atol=1e-9)
    np.testing.assert_allclose(mixed.var, m["feat-var"], rtol=1e-6, atol=1e-9)
    # a min cell count above the smaller class: pooled moments only
    ctx = context_for("site-a")
    ctx.node_config["min-cell-count"] = min(n_pos, n - n_pos) + 1
    m2 = ask(contract.FEATURES, ctx, trained)[contract.METRICS]
    assert "feat-mean" in m2 and "num-positive" not in m2
    assert not any(k.endswith(("-neg", "-pos")) for k in m2)


def test_regional_holdout_is_matched_at_its_own_prevalence():
    """Scans drawn from the federation's own two classes, but 80 % positive where the
    federation has 40 %: matching to the pooled moments pulls the site's predictions
    towards the federation's prevalence; matching to the classes mixed at the site's
    estimated prevalence leaves them nearly as they were."""
    from fedmi.client.harmonization.adaptation import evaluated_features
    from fedmi.client.training.loop import predict
    from fedmi.shared.tasks import TEMPLATE_GRID_4MM

    spec = ModelSpec(arch="regional")
    torch.manual_seed(0)
    model = build_method_model("fedmi", spec, n_groups=1)
    rng = np.random.default_rng(0)
    shape = (1, *TEMPLATE_GRID_4MM.shape)
    z = np.linspace(-1.0, 1.0, shape[-1])

    def scans(n: int, positive: bool) -> torch.Tensor:  # positives: an inferior-superior gradient
        gain = (
            rng.uniform(0.25, 0.55, (n, 1, 1, 1, 1))
            if positive
            else rng.uniform(0.0, 0.3, (n, 1, 1, 1, 1))
        )
        v = rng.uniform(0.9, 1.1, (n, *shape)) * (1.0 + gain * z)
        return torch.tensor(v, dtype=torch.float32)

    fed_neg, fed_pos = scans(60, False), scans(40, True)
    f_neg, f_pos = evaluated_features(model, fed_neg), evaluated_features(model, fed_pos)
    with torch.no_grad():  # a head along the class difference, centred between the classes
        w = f_pos.mean(0) - f_neg.mean(0)
        w = 6.0 * w / (w @ w)
        head = model.backbone.head
        head.weight.copy_(w.float().view_as(head.weight))
        head.bias.fill_(float(-(w @ (f_pos.mean(0) + f_neg.mean(0)) / 2)))
    classes = ClassMoments(feature_moments(model, fed_neg), feature_moments(model, fed_pos))
    ref = classes.mixture(classes.prevalence)
    site = with_groups(torch.cat([scans(8, False), scans(32, True)]), [0] * 40)
    before = predict(model, site).mean()

    def adapted(**kw: object) -> HarmonizedNet:
        m = build_method_model("fedmi", spec, n_groups=1)
        m.load_state_dict(model.state_dict())
        adapt_to_reference(m, site, ref, **kw)  # type: ignore[arg-type]
        return m

    plain, own = adapted(), adapted(classes=classes)
    p_plain, p_own = predict(plain, site).mean(), predict(own, site).mean()
    assert p_plain < before - 0.05  # pulled towards the federation's 40 %
    assert abs(p_own - before) < abs(p_plain - before) / 3


def test_prior_shift_prevalence_recovers_a_sites_prevalence():
    """Posteriors exact under a 40 % training prior, on a site with 80 % positives: the
    mean posterior is biased towards 40 %; the EM estimate is not."""
    from fedmi.client.harmonization.adaptation import prior_shift_prevalence

    rng = np.random.default_rng(0)
    y = rng.random(20_000) < 0.8
    s = rng.normal(np.where(y, 1.0, -1.0), 1.0)
    like = np.exp(-((s - 1) ** 2) / 2) * 0.4
    p = like / (like + np.exp(-((s + 1) ** 2) / 2) * 0.6)  # Bayes at the training prior
    assert p.mean() < 0.72
    assert prior_shift_prevalence(p, 0.4) == pytest.approx(0.8, abs=0.01)
    assert prior_shift_prevalence(p, 0.4) == pytest.approx(y.mean(), abs=0.01)
