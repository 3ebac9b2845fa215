"""The pooled and local baselines train with the federated budget and model selection."""

from __future__ import annotations

import dataclasses

import torch
from torch import nn

from fedmi.client.training.loop import train_local
from fedmi.shared.instructions import round_seed
from fedmi.shared.run_config import RunConfig
from fedmi.simulations.baselines import round_settings, train_in_rounds


def _data():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(24, 4, generator=g)
    y = (x[:, 0] + 0.3 * torch.randn(24, generator=g) > 0).float()
    return x, y


def _model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 1), nn.Flatten(0))


def test_pooled_trains_round_by_round_like_a_one_site_federation():
    cfg = RunConfig.from_mapping(
        {
            "num-server-rounds": 3,
            "local-epochs": 2,
            "batch-size": 8,
            "optimizer": "sgd",
            "learning-rate": 0.1,
            "seed": 4,
        }
    )
    x, y = _data()
    settings = round_settings(cfg)
    assert [s.seed for s in settings] == [round_seed(4, r) for r in (1, 2, 3)]
    assert all(s.epochs == 2 for s in settings)
    model = _model()
    res = train_in_rounds(model, x, y, cfg)
    expected = _model()
    for s in settings:  # what a single site does: a fresh optimiser every round
        train_local(expected, x, y, s)
    for a, b in zip(model.parameters(), expected.parameters(), strict=True):
        assert torch.equal(a, b)
    assert res.steps == 3 * 2 * 3  # rounds × epochs × batches of 8
    # one call of 6 epochs keeps its momentum across rounds: a different model
    once = _model()
    train_local(once, x, y, dataclasses.replace(settings[0], epochs=6))
    assert not torch.equal(once[0].weight, model[0].weight)
