"""Which Flower apps (FABs) run here: the installed fedmi release, and what was approved.

Used by the site (:mod:`fedmi.client.deploy.worker`) and the coordinator
(:mod:`fedmi.server.deploy.executor`) alike.

Flower's SuperNode runs the ClientApp code inside whatever FAB the SuperLink hands it (the
FAB's folder first on ``sys.path``), and ``--trusted-entities`` only accepts hub-verified
apps (FLOWER_NOTES, "Security of a deployment"). fedmi's site worker
(:mod:`fedmi.client.deploy.worker`) therefore never loads code from a FAB: it runs the
site's *installed* fedmi, and only for a run whose FAB hash the site approved (the
coordinator's executor likewise starts a ServerApp only for an approved hash):

* the hash of the FAB of the installed release, computed like ``flwr run`` does
  (SHA-256 of :func:`flwr.cli.build.build_fab_from_disk` of the fedmi checkout), and
* hashes the site added with ``fedmi-site approve --state-dir DIR (FAB_FILE | HASH)``
  (``approved-apps.json`` in the state folder, mode 0600).

Any other run (a modified copy of fedmi, another app, even submitted by the coordinator's
own operator) is refused before anything of it runs; the refusal is logged and the
coordinator receives an error reply (the site is unavailable for that run).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path

APPROVED_FILE = "approved-apps.json"
_HASH = re.compile(r"^[0-9a-f]{64}$")


class TrustError(ValueError):
    """An approval cannot be recorded; the message names the file or value and the fix."""


def installed_app_dir() -> Path:
    """The checkout of the installed fedmi (the folder holding its pyproject.toml)."""
    import fedmi.shared

    root = Path(fedmi.shared.__file__).resolve().parents[1]
    if not (root / "pyproject.toml").is_file():
        raise TrustError(
            f"fedmi's pyproject.toml was not found in {root}: install fedmi from its source "
            "folder (pip install -e) so the site can compute its release's app hash"
        )
    return root


def fab_hash(fab: bytes) -> str:
    """A FAB's hash as Flower computes it (``Fab.hash_str``): SHA-256 of its bytes, hex."""
    return hashlib.sha256(fab).hexdigest()


def installed_fab_hash(app_dir: Path | None = None) -> str:
    """The hash of the FAB ``flwr run`` builds from the installed fedmi."""
    from flwr.cli.build import build_fab_from_disk

    return fab_hash(build_fab_from_disk(app_dir or installed_app_dir()))


def approved_hashes(state_dir: Path) -> set[str]:
    """Hashes the site added with ``fedmi-site approve`` (empty when none)."""
    path = Path(state_dir) / APPROVED_FILE
    if not path.exists():
        return set()
    try:
        values = json.loads(path.read_text())["approved"]
    except (OSError, ValueError, KeyError, TypeError):
        raise TrustError(
            f"{path} is not a fedmi approval list: remove it and approve the apps again"
        ) from None
    return {v for v in values if isinstance(v, str) and _HASH.match(v)}


def approve(state_dir: Path, fab_or_hash: str) -> str:
    """Add a FAB (a ``.fab`` file) or its 64-hex-digit hash to the site's approvals."""
    path = Path(fab_or_hash)
    if path.is_file():
        digest = fab_hash(path.read_bytes())
    elif _HASH.match(fab_or_hash.lower()):
        digest = fab_or_hash.lower()
    else:
        raise TrustError(
            f"{fab_or_hash!r} is neither a .fab file nor a SHA-256 hash (64 hex digits): "
            "give the FAB file the coordinator sent, or its full hash"
        )
    approved = approved_hashes(state_dir) | {digest}
    path = Path(state_dir) / APPROVED_FILE
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump({"approved": sorted(approved)}, f, indent=1)
    os.replace(tmp, path)
    return digest


def is_approved(digest: str, installed: str, state_dir: Path) -> bool:
    """Whether a run's FAB hash is the installed release's or one the site approved."""
    return digest == installed or digest in approved_hashes(state_dir)
