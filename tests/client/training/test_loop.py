"""Local training: the FedProx proximal term, determinism and evaluation statistics."""

import numpy as np
import torch

from fedmi.client.evaluation.statistics import evaluation_statistics
from fedmi.client.training.loop import TrainSettings, predict, train_local
from fedmi.shared.model import ModelSpec, build_model

SPEC = ModelSpec(
    in_shape=(1, 16, 16, 16), channels=(4, 8), strides=(2, 2), embedding=8, dropout=0.0, arch="cnn"
)


def _data(n: int = 24):
    g = torch.Generator().manual_seed(0)
    y = (torch.arange(n) % 2).float()
    x = torch.randn(n, 1, 16, 16, 16, generator=g) + y.view(-1, 1, 1, 1, 1)
    return x, y


def _distance_from_start(mu: float) -> float:
    torch.manual_seed(0)
    model = build_model(SPEC)
    start = [p.detach().clone() for p in model.backbone.parameters()]
    x, y = _data()
    settings = TrainSettings(
        epochs=3, batch_size=8, learning_rate=1e-2, proximal_mu=mu, augment=False, optimizer="adamw"
    )
    train_local(model, x, y, settings, global_params=start, device=torch.device("cpu"))
    return float(
        sum(((p - s) ** 2).sum() for p, s in zip(model.backbone.parameters(), start, strict=True))
    )


def test_proximal_term_keeps_weights_near_the_global_model():
    free, prox = _distance_from_start(0.0), _distance_from_start(10.0)
    assert prox < 0.5 * free


def test_training_is_deterministic_for_a_seed():
    def once() -> list[np.ndarray]:
        torch.manual_seed(0)
        model = build_model(SPEC)
        x, y = _data()
        train_local(
            model,
            x,
            y,
            TrainSettings(
                epochs=1, batch_size=8, seed=3, learning_rate=1e-3, optimizer="adamw", augment=True
            ),
            device=torch.device("cpu"),
        )
        return [p.detach().numpy().copy() for p in model.parameters()]

    for a, b in zip(once(), once(), strict=True):
        np.testing.assert_array_equal(a, b)


def _evaluate(model, x, y):
    scores = predict(model, x, device=torch.device("cpu"))
    return evaluation_statistics(scores, y.numpy(), min_cell_count=1)[0]


def test_training_reduces_loss_and_evaluation_counts_every_scan():
    torch.manual_seed(0)
    model = build_model(SPEC)
    x, y = _data()
    before = _evaluate(model, x, y)
    train_local(
        model,
        x,
        y,
        TrainSettings(epochs=8, batch_size=8, learning_rate=3e-3, augment=False, optimizer="adamw"),
        device=torch.device("cpu"),
    )
    after = _evaluate(model, x, y)
    assert after["loss-sum"] < before["loss-sum"]
    assert sum(after["hist-pos"]) == 12 and sum(after["hist-neg"]) == 12
    assert after["num-examples"] == 24 and after["num-positive"] == 12


def test_batch_size_zero_is_full_batch_gradient_descent():
    assert (
        TrainSettings(
            batch_size=0, epochs=1, learning_rate=1e-3, optimizer="adamw", augment=True
        ).batch_for(23)
        == 23
    )
    assert (
        TrainSettings(
            batch_size=8, epochs=1, learning_rate=1e-3, optimizer="adamw", augment=True
        ).batch_for(23)
        == 8
    )
    torch.manual_seed(0)
    x, y = _data(20)
    settings = TrainSettings(
        epochs=3, batch_size=0, learning_rate=1e-2, augment=False, optimizer="adamw"
    )
    result = train_local(build_model(SPEC), x, y, settings, device=torch.device("cpu"))
    assert result.steps == 3 and result.num_examples == 20


def test_site_local_layers_train_at_their_share_of_the_learning_rate():
    """fedmi's input adapter acts on raw intensities: it trains at ``local_lr_scale`` of the
    rate (the regional default 0.2 of 3.0), the federated head at the full rate."""
    from fedmi.client.training.loop import make_optimizer, parameter_groups
    from fedmi.shared.harmonization import build_method_model
    from fedmi.shared.instructions import TrainInstruction
    from fedmi.shared.run_config import MODEL_DEFAULTS

    ins = TrainInstruction(task="dat-pd", model="regional", method="fedmi", learning_rate=3.0)
    settings = TrainSettings.from_instruction(ins)
    assert settings.local_lr_scale == MODEL_DEFAULTS["regional"].local_lr_scale == 0.2
    model = build_method_model("fedmi", ModelSpec(arch="regional", task="dat-pd"), n_groups=2)
    groups = make_optimizer(parameter_groups(model, settings), settings).param_groups
    head = {id(p) for p in model.backbone.head.parameters()}
    adapter = {id(p) for p in model.adapter_parameters()}
    assert [g["lr"] for g in groups] == [3.0, 3.0 * 0.2]
    assert {id(p) for p in groups[0]["params"]} == head
    assert {id(p) for p in groups[1]["params"]} == adapter
    # a plain model has one group; the CNN's local layers keep the full rate
    plain = parameter_groups(build_model(ModelSpec(arch="regional")), settings)
    assert len(plain) == 1 and plain[0]["lr"] == 3.0
    assert MODEL_DEFAULTS["cnn"].local_lr_scale == 1.0
