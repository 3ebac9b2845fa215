"""Local training and evaluation of the model at one site (plain functions, no Flower)."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from fedmi.shared.stats import sufficient_statistics

log = logging.getLogger(__name__)


def pick_device() -> torch.device:
    """CUDA when present, else CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


@dataclass(frozen=True)
class TrainSettings:
    """Hyper-parameters of one local training call (sent by the server each round)."""

    epochs: int = 1
    #: 0 = the whole split in one batch (full-batch gradient descent)
    batch_size: int = 16
    learning_rate: float = 1e-3
    weight_decay: float = 1e-4
    proximal_mu: float = 0.0
    seed: int = 0
    augment: bool = True
    optimizer: str = "adamw"

    def batch_for(self, n: int) -> int:
        """The batch size for ``n`` training scans (``batch_size`` 0: all of them)."""
        return self.batch_size if self.batch_size > 0 else max(1, n)


def proximal_reference(
    settings: TrainSettings, global_params: list[torch.Tensor] | None, device: torch.device
) -> list[torch.Tensor] | None:
    """The received backbone weights FedProx pulls towards (``None`` without the term)."""
    if settings.proximal_mu <= 0 or global_params is None:
        return None
    return [g.detach().to(device) for g in global_params]


@dataclass(frozen=True)
class TrainResult:
    """Aggregate outcome of local training (what may be reported)."""

    num_examples: int
    loss: float
    accuracy: float
    steps: int
    seconds: float


def make_optimizer(
    params: list[torch.nn.Parameter], settings: TrainSettings
) -> torch.optim.Optimizer:
    """``adamw`` (default) or ``sgd`` (momentum 0.9; steadier under DP-SGD's noise)."""
    if settings.optimizer == "sgd":
        return torch.optim.SGD(
            params, lr=settings.learning_rate, momentum=0.9, weight_decay=settings.weight_decay
        )
    if settings.optimizer == "adamw":
        return torch.optim.AdamW(
            params, lr=settings.learning_rate, weight_decay=settings.weight_decay
        )
    raise ValueError(f"unknown optimizer {settings.optimizer!r}: use adamw or sgd")


def augment_batch(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Label-preserving augmentation: random left–right flip and a ±1-voxel shift.

    Done on the whole batch with tensor ops: MONAI's per-sample dictionary transforms
    cost more than the model's step at this input size on a CPU.
    """
    flip = torch.rand(x.shape[0], generator=gen) < 0.5
    if flip.any():
        x = x.clone()
        x[flip] = torch.flip(x[flip], dims=[2])
    shifts = torch.randint(-1, 2, (3,), generator=gen).tolist()
    return torch.roll(x, shifts=shifts, dims=(2, 3, 4))


def train_local(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    settings: TrainSettings,
    *,
    global_params: list[torch.Tensor] | None = None,
    device: torch.device | None = None,
) -> TrainResult:
    """Train ``model`` in place on ``(x, y)`` for ``settings.epochs`` epochs.

    Parameters
    ----------
    global_params
        The federated parameters received this round, for the FedProx proximal term
        ``mu/2 · ||w − w_global||²`` (used when ``settings.proximal_mu > 0``), in the
        order of ``[p for p in model.parameters() if p.requires_grad]`` restricted to
        the backbone.
    """
    device = device or pick_device()
    t0 = time.perf_counter()
    n = int(y.shape[0])
    if n == 0:
        return TrainResult(0, 0.0, 0.0, 0, 0.0)
    model.to(device).train()
    gen = torch.Generator().manual_seed(settings.seed)
    opt = make_optimizer([p for p in model.parameters() if p.requires_grad], settings)
    loss_fn = nn.BCEWithLogitsLoss(reduction="sum")
    prox = proximal_reference(settings, global_params, device)
    backbone_params = [p for p in _backbone(model).parameters() if p.requires_grad]
    use_amp = device.type == "cuda"
    total_loss, correct, seen, steps = 0.0, 0, 0, 0
    for _ in range(settings.epochs):
        order = torch.randperm(n, generator=gen)
        batch = settings.batch_for(n)
        for start in range(0, n, batch):
            idx = order[start : start + batch]
            xb, yb = x[idx], y[idx]
            if settings.augment:
                xb = augment_batch(xb, gen)
            xb, yb = xb.to(device, non_blocking=True), yb.to(device, non_blocking=True)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_amp):
                logits = model(xb).float()
            loss = loss_fn(logits, yb)
            objective = loss / len(idx)
            if prox is not None:
                sq = sum(((p - g) ** 2).sum() for p, g in zip(backbone_params, prox, strict=True))
                objective = objective + 0.5 * settings.proximal_mu * sq
            opt.zero_grad(set_to_none=True)
            objective.backward()
            opt.step()
            steps += 1
            total_loss += float(loss.detach())
            correct += int(((logits.detach() > 0).float() == yb).sum())
            seen += len(idx)
    return TrainResult(
        num_examples=n,
        loss=total_loss / max(seen, 1),
        accuracy=correct / max(seen, 1),
        steps=steps,
        seconds=time.perf_counter() - t0,
    )


def _backbone(model: nn.Module) -> nn.Module:
    inner = getattr(model, "_module", model)
    return getattr(inner, "backbone", inner)


@torch.no_grad()
def predict(
    model: nn.Module, x: torch.Tensor, *, batch_size: int = 32, device: torch.device | None = None
) -> np.ndarray:
    """Positive-class probabilities for every scan (stays at the site)."""
    device = device or pick_device()
    model.to(device).eval()
    out = []
    for start in range(0, int(x.shape[0]), batch_size):
        logits = model(x[start : start + batch_size].to(device)).float()
        out.append(torch.sigmoid(logits).cpu().numpy())
    return np.concatenate(out) if out else np.zeros(0, dtype=np.float32)


def evaluate_local(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, device: torch.device | None = None
) -> dict[str, list[int] | int | float]:
    """Sufficient statistics of the model on ``(x, y)`` plus the summed log-loss."""
    t0 = time.perf_counter()
    scores = predict(model, x, device=device)
    labels = y.numpy().astype(np.int64)
    eps = 1e-7
    p = np.clip(scores.astype(np.float64), eps, 1 - eps)
    loss_sum = (
        float(-(labels * np.log(p) + (1 - labels) * np.log(1 - p)).sum()) if labels.size else 0.0
    )
    stats: dict[str, list[int] | int | float] = dict(sufficient_statistics(scores, labels))
    stats["loss-sum"] = loss_sum
    stats["compute-seconds"] = time.perf_counter() - t0
    return stats
