"""The model family for 3-D PET/SPECT classification.

A model is a *federated backbone* (aggregated across sites) plus optional *site-local*
modules that each site trains and keeps for itself (harmonization layers). The split is
made by module type, never by parameter-name substrings: any module that subclasses
:class:`SiteLocal` — and everything inside it — is local; every other parameter and
buffer is federated.

Networks are built from MONAI blocks with GroupNorm and non-inplace activations, so that
Opacus' per-sample gradients work (BatchNorm mixes samples; in-place ReLU breaks hooks).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from monai.networks.blocks import ResidualUnit
from torch import nn

#: Norm and activation as data (MONAI style), chosen for DP-SGD compatibility.
ACT = ("relu", {"inplace": False})


def group_norm(num_groups: int = 4) -> tuple[str, dict[str, int]]:
    """MONAI norm spec for GroupNorm."""
    return ("group", {"num_groups": num_groups})


class SiteLocal(nn.Module):
    """Marker base class: parameters of this module never leave the site."""


@dataclass(frozen=True)
class ModelSpec:
    """Architecture hyper-parameters (part of the model card).

    Attributes
    ----------
    in_shape
        ``(channels, x, y, z)`` of the input volume, i.e. the task's template grid.
    channels
        Feature channels of the residual stages.
    strides
        Down-sampling stride of each stage.
    embedding
        Width of the feature vector before the classification head (the feature space
        later used for out-of-distribution scoring).
    dropout
        Dropout probability in the encoder and head.
    num_groups
        GroupNorm groups.
    arch
        ``cnn`` (residual 3-D CNN, :class:`Backbone`) or ``regional`` (fixed atlas
        pooling + linear head, :class:`fedmi.shared.regional.RegionalBackbone`: the model that
        still learns under sample-level DP at sites of tens of scans).
    task
        The clinical task (:data:`fedmi.shared.tasks.TASKS`). The regional head reads the
        features' deviation from the task template's own regional pattern
        (:func:`fedmi.shared.regional.template_features`); ``None`` (a model built without
        a task, or from a model card written before the field existed) reads them
        uncentred. Every training, evaluation and prediction path builds with the run's task.
    """

    in_shape: tuple[int, int, int, int] = (1, 40, 48, 40)
    channels: tuple[int, ...] = (8, 16, 32, 64)
    strides: tuple[int, ...] = (2, 2, 2, 2)
    embedding: int = 32
    dropout: float = 0.1
    num_groups: int = 4
    arch: str = "regional"
    task: str | None = None


class Encoder(nn.Module):
    """Residual 3-D CNN encoder (MONAI ``ResidualUnit`` stages) → embedding vector."""

    def __init__(self, spec: ModelSpec) -> None:
        super().__init__()
        stages: list[nn.Module] = []
        in_ch = spec.in_shape[0]
        size = list(spec.in_shape[1:])
        for ch, st in zip(spec.channels, spec.strides, strict=True):
            stages.append(
                ResidualUnit(
                    spatial_dims=3,
                    in_channels=in_ch,
                    out_channels=ch,
                    strides=st,
                    kernel_size=3,
                    subunits=1,
                    act=ACT,
                    norm=group_norm(spec.num_groups),
                    dropout=spec.dropout,
                )
            )
            in_ch = ch
            size = [(s + st - 1) // st for s in size]
        self.stages = nn.Sequential(*stages)
        flat = in_ch * size[0] * size[1] * size[2]
        self.project = nn.Sequential(
            nn.Flatten(1), nn.Linear(flat, spec.embedding), nn.ReLU(inplace=False)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.project(self.stages(x))


class Backbone(nn.Module):
    """Federated part: encoder + one-logit head (the continuous biomarker score)."""

    def __init__(self, spec: ModelSpec) -> None:
        super().__init__()
        self.encoder = Encoder(spec)
        self.head = nn.Sequential(nn.Dropout(spec.dropout), nn.Linear(spec.embedding, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder(x)).squeeze(-1)


ARCHITECTURES = ("regional", "cnn")
#: The default model: the one that still learns under sample-level DP (see shared/regional.py).
DEFAULT_ARCH = "regional"


def make_backbone(spec: ModelSpec) -> nn.Module:
    """The federated backbone named by ``spec.arch``."""
    if spec.arch == "cnn":
        return Backbone(spec)
    if spec.arch == "regional":
        from fedmi.shared.regional import RegionalBackbone

        return RegionalBackbone(dropout=spec.dropout, task=spec.task)
    raise ValueError(
        f"unknown model architecture {spec.arch!r}; choose one of {', '.join(ARCHITECTURES)}"
    )


class IdentityHarmonizer(SiteLocal):
    """Site-local input adapter that does nothing (plain federated training)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


class FedmiNet(nn.Module):
    """Harmonizer (site-local) followed by the backbone (federated); outputs one logit."""

    def __init__(self, spec: ModelSpec, harmonizer: SiteLocal | None = None) -> None:
        super().__init__()
        self.spec = spec
        self.harmonizer = harmonizer if harmonizer is not None else IdentityHarmonizer()
        self.backbone = make_backbone(spec)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone(self.harmonizer(x))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The embedding vector of each scan (input to the head)."""
        return self.backbone.encoder(self.harmonizer(x))


def build_model(spec: ModelSpec | None = None, harmonizer: SiteLocal | None = None) -> FedmiNet:
    """Build the default model for a task grid."""
    return FedmiNet(spec or ModelSpec(), harmonizer)


def _unwrap(model: nn.Module) -> nn.Module:
    # Opacus' GradSampleModule keeps the real model in ``_module``: exchange only the
    # unwrapped module's names, so no ``_module.`` prefix ever leaves a site.
    while hasattr(model, "_module") and isinstance(model._module, nn.Module):
        model = model._module
    return model


def local_prefixes(model: nn.Module) -> tuple[str, ...]:
    """Qualified names of the outermost :class:`SiteLocal` modules in ``model``."""
    model = _unwrap(model)
    found: list[str] = []
    for name, module in model.named_modules():
        if isinstance(module, SiteLocal) and not any(
            name == p or name.startswith(p + ".") for p in found
        ):
            found.append(name)
    return tuple(found)


def _is_local(key: str, prefixes: Sequence[str]) -> bool:
    return any(p == "" or key == p or key.startswith(p + ".") for p in prefixes)


def federated_state_dict(model: nn.Module) -> OrderedDict[str, torch.Tensor]:
    """Parameters and buffers that are aggregated across sites (detached CPU copies)."""
    model = _unwrap(model)
    prefixes = local_prefixes(model)
    return OrderedDict(
        (k, v.detach().cpu().clone())
        for k, v in model.state_dict().items()
        if not _is_local(k, prefixes)
    )


def local_state_dict(model: nn.Module) -> OrderedDict[str, torch.Tensor]:
    """Parameters and buffers of the site-local modules (never sent)."""
    model = _unwrap(model)
    prefixes = local_prefixes(model)
    return OrderedDict(
        (k, v.detach().cpu().clone())
        for k, v in model.state_dict().items()
        if _is_local(k, prefixes)
    )


def load_federated_state(model: nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Load federated weights, leaving site-local modules untouched.

    Raises
    ------
    KeyError
        If ``state`` misses a federated key or carries a key the model does not have.
    """
    model = _unwrap(model)
    expected = set(federated_state_dict(model))
    got = set(state)
    if expected != got:
        missing, extra = sorted(expected - got), sorted(got - expected)
        raise KeyError(
            f"federated weights do not match the model: missing {missing}, extra {extra}"
        )
    model.load_state_dict(state, strict=False)


def load_local_state(model: nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Load a site's own harmonization parameters."""
    model = _unwrap(model)
    model.load_state_dict(state, strict=False)
