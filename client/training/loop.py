"""Local training of the model at one site: one loop, with or without DP-SGD.

:func:`train_local` is the only training loop. How a batch is drawn and how one gradient
step is taken is a :class:`Stepper`: :class:`PlainSteps` here (shuffled mini-batches, the
summed loss, optional bf16 autocast on a GPU), or the DP-SGD stepper of
:class:`fedmi.client.privacy.dp_sgd.DPSGD` (Poisson sampling, per-sample clipping and
Gaussian noise with Opacus), which the loop receives as its ``privacy`` argument. The
optimiser, the augmentation stream, the FedProx term and the reported aggregates are the
same for both. The loss is the classifier's binary cross-entropy unless the call brings a
:class:`BatchLoss` (a per-sample objective such as masked-image pretraining,
:mod:`fedmi.client.training.pretrain`). Plain functions, no Flower.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch
from torch import nn

from fedmi.shared.instructions import PretrainInstruction, TrainInstruction
from fedmi.shared.model import SiteLocal
from fedmi.shared.run_config import MODEL_DEFAULTS

log = logging.getLogger(__name__)


def pick_device() -> torch.device:
    """CUDA when present, else CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


@dataclass(frozen=True, kw_only=True)
class TrainSettings:
    """Hyper-parameters of one local training call.

    At a site they come from the server's :class:`~fedmi.shared.instructions.TrainInstruction`
    (:meth:`from_instruction`); the recipe has no defaults of its own, so there is one
    place for them (the run config and each model's defaults).
    """

    epochs: int
    #: 0 = the whole split in one batch (full-batch gradient descent)
    batch_size: int
    learning_rate: float
    optimizer: str
    augment: bool
    seed: int = 0
    proximal_mu: float = 0.0
    weight_decay: float = 1e-4
    #: the site-local (harmonization) layers train at ``learning_rate × local_lr_scale``
    local_lr_scale: float = 1.0

    @classmethod
    def from_instruction(cls, ins: TrainInstruction | PretrainInstruction) -> TrainSettings:
        """The settings of a train or pretraining instruction (its round's seed,
        :func:`round_seed`; pretraining has no proximal term)."""
        return cls(
            epochs=ins.local_epochs,
            batch_size=ins.batch_size,
            learning_rate=ins.learning_rate,
            optimizer=ins.optimizer,
            augment=ins.augment,
            proximal_mu=getattr(ins, "proximal_mu", 0.0),
            seed=ins.round_seed,
            local_lr_scale=MODEL_DEFAULTS[ins.model].local_lr_scale,
        )

    def batch_for(self, n: int) -> int:
        """The batch size for ``n`` training scans (``batch_size`` 0: all of them)."""
        return self.batch_size if self.batch_size > 0 else max(1, n)


@dataclass(frozen=True)
class TrainResult:
    """Aggregate outcome of local training (what may be reported)."""

    num_examples: int
    loss: float
    accuracy: float
    steps: int
    seconds: float


def parameter_groups(model: nn.Module, settings: TrainSettings) -> list[dict[str, object]]:
    """The trainable parameters: the federated ones at ``learning_rate``, those of the
    site-local layers (:class:`fedmi.shared.model.SiteLocal`) at ``learning_rate ×
    local_lr_scale`` (a group is left out when it has none)."""
    local_ids = {id(p) for m in model.modules() if isinstance(m, SiteLocal) for p in m.parameters()}
    trainable = [p for p in model.parameters() if p.requires_grad]
    groups: list[dict[str, object]] = [
        {"params": [p for p in trainable if id(p) not in local_ids], "lr": settings.learning_rate},
        {
            "params": [p for p in trainable if id(p) in local_ids],
            "lr": settings.learning_rate * settings.local_lr_scale,
        },
    ]
    return [g for g in groups if g["params"]]


def make_optimizer(
    params: list[torch.nn.Parameter] | list[dict[str, object]], settings: TrainSettings
) -> torch.optim.Optimizer:
    """``adamw`` or ``sgd`` (momentum 0.9; steadier under DP-SGD's noise).

    ``params``: parameters, or groups of them with their own ``lr``
    (:func:`parameter_groups`)."""
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


def backbone(model: nn.Module) -> nn.Module:
    """The federated backbone of ``model`` (inside an Opacus wrapper too)."""
    inner = getattr(model, "_module", model)
    return getattr(inner, "backbone", inner)


@dataclass
class Tally:
    """Running sums of one training call: loss, correct calls, scans seen and steps."""

    loss: float = 0.0
    correct: int = 0
    seen: int = 0
    steps: int = 0

    def add(self, loss_sum: float, logits: torch.Tensor, y: torch.Tensor) -> None:
        self.loss += loss_sum
        self.correct += int(((logits.detach() > 0).float() == y).sum())
        self.seen += len(y)

    def add_losses(self, losses: torch.Tensor) -> None:
        """Add a :class:`BatchLoss`'s per-sample losses (no accuracy: nothing is classified)."""
        self.loss += float(losses.detach().sum())
        self.seen += int(losses.shape[0])

    def result(self, n: int, started: float) -> TrainResult:
        return TrainResult(
            num_examples=n,
            loss=self.loss / max(self.seen, 1),
            accuracy=self.correct / max(self.seen, 1),
            steps=self.steps,
            seconds=time.perf_counter() - started,
        )


class BatchLoss(Protocol):
    """A per-sample training objective in place of the classifier's cross-entropy.

    Called with the model being trained (inside an Opacus wrapper under DP-SGD) and one
    batch already on the device, it returns one loss per sample, shape ``(n,)``, each
    depending on its own sample only: DP-SGD's per-sample clipping then bounds every
    scan's contribution. The loop minimises their mean and reports their mean.
    """

    def __call__(self, model: nn.Module, xb: torch.Tensor, yb: torch.Tensor) -> torch.Tensor: ...


@dataclass(frozen=True)
class TrainingCall:
    """What one call of :func:`train_local` trains: the model and its optimiser, the scans,
    the settings and the device (what a :class:`Stepper` is built from), and the objective
    (``loss``; ``None``: the classifier's binary cross-entropy)."""

    model: nn.Module
    optimizer: torch.optim.Optimizer
    x: torch.Tensor
    y: torch.Tensor
    settings: TrainSettings
    device: torch.device
    loss: BatchLoss | None = None


class Stepper(AbstractContextManager, Protocol):
    """How :func:`train_local` draws its batches and takes one gradient step."""

    def batches(self, gen: torch.Generator) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """One epoch of ``(x, y)`` batches on the CPU (``gen``: the shuffling stream)."""
        ...

    def step(
        self, xb: torch.Tensor, yb: torch.Tensor, proximal: ProximalTerm | None, tally: Tally
    ) -> None:
        """One optimiser step on the batch (already augmented); add its loss to ``tally``."""
        ...


class DPWrapper(Protocol):
    """What :func:`train_local` needs of a DP-SGD wrapper (its ``privacy`` argument)."""

    def stepper(self, call: TrainingCall) -> Stepper: ...


@dataclass(frozen=True)
class ProximalTerm:
    """FedProx's ``mu/2·||w − w_global||²`` over the trainable backbone parameters."""

    mu: float
    params: list[torch.nn.Parameter]
    reference: list[torch.Tensor]

    def value(self) -> torch.Tensor:
        """The term itself (the plain step adds it to the objective)."""
        sq = sum(((p - g) ** 2).sum() for p, g in zip(self.params, self.reference, strict=True))
        return 0.5 * self.mu * sq

    @torch.no_grad()
    def add_gradient(self) -> None:
        """Add its gradient ``mu·(w − w_global)`` (after DP-SGD's noise: it is data-free)."""
        for p, g in zip(self.params, self.reference, strict=True):
            p.grad.add_(p.detach() - g, alpha=self.mu)


def proximal_term(
    model: nn.Module,
    settings: TrainSettings,
    global_params: list[torch.Tensor] | None,
    device: torch.device,
) -> ProximalTerm | None:
    """The FedProx term towards the received weights (``None`` without one)."""
    if settings.proximal_mu <= 0 or global_params is None:
        return None
    params = [p for p in backbone(model).parameters() if p.requires_grad]
    reference = [g.detach().to(device) for g in global_params]
    return ProximalTerm(settings.proximal_mu, params, reference)


class PlainSteps(AbstractContextManager):
    """Non-private steps: shuffled mini-batches and the mean loss of each batch."""

    def __init__(self, call: TrainingCall) -> None:
        self.model, self.optimizer, self.x, self.y = call.model, call.optimizer, call.x, call.y
        self.batch = call.settings.batch_for(int(call.y.shape[0]))
        self.device = call.device
        self.loss_fn = nn.BCEWithLogitsLoss(reduction="sum")
        self.objective = call.loss

    def __exit__(self, *exc: object) -> None:
        return None

    def batches(self, gen: torch.Generator) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        n = int(self.y.shape[0])
        order = torch.randperm(n, generator=gen)
        for start in range(0, n, self.batch):
            idx = order[start : start + self.batch]
            yield self.x[idx], self.y[idx]

    def step(
        self, xb: torch.Tensor, yb: torch.Tensor, proximal: ProximalTerm | None, tally: Tally
    ) -> None:
        xb = xb.to(self.device, non_blocking=True)
        yb = yb.to(self.device, non_blocking=True)
        if self.objective is not None:
            self._objective_step(xb, yb, proximal, tally)
            return
        amp = self.device.type == "cuda"
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=amp):
            logits = self.model(xb).float()
        loss = self.loss_fn(logits, yb)
        objective = loss / len(yb)
        if proximal is not None:
            objective = objective + proximal.value()
        self.optimizer.zero_grad(set_to_none=True)
        objective.backward()
        self.optimizer.step()
        tally.steps += 1
        tally.add(float(loss.detach()), logits, yb)

    def _objective_step(
        self, xb: torch.Tensor, yb: torch.Tensor, proximal: ProximalTerm | None, tally: Tally
    ) -> None:
        """One step on the call's :class:`BatchLoss` (mean of its per-sample losses)."""
        amp = self.device.type == "cuda"
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=amp):
            losses = self.objective(self.model, xb, yb).float()
        objective = losses.mean()
        if proximal is not None:
            objective = objective + proximal.value()
        self.optimizer.zero_grad(set_to_none=True)
        objective.backward()
        self.optimizer.step()
        tally.steps += 1
        tally.add_losses(losses)


def train_local(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    settings: TrainSettings,
    *,
    privacy: DPWrapper | None = None,
    global_params: list[torch.Tensor] | None = None,
    device: torch.device | None = None,
    loss: BatchLoss | None = None,
) -> TrainResult:
    """Train ``model`` in place on ``(x, y)`` for ``settings.epochs`` epochs.

    Parameters
    ----------
    privacy
        A DP-SGD wrapper (:class:`fedmi.client.privacy.dp_sgd.DPSGD`): every step then
        draws a Poisson sample, clips per-sample gradients and adds noise. ``None``: plain
        shuffled mini-batches. Accounting is the caller's (the site's ledger).
    global_params
        The federated parameters received this round, for the FedProx proximal term
        ``mu/2 · ||w − w_global||²`` (used when ``settings.proximal_mu > 0``), in the
        order of the backbone's trainable parameters.
    loss
        A per-sample objective (:class:`BatchLoss`) instead of the binary cross-entropy
        on ``y``; ``y`` then only sets the number of scans and accuracy stays 0.

    Returns
    -------
    TrainResult
        Loss and accuracy over the scans seen (site-internal under DP), the steps taken.
    """
    device = device or pick_device()
    started = time.perf_counter()
    n = int(y.shape[0])
    if n == 0:
        return TrainResult(0, 0.0, 0.0, 0, 0.0)
    model.to(device).train()
    # one seeded stream for shuffling and augmentation (DP-SGD samples from the OS instead)
    gen = torch.Generator().manual_seed(settings.seed)
    optimizer = make_optimizer(parameter_groups(model, settings), settings)
    proximal = proximal_term(model, settings, global_params, device)
    call = TrainingCall(model, optimizer, x, y, settings, device, loss)
    stepper: Stepper = PlainSteps(call) if privacy is None else privacy.stepper(call)
    tally = Tally()
    with stepper:
        for _ in range(settings.epochs):
            for xb, yb in stepper.batches(gen):
                if settings.augment and len(yb):
                    xb = augment_batch(xb, gen)
                stepper.step(xb, yb, proximal, tally)
    return tally.result(n, started)


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
