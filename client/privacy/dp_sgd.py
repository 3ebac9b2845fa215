"""DP-SGD for the training loop (Opacus): Poisson sampling, per-sample clipping, Gaussian noise.

:class:`DPSGD` is the optional wrapper of :func:`fedmi.client.training.loop.train_local`, the
one training loop: with it, the same optimiser, loss and augmentation are made
differentially private at the sample level with Opacus' ``PrivacyEngine.make_private``
(``poisson_sampling=True``) — also a call's per-sample objective in place of the
classifier's loss (masked-image pretraining, :mod:`fedmi.client.training.pretrain`).
Privacy *accounting* is not done here: the caller charges the steps to the site's ledger
(:mod:`fedmi.client.privacy.rounds`), and the loop only reports the steps it took.

Every trainable parameter is trained with DP-SGD, including the site-local
(:class:`fedmi.shared.model.SiteLocal`) harmonization modules: they never leave the site, but
the federated weights that do leave depend on them, so they must not see the data
through an un-noised channel.

Randomness that protects privacy (the Poisson sample of each step and the Gaussian
noise) comes from generators seeded from the operating system, never from the server's
``seed``: a coordinator that knew them could subtract the noise. The augmentation stream
still follows the server's seed. Opacus' ``secure_mode`` (a cryptographic RNG,
``torchcsprng``) is not used.
"""

from __future__ import annotations

import logging
import secrets
import warnings
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass

import torch
from opacus import PrivacyEngine
from opacus.data_loader import DPDataLoader
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from fedmi.client.training.loop import ProximalTerm, Tally, TrainingCall

log = logging.getLogger(__name__)

#: Layers whose per-sample gradients PyTorch's ExpandedWeights computes (Opacus "ew").
_EW_LAYERS = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.GroupNorm, nn.LayerNorm, nn.Embedding)


def grad_sample_mode_for(model: nn.Module) -> str:
    """The fastest correct Opacus ``grad_sample_mode`` for ``model``.

    ``"ew"`` (ExpandedWeights) when every trainable parameter belongs to a layer it
    supports, else ``"functorch"`` (any module, e.g. a harmonizer with raw parameters).
    Measured with ``python -m benchmarks.bench_dp step`` (1×40×48×40 inputs, batch 16;
    time of a DP step over a plain one):

    ============  =================  =================  ==============  ============
    device        model              ew                 functorch       hooks
    ============  =================  =================  ==============  ============
    CPU, 1 thread regional (default) 1.42×              2.15×           1.44×
    CPU, 1 thread CNN                1.74×              2.33×           2.91×
    H200          regional           1.60×              2.52×           1.98×
    H200          CNN                2.22× (b 64 3.5×)  5.11× (7.2×)    3.54× (4.0×)
    ============  =================  =================  ==============  ============

    (H200 rows without the noise draw.) So ``ew`` is the fastest on both devices. Every mode's clipped gradient sum agrees with
    a per-sample autograd loop (relative error ≤ 1e-6 on the CPU; ≤ 5e-4 for the CNN on
    the GPU, where cuDNN's TF32 convolutions set the precision) — see
    tests/client/test_privacy_dp.py and ``bench_dp``'s ``clipped-sum-rel-error``.
    """
    for module in model.modules():
        own = [p for p in module.parameters(recurse=False) if p.requires_grad]
        if own and not isinstance(module, _EW_LAYERS):
            return "functorch"
    return "ew"


def secret_generator(device: torch.device | str = "cpu") -> torch.Generator:
    """A torch generator seeded from the OS (not reproducible, not known to the server)."""
    return torch.Generator(device=device).manual_seed(secrets.randbits(63))


def _base_loader(
    x: torch.Tensor, y: torch.Tensor, batch_size: int, generator: torch.Generator | None
) -> DataLoader:
    return DataLoader(TensorDataset(x, y), batch_size=batch_size, generator=generator)


def poisson_plan(n: int, batch_size: int) -> tuple[float, int]:
    """``(sample_rate, steps_per_epoch)`` of Opacus' Poisson loader for ``n`` examples.

    Opacus' ``DPDataLoader`` samples each example independently with probability
    ``q = 1 / ceil(n / batch_size)`` and runs ``int(1 / q)`` steps per epoch (expected batch
    ``q·n ≈ batch_size``); this asks Opacus itself, so accounting uses exactly its numbers.
    """
    if n < 1:
        return 0.0, 0
    dl = DPDataLoader.from_data_loader(
        _base_loader(torch.zeros(n), torch.zeros(n), batch_size, None)
    )
    return float(dl.sample_rate), len(dl)


@dataclass(frozen=True)
class DPSGD:
    """DP-SGD at noise multiplier σ and clipping norm C: the ``privacy`` of ``train_local``.

    Each step draws a Poisson sample (possibly empty), clips every example's gradient to
    ``max_grad_norm`` (L2 over all trainable parameters), sums, adds
    ``N(0, (noise_multiplier·max_grad_norm)²)`` and divides by the expected batch size.
    An empty sample still takes a noise-only step, as the accounting assumes. The
    FedProx term's gradient ``mu·(w − w_global)`` does not depend on data and is added
    after the noise. The loop takes ``epochs × steps_per_epoch`` steps of
    :func:`poisson_plan`.

    Attributes
    ----------
    grad_sample_mode
        Opacus' per-sample gradient engine (default: :func:`grad_sample_mode_for`).
    noise_generator
        The noise stream (default: seeded from the OS, :func:`secret_generator`).
    """

    noise_multiplier: float
    max_grad_norm: float
    grad_sample_mode: str | None = None
    noise_generator: torch.Generator | None = None

    def stepper(self, call: TrainingCall) -> PrivateSteps:
        return PrivateSteps(self, call)


class PrivateSteps:
    """The DP-SGD stepper: Opacus wraps the model, optimiser and loader on entry."""

    def __init__(self, dp: DPSGD, call: TrainingCall) -> None:
        self.dp = dp
        self.model, self.optimizer, self.x, self.y = call.model, call.optimizer, call.x, call.y
        self.settings, self.device = call.settings, call.device
        self.loss_fn = nn.BCEWithLogitsLoss(reduction="mean")
        self.objective = call.loss
        self.taken = self.empty = 0
        self._exit = ExitStack()

    def __enter__(self) -> PrivateSteps:
        self._exit.enter_context(warnings.catch_warnings())
        warnings.filterwarnings("ignore", message=".*[Ss]ecure RNG.*")
        warnings.filterwarnings("ignore", message=".*Full backward hook.*")
        warnings.filterwarnings("ignore", message=".*[Oo]ptimal order.*")
        self.engine = PrivacyEngine(accountant="rdp")
        batch = self.settings.batch_for(int(self.y.shape[0]))
        self.gsm, self.dp_opt, self.loader = self.engine.make_private(
            module=self.model,
            optimizer=self.optimizer,
            data_loader=_base_loader(self.x, self.y, batch, secret_generator()),
            noise_multiplier=self.dp.noise_multiplier,
            max_grad_norm=self.dp.max_grad_norm,
            poisson_sampling=True,
            grad_sample_mode=self.dp.grad_sample_mode or grad_sample_mode_for(self.model),
            loss_reduction="mean",
            noise_generator=self.dp.noise_generator or secret_generator(self.device),
        )
        return self

    def __exit__(self, *exc: object) -> None:
        self._exit.close()
        if exc[0] is None:
            history = list(self.engine.accountant.history)
            if sum(s for _, _, s in history) != self.taken:  # pragma: no cover - Opacus invariant
                raise RuntimeError(f"Opacus counted {history} but {self.taken} steps were taken")
        close = getattr(self.gsm, "_close", None)
        if callable(close):
            close()
        if self.empty:
            log.debug("%d empty Poisson sample(s) took noise-only steps", self.empty)

    def batches(self, gen: torch.Generator) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Opacus' Poisson samples (its own OS-seeded stream; ``gen`` is not used)."""
        yield from self.loader

    def step(
        self, xb: torch.Tensor, yb: torch.Tensor, proximal: ProximalTerm | None, tally: Tally
    ) -> None:
        self.dp_opt.zero_grad(set_to_none=True)
        if xb.shape[0] == 0:
            # empty Poisson sample: zero clipped sum, noise only
            self.empty += 1
            for p in self.dp_opt.params:
                p.grad_sample = torch.zeros((0, *p.shape), device=p.device, dtype=p.dtype)
        else:
            xb, yb = xb.to(self.device), yb.to(self.device)
            if self.objective is not None:
                # a per-sample objective (e.g. masked-image pretraining): the mean of its
                # per-sample losses, Opacus' ``loss_reduction="mean"`` as for the classifier
                losses = self.objective(self.gsm, xb, yb).float()
                losses.mean().backward()
                tally.add_losses(losses)
            else:
                logits = self.gsm(xb).float()
                loss = self.loss_fn(logits, yb)
                loss.backward()
                tally.add(float(loss.detach()) * len(yb), logits, yb)
        if self.dp_opt.pre_step():  # clip, sum, add noise, scale (Opacus)
            if proximal is not None:
                proximal.add_gradient()
            self.dp_opt.original_optimizer.step()
        self.taken += 1
        tally.steps += 1
