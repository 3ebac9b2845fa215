"""The privacy ledger's folder read as :class:`LedgerError`: its file, its secret, its lock.

Each function names the file and the fix when it fails, so that every ledger problem reaches
the site's log and ``fedmi-site ledger`` as one actionable line
(:mod:`fedmi.client.privacy.ledger`).
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from pathlib import Path

from fedmi.client.privacy import lock, seal
from fedmi.client.privacy.lock import LockTimeout
from fedmi.client.privacy.seal import SECRET_FILE, SealError

FORMAT = "fedmi-privacy-ledger"
RESTORE_FIX = (
    "restore it from backup, or reset it on purpose with "
    "`fedmi-site ledger --state-dir {d} --reset --yes`"
)


class LedgerError(RuntimeError):
    """The ledger is unusable, not this site's, or missing although expected: a person
    must act (the message names the file and the fix)."""


@contextlib.contextmanager
def locked(directory: Path, timeout: float | None = None) -> Iterator[None]:
    """Hold the ledger folder's exclusive lock (:mod:`fedmi.client.privacy.lock`); not
    getting it is a :class:`LedgerError`."""
    try:
        fd = lock.acquire(directory, timeout)
    except LockTimeout as exc:
        raise LedgerError(str(exc)) from None
    except OSError as exc:
        raise LedgerError(
            f"the privacy ledger's lock in {directory} cannot be taken ({exc.strerror}): "
            "run fedmi as the account that owns the folder"
        ) from None
    try:
        yield
    finally:
        lock.release(fd)


def load_secret(directory: Path, *, create: bool = False) -> bytes:
    """The ledger secret of ``directory`` (created only when ``create``; caller holds the lock).

    Raises
    ------
    LedgerError
        Missing (and not to be created), unreadable, readable by others, or malformed.
    """
    path = Path(directory) / SECRET_FILE
    try:
        return seal.create_secret(path) if create else seal.read_secret(path)
    except FileNotFoundError:
        raise LedgerError(
            f"{path} is missing, so the privacy ledger beside it cannot be verified: restore "
            "ledger.secret from the copy kept when it was created (never make a new one: it "
            f"could not vouch for the spend already recorded), or {RESTORE_FIX.format(d=path.parent)}"
        ) from None
    except SealError as exc:
        raise LedgerError(str(exc)) from None
    except OSError as exc:
        raise LedgerError(
            f"{path} cannot be read or created ({exc.strerror}): run fedmi as the account "
            "that owns the folder"
        ) from None


def read_document(path: Path) -> dict:
    """The ledger file as JSON, of the right format (any version).

    Raises
    ------
    LedgerError
        Unreadable, not JSON, or not a fedmi privacy ledger.
    """
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise LedgerError(
            f"the privacy ledger {path} cannot be read ({type(exc).__name__}); the site will "
            f"not train until a person acts: {RESTORE_FIX.format(d=path.parent)}"
        ) from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT or "body" not in doc:
        raise LedgerError(
            f"{path} is not a fedmi privacy ledger: {RESTORE_FIX.format(d=path.parent)}"
        )
    return doc
