"""The regional model: fixed atlas pooling + a small federated head.

Sample-level DP-SGD adds noise of norm ``σ·C·√d / B`` to every step, so with hospital
sites of tens of scans only models with few trainable parameters still learn (the 3-D CNN
of :mod:`fedmi.shared.model` has ~200 000). The regional backbone pools each scan into the mean
of its reference-normalised uptake in each of ~50 anatomical regions (lobar, gyral and
deep-nuclei composites of AAL3 per hemisphere, :func:`fedmi.shared.anatomy.parcellation`: the
regional SUVR / SBR that nuclear-medicine physicists read; a fixed, parameter-free layer),
takes a scaled log, standardises it per scan and feeds a linear head: ~50 trainable
weights. The composites rather than the 151 single AAL3 labels: the DP noise grows with the
number of weights, and on the default fdg-ad preset the composites keep the accuracy without
DP (holdout AUC 0.99) while losing far less at ε = 8 (docs/privacy.md). It is the
default under DP; the CNN remains for runs without sample-level DP.

The head reads each scan's deviation from the task template's own regional pattern
(:func:`template_features`). The standardised pattern is mostly anatomy that every scan
shares: on the dat-pd preset the training scans' mean feature vector has squared norm 51.7 of
the 52 every scan has. Along that common direction the loss's curvature was 10.5 (8.8 on
fdg-ad), where full-batch SGD with momentum 0.9 at learning rate 0.6 is stable only below
2·1.9/0.6 = 6.3: the weights oscillated until the sigmoid saturated and every scan scored
above 0.99 (every dat-pd holdout scan called PD at 0.5, with AUC 0.89). Centred, the largest
curvature is 0.35 (1.8 on fdg-ad): the same functions of the features, a better-conditioned
parameterisation, trained at 3.0 (docs/operating-point.md).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from fedmi.shared.anatomy import composite_index
from fedmi.shared.grid import Grid
from fedmi.shared.tasks import TEMPLATE_GRID_4MM, get_task

#: Regions smaller than this many template voxels are left out (merged into the background).
MIN_REGION_VOXELS = 4
#: Features are ``LOG_SCALE · log(regional ratio)``: 0 at a ratio of 1, about ±1 for ±20 %.
LOG_SCALE = 5.0


def region_index(grid: Grid) -> tuple[np.ndarray, tuple[str, ...]]:
    """Per-voxel region slot on ``grid`` (``-1`` = outside every region) and the region names.

    :func:`fedmi.shared.anatomy.composite_index` with regions of at least
    :data:`MIN_REGION_VOXELS` voxels (ingest fills cut fields of view with the same regions).
    """
    return composite_index(grid, MIN_REGION_VOXELS)


class RegionPooling(nn.Module):
    """Mean of the volume inside each atlas region (no trainable parameters)."""

    def __init__(self, grid: Grid = TEMPLATE_GRID_4MM) -> None:
        super().__init__()
        index, names = region_index(grid)
        inside = index >= 0
        self.region_names = names
        self.register_buffer("voxels", torch.from_numpy(np.flatnonzero(inside)), persistent=False)
        self.register_buffer("slots", torch.from_numpy(index[inside]), persistent=False)
        counts = np.bincount(index[inside], minlength=len(names)).astype(np.float32)
        self.register_buffer("counts", torch.from_numpy(counts), persistent=False)

    @property
    def num_regions(self) -> int:
        return len(self.region_names)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.reshape(x.shape[0], -1).index_select(1, self.voxels)
        sums = torch.zeros(x.shape[0], self.num_regions, dtype=x.dtype, device=x.device)
        sums = sums.index_add(1, self.slots, flat)
        return sums / self.counts


class LogRatio(nn.Module):
    """``LOG_SCALE · log(max(x, 1e-3))``: regional ratios on a scale a linear head can use."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return LOG_SCALE * torch.log(torch.clamp(x, min=1e-3))


def template_features(task: str, grid: Grid = TEMPLATE_GRID_4MM) -> torch.Tensor:
    """The regional features of the task's template (:func:`fedmi.shared.templates.task_template`).

    A fixed, data-free vector (one value per region, the order of
    :attr:`RegionalBackbone.region_names`): what the encoder gives for the task's typical
    uptake pattern. :class:`RegionalBackbone` subtracts it before its head.

    Raises
    ------
    ValueError
        ``task`` is not a task of :data:`fedmi.shared.tasks.TASKS`.
    """
    return RegionalBackbone(grid=grid, task=task).centre.clone()


class RegionalBackbone(nn.Module):
    """Federated part of the regional model: encoder (pooling, log, dropout) + linear head.

    Parameters
    ----------
    dropout
        Dropout on the features during training.
    grid
        The template grid the volumes are on.
    task
        The clinical task whose template pattern the head's input is centred on
        (:func:`template_features`); ``None``: uncentred (models built before the centring).
    """

    def __init__(
        self, dropout: float = 0.1, grid: Grid = TEMPLATE_GRID_4MM, task: str | None = None
    ) -> None:
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
        centre = torch.zeros(pool.num_regions)
        if task is not None:
            from fedmi.shared.templates import task_template  # scipy: only when a task asks

            template = np.array(task_template(get_task(task), grid), dtype=np.float32)
            with torch.no_grad():  # the encoder without its dropout: pooling, log, standardising
                centre = self.encoder[:3](torch.from_numpy(template)[None, None])[0]
        # fixed by the task, never trained or sent: not part of the state dict
        self.register_buffer("centre", centre, persistent=False)

    @property
    def region_names(self) -> tuple[str, ...]:
        """The region behind each feature (and head weight), in order."""
        return self.encoder[0].region_names

    def head_input(self, features: torch.Tensor) -> torch.Tensor:
        """What the head reads: the features' deviation from the template (:attr:`centre`)."""
        return features - self.centre

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.head_input(self.encoder(x))).squeeze(-1)
