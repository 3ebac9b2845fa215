"""The pieces every reply of a site is made of: its declared site facts and status replies.

What a reply may hold is declared in :mod:`fedmi.shared.contract`; these helpers only build
the records that every message type shares, so each handler adds just its own metrics.
"""

from __future__ import annotations

import numpy as np
import torch
from flwr.app import ArrayRecord, ConfigRecord, MetricRecord, RecordDict

from fedmi.client.site.settings import SiteSettings
from fedmi.shared import contract
from fedmi.shared.model import federated_state_dict


def site_record(site: SiteSettings, task: str, status: str) -> ConfigRecord:
    """The declared site facts (:data:`fedmi.shared.contract.SITE_FIELDS`) of a reply."""
    return ConfigRecord(
        {"site-id": site.site_id, "role": site.role, "status": status, "task": task}
    )


def status_reply(
    site: SiteSettings, task: str, status: str, metrics: dict[str, float | int] | None = None
) -> RecordDict:
    """A reply that carries a status and no statistics (``num-examples`` 0), and
    ``metrics`` (a DP refusal's privacy metrics: the ε the site has spent)."""
    return RecordDict(
        {
            contract.METRICS: MetricRecord({"num-examples": 0, **(metrics or {})}),
            contract.SITE: site_record(site, task, status),
        }
    )


def error_reply(site_id: str, role: str, task: str) -> RecordDict:
    """A declared, content-free reply used when a handler fails."""
    return RecordDict(
        {
            contract.METRICS: MetricRecord({"num-examples": 0}),
            contract.SITE: ConfigRecord(
                {"site-id": site_id, "role": role, "status": "error", "task": task}
            ),
        }
    )


def to_state(arrays: ArrayRecord) -> dict[str, torch.Tensor]:
    """An ArrayRecord of received weights as name → tensor (copies)."""
    return {k: torch.from_numpy(np.array(v.numpy(), copy=True)) for k, v in arrays.items()}


def expected_arrays(model: torch.nn.Module) -> dict[str, tuple[tuple[int, ...], str]]:
    """Name → (shape, dtype) of every federated array of ``model``."""
    return {
        k: (tuple(v.shape), str(v.numpy().dtype)) for k, v in federated_state_dict(model).items()
    }
