"""DP-SGD local training (Opacus): Poisson sampling, per-sample clipping, Gaussian noise.

The same optimiser, loss and augmentation as :func:`fedmi.client.training.loop.train_local`, made
differentially private at the sample level with Opacus' ``PrivacyEngine.make_private``
(``poisson_sampling=True``). Privacy *accounting* is not done here: the caller charges the
steps to the site's ledger (:mod:`fedmi.client.privacy.settings`), and this module only reports the steps
it took.

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
import time
import warnings

import torch
from opacus import PrivacyEngine
from opacus.data_loader import DPDataLoader
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from fedmi.client.training.loop import (
    TrainResult,
    TrainSettings,
    _backbone,
    augment_batch,
    make_optimizer,
    pick_device,
    proximal_reference,
)

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


def train_private(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    settings: TrainSettings,
    *,
    noise_multiplier: float,
    max_grad_norm: float,
    global_params: list[torch.Tensor] | None = None,
    device: torch.device | None = None,
    grad_sample_mode: str | None = None,
    noise_generator: torch.Generator | None = None,
) -> TrainResult:
    """Train ``model`` in place with DP-SGD for ``settings.epochs`` epochs.

    Each step draws a Poisson sample (possibly empty), clips every example's gradient to
    ``max_grad_norm`` (L2 over all trainable parameters), sums, adds
    ``N(0, (noise_multiplier·max_grad_norm)²)`` and divides by the expected batch size.
    An empty sample still takes a noise-only step, as the accounting assumes. The
    FedProx term's gradient ``mu·(w − w_global)`` does not depend on data and is added
    after the noise.

    Returns
    -------
    TrainResult
        ``steps`` is the number of DP-SGD steps taken (``epochs × steps_per_epoch`` of
        :func:`poisson_plan`); loss and accuracy are site-internal.
    """
    device = device or pick_device()
    t0 = time.perf_counter()
    n = int(y.shape[0])
    if n == 0:
        return TrainResult(0, 0.0, 0.0, 0, 0.0)
    model.to(device).train()
    aug_gen = torch.Generator().manual_seed(settings.seed)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = make_optimizer(params, settings)
    mode = grad_sample_mode or grad_sample_mode_for(model)
    prox = proximal_reference(settings, global_params, device)
    backbone_params = [p for p in _backbone(model).parameters() if p.requires_grad]
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*[Ss]ecure RNG.*")
        warnings.filterwarnings("ignore", message=".*Full backward hook.*")
        warnings.filterwarnings("ignore", message=".*[Oo]ptimal order.*")
        engine = PrivacyEngine(accountant="rdp")
        gsm, dp_opt, loader = engine.make_private(
            module=model,
            optimizer=opt,
            data_loader=_base_loader(x, y, settings.batch_for(int(y.shape[0])), secret_generator()),
            noise_multiplier=noise_multiplier,
            max_grad_norm=max_grad_norm,
            poisson_sampling=True,
            grad_sample_mode=mode,
            loss_reduction="mean",
            noise_generator=noise_generator or secret_generator(device),
        )
        loss_fn = nn.BCEWithLogitsLoss(reduction="mean")
        total_loss, correct, seen, steps, empty = 0.0, 0, 0, 0, 0
        for _ in range(settings.epochs):
            for xb, yb in loader:
                dp_opt.zero_grad(set_to_none=True)
                if xb.shape[0] == 0:
                    # empty Poisson sample: zero clipped sum, noise only
                    empty += 1
                    for p in dp_opt.params:
                        p.grad_sample = torch.zeros((0, *p.shape), device=p.device, dtype=p.dtype)
                else:
                    if settings.augment:
                        xb = augment_batch(xb, aug_gen)
                    xb, yb = xb.to(device), yb.to(device)
                    logits = gsm(xb).float()
                    loss = loss_fn(logits, yb)
                    loss.backward()
                    total_loss += float(loss.detach()) * len(yb)
                    correct += int(((logits.detach() > 0).float() == yb).sum())
                    seen += len(yb)
                if dp_opt.pre_step():  # clip, sum, add noise, scale (Opacus)
                    if prox is not None:
                        with torch.no_grad():
                            for p, g in zip(backbone_params, prox, strict=True):
                                p.grad.add_(p.detach() - g, alpha=settings.proximal_mu)
                    dp_opt.original_optimizer.step()
                steps += 1
    history = list(engine.accountant.history)
    if sum(s for _, _, s in history) != steps:  # pragma: no cover - Opacus invariant
        raise RuntimeError(f"Opacus counted {history} but {steps} steps were taken")
    close = getattr(gsm, "_close", None)
    if callable(close):
        close()
    if empty:
        log.debug("%d empty Poisson sample(s) took noise-only steps", empty)
    return TrainResult(
        num_examples=n,
        loss=total_loss / max(seen, 1),
        accuracy=correct / max(seen, 1),
        steps=steps,
        seconds=time.perf_counter() - t0,
    )
