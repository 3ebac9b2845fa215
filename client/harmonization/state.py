"""The site's own harmonization layers: groups from the headers, and storage that survives.

Local layers (:mod:`fedmi.shared.harmonization`) are trained at the site and never sent. They
are kept in the site's state directory (``SiteSettings.state_dir``), so they survive
rounds, SuperNode restarts and new runs — Flower's ``context.state`` does not survive a
SuperNode restart. One file per task and method::

    STATE_DIR/harmonization/<task>-<method>.pt
        {"format": 1, "method", "task", "status": "trained"|"adapted",
         "groups": [group key, ...], "state": {local parameter name: tensor}}

Every local tensor has one row per group (they are ``nn.Embedding`` weights), so a site
that later gains a scanner or tracer keeps the rows of the groups it knows and starts the
new group from identity. Files are written atomically (temporary file + ``os.replace``).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
import torch

from fedmi.client.data import SiteData, rows_fingerprint
from fedmi.client.private_files import private_writer
from fedmi.client.site.settings import SiteSettings
from fedmi.shared.harmonization import (
    HarmonizedNet,
    build_method_model,
    group_key,
    with_groups,
)
from fedmi.shared.methods import HARMONIZED_METHODS
from fedmi.shared.model import ModelSpec, load_local_state, local_state_dict
from fedmi.shared.tasks import get_task

log = logging.getLogger(__name__)

STATE_SUBDIR = "harmonization"
FORMAT = 1

_GROUPS_CACHE: dict[tuple[str, str, str], list[str]] = {}
_FILE_CACHE: dict[str, tuple[int, dict]] = {}
_LOCK = threading.Lock()


def clear_caches() -> None:
    """Forget everything held in memory (as a restarted SuperNode would)."""
    with _LOCK:
        _GROUPS_CACHE.clear()
        _FILE_CACHE.clear()


def scan_group_keys(rows: list[dict], task_name: str) -> list[str]:
    """Group key of each scan, aligned with :func:`fedmi.client.data.load_site_data` of ``rows``.

    Uses the same row filter (a training class label and a volume on the task grid; the
    grid is read from the NIfTI header only).
    """
    task = get_task(task_name)
    keys = []
    for row in rows:
        if task.class_index(str(row["label"])) is None:
            continue
        shape = tuple(nib.load(str(row["cached_path"])).shape)
        if shape != task.grid.shape:
            continue
        keys.append(group_key(row))
    return keys


def site_group_keys(site: SiteSettings, task_name: str) -> list[str]:
    """Per-scan group keys of the site's ingested, labelled scans (cached in memory)."""
    from fedmi.client.ingest.report import load_accepted

    key = (str(site.cache_dir), task_name, rows_fingerprint(site.cache_dir))
    with _LOCK:
        if key not in _GROUPS_CACHE:
            _GROUPS_CACHE[key] = scan_group_keys(load_accepted(site.cache_dir), task_name)
        return list(_GROUPS_CACHE[key])


def state_path(site: SiteSettings, task: str, method: str) -> Path:
    """Where the site keeps the local layers of ``method`` for ``task``."""
    return site.state_dir / STATE_SUBDIR / f"{task}-{method}.pt"


def read_state(path: Path) -> dict | None:
    """The stored local layers, or ``None`` when absent or unreadable (logged)."""
    try:
        mtime = path.stat().st_mtime_ns
    except FileNotFoundError:
        return None
    with _LOCK:
        hit = _FILE_CACHE.get(str(path))
        if hit is not None and hit[0] == mtime:
            return hit[1]
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - a damaged file means "start from identity"
        log.warning("local harmonization state unreadable (%s): starting from identity", exc)
        return None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        log.warning("local harmonization state has an unknown format: starting from identity")
        return None
    with _LOCK:
        _FILE_CACHE[str(path)] = (mtime, payload)
    return payload


def write_state(path: Path, payload: dict) -> None:
    """Write ``payload`` atomically (same-folder temporary file, fsync, ``os.replace``),
    mode 0600 in a folder created 0700 (:mod:`fedmi.client.private_files`)."""
    with private_writer(path, durable=True) as fh:
        torch.save(payload, fh)
    with _LOCK:
        _FILE_CACHE.pop(str(path), None)


@dataclass
class SiteHarmonization:
    """A harmonized model for one site with its scans' groups and its stored local layers.

    Attributes
    ----------
    model
        The method's model with one set of local parameters per group.
    groups
        Group keys, index = row of every local parameter.
    scan_groups
        Group index of each scan, aligned with :class:`fedmi.client.data.SiteData`.
    status
        ``trained`` or ``adapted`` when stored layers were loaded, else ``identity``.
    """

    site: SiteSettings
    task: str
    method: str
    model: HarmonizedNet
    groups: list[str]
    scan_groups: np.ndarray
    status: str

    def subset(self, data: SiteData, which: str) -> tuple[torch.Tensor, torch.Tensor]:
        """``data.subset(which)`` with the group-index channel appended."""
        x, y = data.subset(which)
        if which == "all":
            g = self.scan_groups
        else:
            g = self.scan_groups[data.is_test if which == "test" else ~data.is_test]
        return with_groups(x, g), y

    def save(self, status: str) -> Path:
        """Store the model's local layers (atomically) with ``status``."""
        path = state_path(self.site, self.task, self.method)
        payload = {
            "format": FORMAT,
            "method": self.method,
            "task": self.task,
            "status": status,
            "groups": list(self.groups),
            "state": dict(local_state_dict(self.model)),
        }
        write_state(path, payload)
        self.status = status
        log.info("stored local harmonization layers (%d group(s), %s)", len(self.groups), status)
        return path


def load_site_harmonization(
    site: SiteSettings,
    task: str,
    method: str,
    data: SiteData,
    spec: ModelSpec | None = None,
) -> SiteHarmonization:
    """Build the method's model for the site and load its stored local layers if any."""
    if method not in HARMONIZED_METHODS:
        raise ValueError(f"method {method!r} has no local harmonization layers")
    keys = site_group_keys(site, task)
    if len(keys) != len(data):
        log.warning("group keys do not line up with the site's scans: one group for all")
        keys = ["unknown"] * len(data)
    stored = read_state(state_path(site, task, method))
    known = list(stored["groups"]) if stored else []
    groups = known + sorted(set(keys) - set(known))
    model = build_method_model(method, spec, n_groups=max(1, len(groups)))
    status = "identity"
    if stored:
        state = _remap(stored["state"], known, groups, local_state_dict(model))
        load_local_state(model, state)
        status = str(stored.get("status", "trained"))
    index = {g: i for i, g in enumerate(groups)}
    scan_groups = np.asarray([index[k] for k in keys], dtype=np.int64)
    return SiteHarmonization(site, task, method, model, groups, scan_groups, status)  # type: ignore[arg-type]


def _remap(
    stored: Mapping[str, torch.Tensor],
    known: list[str],
    groups: list[str],
    fresh: Mapping[str, torch.Tensor],
) -> dict[str, torch.Tensor]:
    out: dict[str, torch.Tensor] = {}
    for name, init in fresh.items():
        value = stored.get(name)
        if value is None or value.shape[1:] != init.shape[1:] or value.shape[0] != len(known):
            out[name] = init
            continue
        merged = init.clone()
        merged[: len(known)] = value
        out[name] = merged
    return out
