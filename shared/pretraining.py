"""Self-supervised pretraining of the 3-D CNN encoder: masked-image modelling.

Method
------
A random subset of cubic patches of each scan is hidden (set to 0 after the site's
harmonizer), the federated encoder's convolutional stages see the rest, and a light
decoder reconstructs the whole grid; the loss is the mean squared error on the *hidden*
voxels only, against the scan's own intensities standardised on those voxels. This is
SimMIM (Xie et al., "SimMIM: a simple framework for masked image modeling", CVPR 2022):
random patch masking at a high ratio, a light prediction head, an L2 loss on the masked
pixels — with MAE's (He et al., "Masked autoencoders are scalable vision learners",
CVPR 2022) normalised targets, adapted to a CNN (masked voxels are zeroed in the input
instead of dropping tokens, as CNN variants of masked modelling do). In federated
learning, masked-image pretraining across sites improves fine-tuning on heterogeneous,
small medical datasets (SSL-FL, Yan et al., "Label-efficient self-supervised federated
learning for tackling data heterogeneity in medical imaging", IEEE TMI 2023).

Why masked modelling and not contrastive learning: under DP-SGD every example's gradient
is clipped separately, which bounds one patient's influence only when the batch loss is
a *sum of per-scan terms*. The masked-reconstruction loss of a scan depends on that scan
alone (its mask, its prediction, its target; GroupNorm normalises within a sample). A
contrastive loss (SimCLR's InfoNCE) uses the other scans of the batch as negatives, so
one scan's gradient depends on the whole batch and per-sample clipping no longer bounds
its contribution. De et al. ("Unlocking high-accuracy differentially private image
classification through scale", 2022) show that DP-SGD works well with GroupNorm networks,
large batches and augmentation — the recipe the training loop already follows.

Layers
------
Every trainable layer of :class:`PretrainNet` outside the harmonizer is a ``Conv3d`` or a
``GroupNorm`` — the layers Opacus' ExpandedWeights (``grad_sample_mode="ew"``), hooks and
functorch modes all support. The decoder up-samples by *sub-pixel convolution* (a
convolution to ``s³`` times the channels, then a parameter-free voxel shuffle; Shi et
al. 2016), which equals a ``ConvTranspose3d`` with kernel = stride but stays in that
supported set, and crops to the input grid by slicing.

Federation
----------
During pretraining the encoder stages *and* the decoder are federated (aggregated); the
harmonizer (:class:`fedmi.shared.model.SiteLocal`) stays at the site, as in training.
After pretraining only the encoder stages move into the classifier
(:func:`transfer_encoder`); the classifier's ``project`` and ``head`` start fresh.

Pure torch: no client or server imports.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence

import torch
from torch import nn

from fedmi.shared.model import Backbone, ModelSpec

#: Default cubic patch edge in voxels (the (40, 48, 40) grid holds 5 × 6 × 5 patches).
DEFAULT_PATCH_SIZE = 8
#: Default share of patches hidden (SimMIM's best CNN/ViT range is 0.4–0.8; MAE uses 0.75).
DEFAULT_MASK_RATIO = 0.6

#: State-dict prefix of the encoder stages in a :class:`PretrainNet`.
ENCODER_PREFIX = "encoder.stages."
#: State-dict prefix of the reconstruction decoder in a :class:`PretrainNet`.
DECODER_PREFIX = "decoder."
#: State-dict prefix of the same encoder stages in the classifier (:class:`FedmiNet`).
CLASSIFIER_ENCODER_PREFIX = "backbone.encoder.stages."


# --- masking --------------------------------------------------------------------------------


def _patch_edges(patch_size: int | Sequence[int], grid: Sequence[int]) -> tuple[int, int, int]:
    if isinstance(patch_size, bool):
        raise TypeError(f"patch_size must be an int or 3 ints, got {patch_size!r}")
    if isinstance(patch_size, int):
        edges = (patch_size,) * 3
    elif isinstance(patch_size, Sequence) and not isinstance(patch_size, str):
        edges = tuple(patch_size)
    else:
        raise TypeError(f"patch_size must be an int or 3 ints, got {patch_size!r}")
    if len(edges) != 3 or not all(isinstance(e, int) and not isinstance(e, bool) for e in edges):
        raise TypeError(f"patch_size must be an int or 3 ints, got {patch_size!r}")
    for e, g in zip(edges, grid, strict=True):
        if e < 1 or e > g:
            raise ValueError(
                f"patch_size must be between 1 and the grid's edge along each axis: got "
                f"{edges} for the grid {tuple(grid)}"
            )
    return edges  # type: ignore[return-value]


def patch_counts(
    grid: Sequence[int], *, patch_size: int | Sequence[int], mask_ratio: float
) -> tuple[tuple[int, int, int], int]:
    """The patch lattice of ``grid`` and how many of its patches are masked.

    A grid edge that the patch edge does not divide ends in a partial patch.

    Raises
    ------
    ValueError
        ``grid`` is not 3 positive sizes, a patch edge is outside ``[1, grid edge]``,
        ``mask_ratio`` is outside ``(0, 1)``, or it masks no patch or every patch.
    TypeError
        ``patch_size`` is not an int or 3 ints, or ``mask_ratio`` is not a number.
    """
    grid = tuple(int(g) for g in grid)
    if len(grid) != 3 or min(grid) < 1:
        raise ValueError(f"grid must be 3 positive sizes (x, y, z), got {grid}")
    edges = _patch_edges(patch_size, grid)
    if isinstance(mask_ratio, bool) or not isinstance(mask_ratio, int | float):
        raise TypeError(f"mask_ratio must be a number in (0, 1), got {mask_ratio!r}")
    if not 0.0 < float(mask_ratio) < 1.0:
        raise ValueError(f"mask_ratio must be in (0, 1) (exclusive), got {mask_ratio}")
    lattice = tuple(-(-g // e) for g, e in zip(grid, edges, strict=True))
    total = lattice[0] * lattice[1] * lattice[2]
    masked = round(float(mask_ratio) * total)
    if not 0 < masked < total:
        raise ValueError(
            f"mask_ratio {mask_ratio} of {total} patches of {edges} voxels masks {masked}: "
            "choose a ratio (or patch size) that hides at least one patch and keeps at least one"
        )
    return lattice, masked  # type: ignore[return-value]


def random_patch_mask(
    n: int,
    grid: Sequence[int],
    *,
    patch_size: int | Sequence[int] = DEFAULT_PATCH_SIZE,
    mask_ratio: float = DEFAULT_MASK_RATIO,
    generator: torch.Generator | None = None,
    seed: int | None = None,
) -> torch.Tensor:
    """Random 3-D patch masks, one per scan: ``True`` where a voxel is hidden.

    Each scan hides exactly ``round(mask_ratio × patches)`` patches, drawn independently
    of the other scans (so each scan's loss depends on its own draw only).

    Parameters
    ----------
    n
        Number of scans (≥ 0).
    grid
        Spatial size ``(x, y, z)`` of the volumes.
    patch_size
        Cubic patch edge, or the three edges, in voxels.
    mask_ratio
        Share of patches hidden, in ``(0, 1)``.
    generator, seed
        The random stream (CPU generator); or a seed for a new one. Exactly one of them,
        or neither (torch's global stream).

    Returns
    -------
    torch.Tensor
        Boolean mask ``(n, 1, x, y, z)`` on the CPU.
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise ValueError(f"n must be a non-negative int (number of scans), got {n!r}")
    if generator is not None and seed is not None:
        raise ValueError("give generator or seed, not both")
    if seed is not None:
        generator = torch.Generator().manual_seed(int(seed))
    grid = tuple(int(g) for g in grid)
    lattice, masked = patch_counts(grid, patch_size=patch_size, mask_ratio=mask_ratio)
    edges = _patch_edges(patch_size, grid)
    total = lattice[0] * lattice[1] * lattice[2]
    scores = torch.rand(n, total, generator=generator)
    chosen = scores.argsort(dim=1)[:, :masked]
    coarse = torch.zeros(n, total, dtype=torch.bool)
    coarse.scatter_(1, chosen, True)
    coarse = coarse.view(n, 1, *lattice)
    for axis, e in enumerate(edges):
        coarse = coarse.repeat_interleave(e, dim=2 + axis)
    return coarse[:, :, : grid[0], : grid[1], : grid[2]].contiguous()


# --- the network --------------------------------------------------------------------------


def voxel_shuffle(x: torch.Tensor, scale: int) -> torch.Tensor:
    """3-D pixel shuffle: ``(n, c·s³, x, y, z)`` → ``(n, c, s·x, s·y, s·z)`` (no parameters)."""
    n, cs, d, h, w = x.shape
    c = cs // scale**3
    x = x.reshape(n, c, scale, scale, scale, d, h, w)
    x = x.permute(0, 1, 5, 2, 6, 3, 7, 4)
    return x.reshape(n, c, d * scale, h * scale, w * scale)


class UpBlock(nn.Module):
    """Sub-pixel up-sampling: Conv3d to ``out·s³`` channels, voxel shuffle, GroupNorm, ReLU."""

    def __init__(
        self, in_channels: int, out_channels: int, *, scale: int, kernel_size: int, num_groups: int
    ) -> None:
        super().__init__()
        self.scale = int(scale)
        self.conv = nn.Conv3d(
            in_channels,
            out_channels * self.scale**3,
            kernel_size=kernel_size,
            padding=kernel_size // 2,
        )
        self.norm = nn.GroupNorm(num_groups, out_channels)
        self.act = nn.ReLU(inplace=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.norm(voxel_shuffle(self.conv(x), self.scale)))


class ReconstructionDecoder(nn.Module):
    """Light decoder from the encoder's last feature map back to the input grid.

    One :class:`UpBlock` per encoder stage, in reverse, each a pointwise convolution
    before its voxel shuffle, then a pointwise convolution to the input channels, cropped
    to the grid. Pointwise keeps it light (about 22 k parameters for the default encoder's
    146 k; a 3×3×3 first block alone would add 440 k to every upload): SimMIM found a
    linear prediction head as good as heavier decoders, and the encoder's last feature
    map already sees about 31 voxels around each of its cells, several patches wide.

    Parameters
    ----------
    spec
        The classifier's :class:`~fedmi.shared.model.ModelSpec` (``cnn``).
    channels
        Output channels of each block (default: the encoder's channels in reverse,
        shifted by one stage, ending at the first stage's width). Each must be divisible
        by ``spec.num_groups``.
    """

    def __init__(self, spec: ModelSpec, *, channels: Sequence[int] | None = None) -> None:
        super().__init__()
        enc = tuple(spec.channels)
        chans = tuple(channels) if channels is not None else (*enc[::-1][1:], enc[0])
        if len(chans) != len(spec.strides):
            raise ValueError(
                f"decoder channels must give one width per encoder stage "
                f"({len(spec.strides)}), got {chans}"
            )
        for c in chans:
            if isinstance(c, bool) or not isinstance(c, int) or c < 1 or c % spec.num_groups:
                raise ValueError(
                    f"decoder channels must be positive ints divisible by num_groups "
                    f"{spec.num_groups}, got {chans}"
                )
        self.grid = tuple(spec.in_shape[1:])
        blocks: list[nn.Module] = []
        in_ch = enc[-1]
        for out_ch, stride in zip(chans, spec.strides[::-1], strict=True):
            blocks.append(
                UpBlock(in_ch, out_ch, scale=stride, kernel_size=1, num_groups=spec.num_groups)
            )
            in_ch = out_ch
        self.blocks = nn.Sequential(*blocks)
        self.out = nn.Conv3d(in_ch, spec.in_shape[0], kernel_size=1)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        y = self.out(self.blocks(features))
        d, h, w = self.grid
        if y.shape[2] < d or y.shape[3] < h or y.shape[4] < w:  # pragma: no cover - by design
            raise RuntimeError(f"decoder output {tuple(y.shape[2:])} smaller than the grid")
        return y[:, :, :d, :h, :w]


class EncoderStages(nn.Module):
    """Holder of the classifier's encoder stages, so that their keys read ``encoder.stages.*``."""

    def __init__(self, stages: nn.Module) -> None:
        super().__init__()
        self.stages = stages

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.stages(x)


class PretrainNet(nn.Module):
    """Masked-image model around a classifier: harmonizer (local) → mask → encoder → decoder.

    The harmonizer and the encoder stages are *the classifier's own modules* (shared, not
    copied): pretraining at a site trains them in place; the decoder is new. A
    harmonized model's group-index channel (:func:`fedmi.shared.harmonization.with_groups`)
    is split off as the classifier does, and is neither masked nor reconstructed.

    Parameters
    ----------
    classifier
        A :class:`~fedmi.shared.model.FedmiNet` (or harmonized subclass) with the ``cnn``
        backbone.
    decoder_channels
        See :class:`ReconstructionDecoder`.
    """

    def __init__(
        self, classifier: nn.Module, *, decoder_channels: Sequence[int] | None = None
    ) -> None:
        super().__init__()
        spec = getattr(classifier, "spec", None)
        backbone = getattr(classifier, "backbone", None)
        if not isinstance(spec, ModelSpec) or not isinstance(backbone, Backbone):
            raise TypeError(
                "PretrainNet needs a FedmiNet with the 'cnn' backbone (ModelSpec(arch='cnn')), "
                f"got {type(classifier).__name__} with backbone {type(backbone).__name__}"
            )
        self.spec = spec
        self.harmonizer = classifier.harmonizer
        self.encoder = EncoderStages(backbone.encoder.stages)
        self.decoder = ReconstructionDecoder(spec, channels=decoder_channels)
        split = getattr(classifier, "_split", None)
        # a plain attribute, not a submodule: the classifier is not part of this net's state
        self._classifier_split: Callable[[torch.Tensor], torch.Tensor] | None = (
            split if callable(split) else None
        )

    def image(self, x: torch.Tensor) -> torch.Tensor:
        """The image channels of ``x`` (the reconstruction target), group channel dropped."""
        return x[:, : self.spec.in_shape[0]]

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """The reconstruction ``(n, c, x, y, z)`` of ``x`` from its unmasked voxels.

        ``mask``: boolean ``(n, 1, x, y, z)``, ``True`` = hidden (zeroed after the
        harmonizer, so the harmonizer never sees through to the hidden voxels' values in
        the encoder's input).
        """
        img = self._classifier_split(x) if self._classifier_split is not None else self.image(x)
        h = self.harmonizer(img)
        h = torch.where(mask, torch.zeros((), dtype=h.dtype, device=h.device), h)
        return self.decoder(self.encoder(h))


def masked_reconstruction_loss(
    prediction: torch.Tensor,
    target: torch.Tensor,
    mask: torch.Tensor,
    *,
    normalize: bool = True,
    eps: float = 1e-6,
) -> torch.Tensor:
    """Per-scan mean squared error on the masked voxels: shape ``(n,)``.

    Each scan's term depends on that scan only, and is averaged over its own masked
    voxels (every scan weighs the same whatever its mask). Unmasked voxels of ``target``
    never enter (not even through the normalisation).

    Parameters
    ----------
    prediction, target
        ``(n, c, x, y, z)``; ``target`` is not differentiated.
    mask
        Boolean, broadcastable to ``target``: ``True`` where the loss is taken.
    normalize
        Standardise each scan's target by the mean and standard deviation of its masked
        voxels (MAE's normalised targets, per scan): the loss is then free of each site's
        intensity scale.
    eps
        Added to the variance before the square root.
    """
    if prediction.shape != target.shape or prediction.dim() < 2:
        raise ValueError(
            f"prediction and target must have the same shape (n, c, ...), got "
            f"{tuple(prediction.shape)} and {tuple(target.shape)}"
        )
    if mask.dtype != torch.bool:
        raise TypeError(f"mask must be a boolean tensor, got {mask.dtype}")
    if not eps > 0:
        raise ValueError(f"eps must be > 0, got {eps}")
    m = mask.expand_as(target)
    dims = tuple(range(1, target.dim()))
    count = m.sum(dim=dims).to(prediction.dtype)
    if bool((count == 0).any()):
        raise ValueError("every scan needs at least one masked voxel")
    shape = (-1, *([1] * (target.dim() - 1)))
    zero = torch.zeros((), dtype=prediction.dtype, device=prediction.device)
    t = torch.where(m, target.detach().to(prediction.dtype), zero)
    if normalize:
        mean = t.sum(dim=dims) / count
        centred = torch.where(m, t - mean.view(shape), zero)
        var = (centred**2).sum(dim=dims) / count
        t = centred / torch.sqrt(var + eps).view(shape)
    err = torch.where(m, (prediction - t) ** 2, zero)
    return err.sum(dim=dims) / count


# --- which weights are which; encoder transfer; linear probe -------------------------------


def encoder_keys(state: Mapping[str, torch.Tensor] | nn.Module) -> list[str]:
    """Keys of the encoder stages in a :class:`PretrainNet` state (what the classifier gets)."""
    keys = state.state_dict().keys() if isinstance(state, nn.Module) else state.keys()
    return [k for k in keys if k.startswith(ENCODER_PREFIX)]


def decoder_keys(state: Mapping[str, torch.Tensor] | nn.Module) -> list[str]:
    """Keys of the reconstruction decoder (federated in pretraining, dropped afterwards)."""
    keys = state.state_dict().keys() if isinstance(state, nn.Module) else state.keys()
    return [k for k in keys if k.startswith(DECODER_PREFIX)]


def _classifier_backbone(classifier: nn.Module) -> Backbone:
    classifier = getattr(classifier, "_module", classifier)  # an Opacus wrapper
    backbone = getattr(classifier, "backbone", None)
    if not isinstance(backbone, Backbone):
        raise TypeError(
            f"expected a FedmiNet with the 'cnn' backbone, got {type(classifier).__name__} "
            f"with backbone {type(backbone).__name__}"
        )
    return backbone


def transfer_encoder(
    classifier: nn.Module, pretrained: Mapping[str, torch.Tensor] | PretrainNet
) -> list[str]:
    """Copy pretrained encoder stages into ``classifier`` (in place), for fine-tuning.

    Only ``encoder.stages.*`` moves, to ``backbone.encoder.stages.*``; the classifier's
    ``project`` and ``head`` (and its harmonizer) are left as they are — fresh.

    Parameters
    ----------
    classifier
        A :class:`~fedmi.shared.model.FedmiNet` with the ``cnn`` backbone.
    pretrained
        A :class:`PretrainNet` or its state dict: the whole one at a site, or only its
        federated part (the aggregated weights at the server). Decoder and harmonizer
        keys are ignored.

    Returns
    -------
    list[str]
        The classifier keys that were overwritten.

    Raises
    ------
    KeyError
        An encoder key that the classifier does not have, or a classifier encoder key
        (other than a site-local one) that ``pretrained`` does not carry.
    ValueError
        A tensor whose shape differs.
    """
    backbone = _classifier_backbone(classifier)
    state = pretrained.state_dict() if isinstance(pretrained, nn.Module) else pretrained
    source = {k[len(ENCODER_PREFIX) :]: v for k, v in state.items() if k.startswith(ENCODER_PREFIX)}
    if not source:
        raise KeyError(f"the pretrained weights carry no {ENCODER_PREFIX}* keys")
    stages = backbone.encoder.stages
    target = stages.state_dict(keep_vars=True)
    local = _local_stage_keys(stages)
    extra = sorted(set(source) - set(target))
    missing = sorted(set(target) - set(source) - local)
    if extra or missing:
        raise KeyError(
            f"pretrained encoder does not match the classifier's: missing "
            f"{[CLASSIFIER_ENCODER_PREFIX + k for k in missing]}, extra "
            f"{[ENCODER_PREFIX + k for k in extra]}"
        )
    for k, v in source.items():
        if tuple(v.shape) != tuple(target[k].shape):
            raise ValueError(
                f"{ENCODER_PREFIX}{k}: pretrained shape {tuple(v.shape)}, classifier "
                f"shape {tuple(target[k].shape)}"
            )
    with torch.no_grad():
        for k, v in source.items():
            target[k].copy_(v.to(device=target[k].device, dtype=target[k].dtype))
    return [CLASSIFIER_ENCODER_PREFIX + k for k in sorted(source)]


def _local_stage_keys(stages: nn.Module) -> set[str]:
    from fedmi.shared.model import SiteLocal

    prefixes = [n for n, m in stages.named_modules() if isinstance(m, SiteLocal) and n]
    return {
        k for k in stages.state_dict() if any(k == p or k.startswith(p + ".") for p in prefixes)
    }


def set_linear_probe(classifier: nn.Module, *, enabled: bool = True) -> list[str]:
    """Freeze (``enabled``) or unfreeze the harmonizer and encoder stages of ``classifier``.

    A linear probe trains only ``backbone.encoder.project`` and ``backbone.head`` on top of
    the pretrained stages; the training loop, its optimiser and DP-SGD only ever touch
    parameters that require gradients.

    Returns
    -------
    list[str]
        Names of the parameters left trainable.
    """
    if not isinstance(enabled, bool):
        raise TypeError(f"enabled must be a bool, got {enabled!r}")
    backbone = _classifier_backbone(classifier)
    inner = getattr(classifier, "_module", classifier)
    frozen = [backbone.encoder.stages]
    if isinstance(getattr(inner, "harmonizer", None), nn.Module):
        frozen.append(inner.harmonizer)
    for module in frozen:
        for p in module.parameters():
            p.requires_grad_(not enabled)
    return [n for n, p in inner.named_parameters() if p.requires_grad]


def split_pretrained_state(
    state: Mapping[str, torch.Tensor],
) -> tuple[OrderedDict[str, torch.Tensor], OrderedDict[str, torch.Tensor]]:
    """``(encoder, decoder)`` parts of a :class:`PretrainNet` state dict (other keys dropped)."""
    enc = OrderedDict((k, state[k]) for k in encoder_keys(state))
    dec = OrderedDict((k, state[k]) for k in decoder_keys(state))
    return enc, dec
