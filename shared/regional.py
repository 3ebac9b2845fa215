"""The regional model: fixed atlas pooling + a small federated head.

Sample-level DP-SGD adds noise of norm ``σ·C·√d / B`` to every step, so with hospital
sites of tens of scans only models with few trainable parameters still learn (the 3-D CNN
of :mod:`shared.model` has ~200 000). The regional backbone pools each scan into the mean
of its reference-normalised uptake in every AAL3 region (the regional SUVR / SBR that
nuclear-medicine physicists read; a fixed, parameter-free layer), takes a scaled log, and
feeds a linear head: ~160 trainable weights. It is the default under DP; the CNN remains
for runs without sample-level DP.
"""

from __future__ import annotations

import functools

import numpy as np
import torch
from torch import nn

from shared.anatomy import MNI_1MM, aal3_labels
from shared.grid import Grid, resample_to_grid
from shared.tasks import TEMPLATE_GRID_4MM

#: Regions smaller than this many template voxels are merged into the background.
MIN_REGION_VOXELS = 4
#: Features are ``LOG_SCALE · log(regional ratio)``: 0 at a ratio of 1, about ±1 for ±20 %.
LOG_SCALE = 5.0


@functools.lru_cache(maxsize=4)
def region_index(grid: Grid) -> tuple[np.ndarray, tuple[int, ...]]:
    """Per-voxel region slot on ``grid`` (``-1`` = outside every region) and the AAL3 ids."""
    labels = resample_to_grid(aal3_labels(), MNI_1MM.affine, grid, order=0).reshape(-1)
    ids, counts = np.unique(labels[labels > 0], return_counts=True)
    keep = tuple(int(i) for i, c in zip(ids, counts, strict=True) if c >= MIN_REGION_VOXELS)
    lookup = {label: slot for slot, label in enumerate(keep)}
    index = np.array([lookup.get(int(v), -1) for v in labels], dtype=np.int64)
    return index, keep


class RegionPooling(nn.Module):
    """Mean of the volume inside each atlas region (no trainable parameters)."""

    def __init__(self, grid: Grid = TEMPLATE_GRID_4MM) -> None:
        super().__init__()
        index, ids = region_index(grid)
        inside = index >= 0
        self.region_ids = ids
        self.register_buffer("voxels", torch.from_numpy(np.flatnonzero(inside)), persistent=False)
        self.register_buffer("slots", torch.from_numpy(index[inside]), persistent=False)
        counts = np.bincount(index[inside], minlength=len(ids)).astype(np.float32)
        self.register_buffer("counts", torch.from_numpy(counts), persistent=False)

    @property
    def num_regions(self) -> int:
        return len(self.region_ids)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.reshape(x.shape[0], -1).index_select(1, self.voxels)
        sums = torch.zeros(x.shape[0], self.num_regions, dtype=x.dtype, device=x.device)
        sums = sums.index_add(1, self.slots, flat)
        return sums / self.counts


class LogRatio(nn.Module):
    """``LOG_SCALE · log(max(x, 1e-3))``: regional ratios on a scale a linear head can use."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return LOG_SCALE * torch.log(torch.clamp(x, min=1e-3))


class RegionalBackbone(nn.Module):
    """Federated part of the regional model: encoder (pooling, log, dropout) + linear head."""

    def __init__(self, dropout: float = 0.1, grid: Grid = TEMPLATE_GRID_4MM) -> None:
        super().__init__()
        pool = RegionPooling(grid)
        # per-scan standardisation across regions (no parameters, no cross-scan statistics,
        # so DP-safe): removes the global level, keeps the regional pattern
        self.encoder = nn.Sequential(
            pool,
            LogRatio(),
            nn.LayerNorm(pool.num_regions, elementwise_affine=False),
            nn.Dropout(dropout),
        )
        self.head = nn.Linear(pool.num_regions, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder(x)).squeeze(-1)
