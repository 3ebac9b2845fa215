"""Tiny models and data for the privacy tests (fast: 8³ volumes, a few channels)."""

from __future__ import annotations

from pathlib import Path

import torch

from fedmi.client.site.settings import SiteSettings
from fedmi.shared.model import ModelSpec, build_model

TINY = ModelSpec(
    in_shape=(1, 8, 8, 8),
    channels=(4, 8),
    strides=(2, 2),
    embedding=4,
    dropout=0.0,
    num_groups=2,
    arch="cnn",
)


def tiny_model(seed: int = 1, harmonizer=None) -> torch.nn.Module:
    torch.manual_seed(seed)
    return build_model(TINY, harmonizer)


def tiny_data(n: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, *TINY.in_shape, generator=g)
    y = (torch.rand(n, generator=g) > 0.5).float()
    return x, y


def fake_site(tmp_path: Path, name: str = "site-a") -> SiteSettings:
    data = tmp_path / name
    data.mkdir(parents=True, exist_ok=True)
    return SiteSettings(name, "train", data, tmp_path / "state" / name, tmp_path / "cache" / name)
