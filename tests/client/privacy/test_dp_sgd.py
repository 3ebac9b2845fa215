"""DP-SGD: per-sample clipping matches a per-sample autograd loop; accounting matches
Google's dp_accounting; noise calibration keeps within the budget."""

from __future__ import annotations

import math

import pytest
import torch
from opacus import PrivacyEngine
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from fedmi.client.privacy.accounting import BudgetExhausted, calibrate_noise, epsilon_of
from fedmi.client.privacy.dp_sgd import DPSGD, grad_sample_mode_for, poisson_plan
from fedmi.client.training.loop import TrainSettings, train_local
from fedmi.shared.model import SiteLocal, build_model, federated_state_dict
from tests.client.privacy.helpers import tiny_data, tiny_model

CLIP = 0.05


class ScaleShift(SiteLocal):
    """A harmonizer with raw parameters (not an Opacus/ExpandedWeights layer)."""

    def __init__(self) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.ones(1))
        self.shift = nn.Parameter(torch.zeros(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.scale + self.shift


class ConvHarmonizer(SiteLocal):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv3d(1, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


def _reference_clipped_sum(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor
) -> list[torch.Tensor]:
    """Σ_i clip(∇ℓ_i, CLIP) with one plain autograd pass per sample."""
    total = None
    for i in range(len(y)):
        model.zero_grad()
        nn.BCEWithLogitsLoss()(model(x[i : i + 1]), y[i : i + 1]).backward()
        g = [p.grad.clone() for p in model.parameters()]
        norm = torch.sqrt(sum((t**2).sum() for t in g))
        factor = min(1.0, CLIP / (float(norm) + 1e-6))
        g = [t * factor for t in g]
        total = g if total is None else [a + b for a, b in zip(total, g, strict=True)]
    return total


@pytest.mark.parametrize(
    ("harmonizer", "mode"),
    [
        (None, "ew"),
        (None, "functorch"),
        (None, "hooks"),
        (ConvHarmonizer, "ew"),
        (ScaleShift, "functorch"),
    ],
)
def test_opacus_clipped_sum_equals_per_sample_reference(harmonizer, mode):
    x, y = tiny_data(6)
    ref = _reference_clipped_sum(tiny_model(1, harmonizer() if harmonizer else None), x, y)
    model = tiny_model(1, harmonizer() if harmonizer else None)
    assert grad_sample_mode_for(model) == ("functorch" if harmonizer is ScaleShift else "ew")
    opt = torch.optim.SGD(model.parameters(), lr=0.0)
    gsm, dp_opt, _ = PrivacyEngine().make_private(
        module=model,
        optimizer=opt,
        data_loader=DataLoader(TensorDataset(x, y), batch_size=6),
        noise_multiplier=0.0,
        max_grad_norm=CLIP,
        poisson_sampling=False,
        grad_sample_mode=mode,
        loss_reduction="mean",
    )
    dp_opt.zero_grad()
    nn.BCEWithLogitsLoss()(gsm(x), y).backward()
    assert dp_opt.pre_step()
    for p, r in zip(model.parameters(), ref, strict=True):
        # Opacus divides the clipped sum by the expected batch size (6)
        torch.testing.assert_close(p.grad * 6, r, atol=1e-7, rtol=1e-5)


def test_the_default_model_uses_expanded_weights():
    assert grad_sample_mode_for(build_model()) == "ew"


def test_poisson_plan_is_opacus_own():
    assert poisson_plan(60, 16) == (0.25, 4)
    assert poisson_plan(23, 23) == (1.0, 1)  # batch-size 0: the whole split every step
    assert poisson_plan(10, 16) == (1.0, 1)


def test_dp_sgd_takes_noise_only_steps_on_empty_samples():
    x, y = tiny_data(30)
    model = tiny_model()
    before = federated_state_dict(model)
    settings = TrainSettings(
        epochs=1, batch_size=1, seed=3, augment=False, learning_rate=1e-3, optimizer="adamw"
    )
    result = train_local(
        model, x, y, settings, privacy=DPSGD(noise_multiplier=1.0, max_grad_norm=1.0)
    )
    q, steps = poisson_plan(30, 1)
    assert result.steps == steps == 30 and q == pytest.approx(1 / 30)
    after = federated_state_dict(model)
    assert all(k in after for k in before)  # no Opacus "_module." names
    assert any(not torch.equal(before[k], after[k]) for k in before)


def test_noise_is_not_derived_from_the_server_seed():
    x, y = tiny_data(12)
    settings = TrainSettings(
        epochs=1, batch_size=4, seed=5, learning_rate=1e-3, optimizer="adamw", augment=True
    )
    states = []
    for _ in range(2):
        torch.manual_seed(0)
        model = tiny_model()
        train_local(model, x, y, settings, privacy=DPSGD(noise_multiplier=1.0, max_grad_norm=1.0))
        states.append(federated_state_dict(model))
    assert any(not torch.equal(states[0][k], states[1][k]) for k in states[0])


# --- accounting against Google's dp_accounting -------------------------------------------
dp_accounting = pytest.importorskip("dp_accounting")


def _dp_event(q: float, sigma: float, steps: int):
    return dp_accounting.SelfComposedDpEvent(
        dp_accounting.PoissonSampledDpEvent(q, dp_accounting.GaussianDpEvent(sigma)), steps
    )


CASES = [
    (0.01, 1.0, 10_000, 1e-5),
    (0.05, 0.8, 500, 1e-5),
    (0.25, 2.0, 160, 1e-6),
    (0.1, 1.5, 1000, 1e-5),
]


@pytest.mark.parametrize(("q", "sigma", "steps", "delta"), CASES)
def test_rdp_epsilon_matches_dp_accounting(q, sigma, steps, delta):
    acc = dp_accounting.rdp.RdpAccountant()
    acc.compose(_dp_event(q, sigma, steps))
    ours = epsilon_of([(sigma, q, steps)], delta, "rdp")
    assert ours == pytest.approx(acc.get_epsilon(delta), rel=0.02)
    if (q, sigma, steps) == (0.01, 1.0, 10_000):
        assert ours == pytest.approx(6.713, abs=0.01)  # FLOWER_NOTES reference


@pytest.mark.parametrize(("q", "sigma", "steps", "delta"), CASES[:2])
def test_prv_epsilon_matches_dp_accounting_pld(q, sigma, steps, delta):
    acc = dp_accounting.pld.PLDAccountant(value_discretization_interval=1e-3)
    acc.compose(_dp_event(q, sigma, steps))
    ours = epsilon_of([(sigma, q, steps)], delta, "prv")
    assert ours == pytest.approx(acc.get_epsilon(delta), rel=0.03)


def test_history_composes_like_one_long_run():
    split = [(1.0, 0.01, 4000), (1.0, 0.01, 6000)]
    assert epsilon_of(split, 1e-5) == pytest.approx(epsilon_of([(1.0, 0.01, 10_000)], 1e-5))
    mixed = [(1.0, 0.01, 5000), (2.0, 0.02, 3000)]
    acc = dp_accounting.rdp.RdpAccountant()
    acc.compose(_dp_event(0.01, 1.0, 5000)).compose(_dp_event(0.02, 2.0, 3000))
    assert epsilon_of(mixed, 1e-5) == pytest.approx(acc.get_epsilon(1e-5), rel=0.02)


@pytest.mark.parametrize("prior", [[], [(3.0, 0.25, 40)]])
def test_calibrated_noise_fits_the_budget(prior):
    sigma = calibrate_noise(epsilon=3.0, delta=1e-5, sample_rate=0.25, steps=160, prior=prior)
    eps = epsilon_of([*prior, (sigma, 0.25, 160)], 1e-5)
    assert 3.0 - 0.02 <= eps <= 3.0
    assert epsilon_of([*prior, (sigma * 0.97, 0.25, 160)], 1e-5) > 3.0


def test_calibration_refuses_a_spent_budget():
    with pytest.raises(BudgetExhausted):
        calibrate_noise(
            epsilon=1.0, delta=1e-5, sample_rate=0.25, steps=10, prior=[(0.5, 0.25, 400)]
        )
    assert math.isfinite(epsilon_of([(0.5, 0.25, 400)], 1e-5))
