import pytest
import torch
from torch import nn

from fedmi.shared.model import (
    ModelSpec,
    SiteLocal,
    build_model,
    federated_state_dict,
    load_federated_state,
    local_state_dict,
)

SMALL = ModelSpec(
    in_shape=(1, 16, 16, 16), channels=(4, 8), strides=(2, 2), embedding=8, arch="cnn"
)


class Scale(SiteLocal):
    def __init__(self) -> None:
        super().__init__()
        self.gain = nn.Parameter(torch.ones(1))
        self.norm = nn.GroupNorm(1, 1)  # nested module inside a local one stays local

    def forward(self, x):
        return self.norm(x * self.gain)


def test_split_is_by_module_type_not_name():
    model = build_model(SMALL, harmonizer=Scale())
    fed, loc = federated_state_dict(model), local_state_dict(model)
    assert set(loc) == {"harmonizer.gain", "harmonizer.norm.weight", "harmonizer.norm.bias"}
    assert not set(fed) & set(loc)
    assert set(fed) | set(loc) == set(model.state_dict())
    assert all(k.startswith("backbone.") for k in fed)


def test_load_federated_state_keeps_local_and_rejects_mismatch():
    a = build_model(SMALL, harmonizer=Scale())
    b = build_model(SMALL, harmonizer=Scale())
    with torch.no_grad():
        b.harmonizer.gain.fill_(3.0)
    load_federated_state(b, federated_state_dict(a))
    assert torch.equal(b.backbone.head[1].weight, a.backbone.head[1].weight)
    assert b.harmonizer.gain.item() == 3.0
    bad = dict(federated_state_dict(a))
    bad.pop(next(iter(bad)))
    with pytest.raises(KeyError):
        load_federated_state(b, bad)


def test_model_has_no_batchnorm_and_no_inplace_activation():
    model = build_model()
    for m in model.modules():
        assert not isinstance(m, nn.modules.batchnorm._BatchNorm)
        if isinstance(m, (nn.ReLU, nn.PReLU, nn.LeakyReLU)):
            assert not getattr(m, "inplace", False)


def test_opacus_wrapped_model_exports_unprefixed_keys():
    from opacus import GradSampleModule

    model = build_model(SMALL)
    wrapped = GradSampleModule(model)
    keys = list(federated_state_dict(wrapped))
    assert keys == list(federated_state_dict(model))
    assert not any("_module." in k for k in keys)


def test_forward_shape():
    model = build_model(SMALL)
    out = model(torch.randn(3, 1, 16, 16, 16))
    assert out.shape == (3,)
