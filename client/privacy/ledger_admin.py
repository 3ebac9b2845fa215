"""What only a person does to a privacy ledger: reset it, or seal an old one once.

Both are deliberate, logged acts behind ``fedmi-site ledger ... --yes``
(:mod:`fedmi.client.privacy.cli`), both hold the ledger's lock, and neither deletes
anything: the previous file is kept beside the new one.

* :func:`reset_ledger` archives the ledger and starts an empty one (the escape hatch for
  a ledger that is damaged, edited, or whose secret is lost; the spend is then forgotten,
  and the reset is recorded in the new ledger).
* :func:`upgrade_ledger` seals a version-1 ledger (an unkeyed SHA-256 anyone can
  recompute) with the site's secret after its old checksum verifies. It is not automatic:
  a person looks at the spend it shows first, because sealing vouches for that spend.
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
from pathlib import Path

from fedmi.client.privacy import seal
from fedmi.client.privacy.ledger import (
    LEDGER_FILE,
    MARKER_FILE,
    OLD_VERSION,
    VERSION,
    PrivacyLedger,
)
from fedmi.client.privacy.ledger_files import LedgerError, load_secret, locked, read_document
from fedmi.client.privacy.seal import SECRET_FILE, MalformedSecret, SealError
from fedmi.client.private_files import PRIVATE_FILE, write_private

log = logging.getLogger(__name__)


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def _archive_name(directory: Path, what: str, suffix: str = ".json") -> Path:
    """A new file name ``privacy_ledger.<time>.<what>.json`` that does not exist yet."""
    stamp = time.strftime("%Y%m%dT%H%M%S")
    for n in range(1000):
        extra = f"-{n}" if n else ""
        path = directory / f"privacy_ledger.{stamp}{extra}.{what}{suffix}"
        if not path.exists():
            return path
    raise LedgerError(f"too many archived ledgers in {directory} this second")


def _usable_secret(directory: Path) -> bytes:
    """The folder's secret; a missing or malformed one is replaced (the old one kept)."""
    path = directory / SECRET_FILE
    try:
        return seal.read_secret(path)
    except FileNotFoundError:
        pass
    except MalformedSecret:
        os.replace(path, _archive_name(directory, "reset", ".secret"))
    except (SealError, OSError) as exc:  # fix the mode or the owner; the secret may be fine
        raise LedgerError(str(exc)) from None
    return load_secret(directory, create=True)


def reset_ledger(directory: Path, *, reason: str = "reset by a person") -> Path | None:
    """Archive the current ledger (kept, never deleted) and start an empty one.

    Returns the archive path (``None`` when there was no ledger). A ledger that cannot be
    verified is archived as it is; its spend and site are then recorded as unknown, and the
    new ledger is claimed by the first site that opens it.
    """
    directory = Path(directory)
    path = directory / LEDGER_FILE
    with locked(directory):
        previous_id, previous_eps, site_id = None, None, ""
        archived: Path | None = None
        if path.exists():
            try:
                body = PrivacyLedger._load(directory, "").body
                previous_id, site_id = body.get("ledger_id"), body.get("site_id", "")
                previous_eps = body["charges"][-1]["epsilon"] if body["charges"] else 0.0
            except LedgerError:
                pass
            archived = _archive_name(directory, "reset")
            os.replace(path, archived)
            os.chmod(archived, PRIVATE_FILE)
        (directory / MARKER_FILE).unlink(missing_ok=True)
        body = PrivacyLedger._new_body(site_id)
        body["resets"].append(
            {
                "time": _now(),
                "previous_ledger_id": previous_id,
                "previous_epsilon": previous_eps,
                "archived_as": archived.name if archived else None,
                "reason": reason,
            }
        )
        ledger = PrivacyLedger(directory, body, _usable_secret(directory), in_transaction=True)
        ledger.save()
    log.warning("privacy ledger reset by request; the previous ledger was archived")
    return archived


def read_old_ledger(directory: Path) -> PrivacyLedger:
    """A version-1 ledger whose plain checksum verifies (not sealed, not writable).

    Raises
    ------
    LedgerError
        No ledger, not version 1, or its old checksum fails (edited or damaged).
    """
    path = Path(directory) / LEDGER_FILE
    if not path.exists():
        raise LedgerError(f"no privacy ledger {path} to upgrade")
    doc = read_document(path)
    if doc.get("version") == VERSION:
        raise LedgerError(f"{path} is already sealed (version {VERSION}): nothing to upgrade")
    if doc.get("version") != OLD_VERSION:
        raise LedgerError(f"{path} has unsupported version {doc.get('version')!r}")
    body = doc["body"]
    digest = hashlib.sha256(seal.canonical(body)).hexdigest() if isinstance(body, dict) else ""
    if doc.get("sha256") != digest or not all(k in body for k in ("ledger_id", "charges")):
        raise LedgerError(
            f"{path} fails its old checksum (edited or damaged): it cannot be upgraded; "
            f"restore it from backup, or reset on purpose with `fedmi-site ledger "
            f"--state-dir {directory} --reset --yes`"
        )
    body.setdefault("runs", {})
    return PrivacyLedger(Path(directory), body)


def upgrade_ledger(directory: Path) -> Path:
    """Seal the version-1 ledger in ``directory`` with the folder's secret (created if
    absent); the old file is kept as ``privacy_ledger.<time>.v1.json``. Returns that copy.

    Raises
    ------
    LedgerError
        See :func:`read_old_ledger`; or the ledger's lock or secret is unusable.
    """
    directory = Path(directory)
    with locked(directory):
        old = read_old_ledger(directory)
        archived = _archive_name(directory, "v1")
        write_private(archived, (directory / LEDGER_FILE).read_bytes(), durable=True)
        body = old.body
        body.setdefault("site_id", "")
        body.setdefault("revision", 0)
        body.setdefault("resets", [])
        body.setdefault("upgrades", []).append(
            {
                "time": _now(),
                "from_version": OLD_VERSION,
                "archived_as": archived.name,
                "epsilon": body["charges"][-1]["epsilon"] if body["charges"] else 0.0,
            }
        )
        secret = load_secret(directory, create=not (directory / SECRET_FILE).exists())
        PrivacyLedger(directory, body, secret, in_transaction=True).save()
    log.warning("privacy ledger upgraded to the sealed format by request")
    return archived
