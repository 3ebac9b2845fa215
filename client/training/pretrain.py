"""Local self-supervised pretraining at a site: masked-image modelling, with or without DP-SGD.

:func:`pretrain_local` trains a :class:`fedmi.shared.pretraining.PretrainNet` (the site's
harmonizer, the federated encoder stages and the federated decoder) to reconstruct hidden
patches of the site's scans (the method and its literature: :mod:`fedmi.shared.pretraining`).
It takes volumes only — no labels — and runs *the* training loop,
:func:`fedmi.client.training.loop.train_local`, with :class:`MaskedImageObjective` as its
per-sample loss: the same optimiser, augmentation stream and steppers, so under DP-SGD
(:class:`fedmi.client.privacy.dp_sgd.DPSGD`) each step is a Poisson sample whose per-scan
gradients Opacus clips and noises exactly as in supervised training. Accounting is the
caller's (:func:`fedmi.client.privacy.pretrain_round.private_pretraining` charges the ledger).

The masks follow a stream seeded from the round's seed (like augmentation): the mask is
part of each scan's loss function, chosen independently of every other scan, so it does
not weaken the per-sample guarantee; the Poisson samples and the noise still come from the
operating system.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from fedmi.client.training.loop import DPWrapper, TrainSettings, train_local
from fedmi.shared.pretraining import (
    DEFAULT_MASK_RATIO,
    DEFAULT_PATCH_SIZE,
    PretrainNet,
    masked_reconstruction_loss,
    patch_counts,
    random_patch_mask,
)

log = logging.getLogger(__name__)

#: Mixed into the round's seed for the mask stream (kept apart from shuffling/augmentation).
_MASK_STREAM = 0x6D61736B


@dataclass(frozen=True, kw_only=True)
class MaskingSettings:
    """How scans are masked for pretraining.

    Attributes
    ----------
    patch_size
        Cubic patch edge in voxels, or three edges.
    mask_ratio
        Share of patches hidden in each scan, in ``(0, 1)``.
    normalize_target
        Standardise each scan's target on its masked voxels
        (:func:`~fedmi.shared.pretraining.masked_reconstruction_loss`).
    """

    patch_size: int | tuple[int, int, int] = DEFAULT_PATCH_SIZE
    mask_ratio: float = DEFAULT_MASK_RATIO
    normalize_target: bool = True

    def __post_init__(self) -> None:
        if not isinstance(self.normalize_target, bool):
            raise TypeError(f"normalize_target must be a bool, got {self.normalize_target!r}")

    def check(self, grid: tuple[int, int, int]) -> None:
        """Raise ``ValueError``/``TypeError`` when the patches do not fit ``grid``."""
        patch_counts(grid, patch_size=self.patch_size, mask_ratio=self.mask_ratio)


@dataclass(frozen=True)
class PretrainResult:
    """Aggregate outcome of local pretraining (what may be reported).

    ``loss`` is the mean masked-reconstruction loss over the scans seen (site-internal
    under DP, like the training loss).
    """

    num_examples: int
    loss: float
    steps: int
    seconds: float


def mask_seed(seed: int) -> int:
    """The seed of the mask stream of a round whose seed is ``seed``."""
    return int(np.random.SeedSequence([int(seed), _MASK_STREAM]).generate_state(1)[0])


class MaskedImageObjective:
    """The loop's per-sample loss (:class:`~fedmi.client.training.loop.BatchLoss`) for pretraining.

    For a batch it draws one patch mask per scan from its own stream, runs the model
    (the :class:`PretrainNet`, or Opacus' wrapper of it) and returns each scan's masked
    reconstruction loss.
    """

    def __init__(
        self, net: PretrainNet, masking: MaskingSettings, generator: torch.Generator
    ) -> None:
        self.net = net
        self.masking = masking
        self.generator = generator
        self.grid = tuple(int(g) for g in net.spec.in_shape[1:])
        masking.check(self.grid)

    def __call__(self, model: nn.Module, xb: torch.Tensor, yb: torch.Tensor) -> torch.Tensor:
        mask = random_patch_mask(
            int(xb.shape[0]),
            self.grid,
            patch_size=self.masking.patch_size,
            mask_ratio=self.masking.mask_ratio,
            generator=self.generator,
        ).to(xb.device)
        recon = model(xb, mask)
        return masked_reconstruction_loss(
            recon.float(),
            self.net.image(xb).float(),
            mask,
            normalize=self.masking.normalize_target,
        )


def _check_volumes(net: PretrainNet, x: torch.Tensor) -> None:
    spec = net.spec
    if not isinstance(x, torch.Tensor) or x.dim() != 5:
        raise ValueError(
            f"x must be a tensor of volumes (n, c, x, y, z), got "
            f"{type(x).__name__} {tuple(getattr(x, 'shape', ()))}"
        )
    if tuple(x.shape[2:]) != tuple(spec.in_shape[1:]) or x.shape[1] < spec.in_shape[0]:
        raise ValueError(
            f"volumes must be (n, {spec.in_shape[0]}[+1 group channel], "
            f"{', '.join(map(str, spec.in_shape[1:]))}), got {tuple(x.shape)}"
        )
    if not x.is_floating_point():
        raise ValueError(f"volumes must be floating point, got {x.dtype}")


def pretrain_local(
    model: PretrainNet,
    x: torch.Tensor,
    settings: TrainSettings,
    *,
    privacy: DPWrapper | None = None,
    device: torch.device | None = None,
    masking: MaskingSettings | None = None,
) -> PretrainResult:
    """Pretrain ``model`` in place on the volumes ``x`` by masked-image modelling.

    Parameters
    ----------
    model
        The :class:`PretrainNet` (harmonizer local; encoder stages and decoder federated).
    x
        Volumes ``(n, c, x, y, z)`` on the model's grid (a harmonized model's group
        channel last, as in training). No labels: pretraining never sees them.
    settings
        The training recipe (epochs, batch size, optimiser, learning rate, augmentation,
        seed); ``proximal_mu`` is not used.
    privacy
        A DP-SGD wrapper (:class:`fedmi.client.privacy.dp_sgd.DPSGD`): Poisson samples,
        per-sample clipping and noise, as in supervised training. ``None``: plain steps.
        Accounting is the caller's.
    device
        Default: CUDA when present.
    masking
        Patch size, mask ratio and target normalisation (default :class:`MaskingSettings`).

    Returns
    -------
    PretrainResult
        Mean reconstruction loss over the scans seen, steps, number of scans, seconds.
    """
    if not isinstance(model, PretrainNet):
        raise TypeError(f"model must be a PretrainNet, got {type(model).__name__}")
    if not isinstance(settings, TrainSettings):
        raise TypeError(f"settings must be TrainSettings, got {type(settings).__name__}")
    _check_volumes(model, x)
    masking = masking if masking is not None else MaskingSettings()
    if not isinstance(masking, MaskingSettings):
        raise TypeError(f"masking must be MaskingSettings, got {type(masking).__name__}")
    started = time.perf_counter()
    objective = MaskedImageObjective(
        model, masking, torch.Generator().manual_seed(mask_seed(settings.seed))
    )
    n = int(x.shape[0])
    # the loop's label slot carries nothing: the objective never reads it
    placeholder = torch.zeros(n, dtype=x.dtype)
    result = train_local(
        model, x, placeholder, settings, privacy=privacy, device=device, loss=objective
    )
    return PretrainResult(
        num_examples=result.num_examples,
        loss=result.loss,
        steps=result.steps,
        seconds=time.perf_counter() - started,
    )
