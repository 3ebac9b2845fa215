"""The ledger's seal: an HMAC-SHA256 over the ledger with the site's ledger secret.

The secret is 32 random bytes kept as 64 hex digits in ``ledger.secret`` beside the ledger
(mode 0600, owned by the account running fedmi). It is created once, together with a new
ledger (or by the operator's explicit ``fedmi-site ledger --upgrade`` / ``--reset``), and
never changes afterwards; it is never created for a ledger that already exists, because a
new secret cannot vouch for an old spend. Without the secret nobody can write a ledger the
site accepts: editing ε spent and recomputing a plain SHA-256 fails the seal.

Why beside the ledger, not with the site's key (``fedmi-site keygen``): the budget belongs
to the dataset, not to the network identity, which is rotated and revoked on its own; the
ClientApp sees only the ledger's folder (node-config), and simulated sites have no key.
What the seal does not stop: someone running as the site's own account can read the secret
(no on-disk scheme can), and a whole folder restored from an older backup is a valid older
ledger (docs/privacy.md, "Ledger integrity", says how backups keep the spend).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
import stat
from pathlib import Path

from fedmi.client.private_files import create_private

SECRET_FILE = "ledger.secret"
_KEY_ID_PREFIX = b"fedmi-ledger-key-id:"


class SealError(RuntimeError):
    """The secret is unusable (the message says why and the fix)."""


class MalformedSecret(SealError):
    """The secret file's content is not a secret (damaged)."""


def canonical(obj: object) -> bytes:
    """The bytes the seal covers: JSON with sorted keys and no spaces."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode("utf-8")


def key_id(secret: bytes) -> str:
    """A short public name of a secret (tells "another secret" from "edited")."""
    return hashlib.sha256(_KEY_ID_PREFIX + secret).hexdigest()[:16]


def mac(secret: bytes, obj: object) -> str:
    """HMAC-SHA256 of ``obj``'s canonical JSON, hex."""
    return hmac.new(secret, canonical(obj), hashlib.sha256).hexdigest()


def verify(secret: bytes, obj: object, tag: object) -> bool:
    """Whether ``tag`` is the seal of ``obj`` (constant-time comparison)."""
    return isinstance(tag, str) and hmac.compare_digest(mac(secret, obj), tag)


def read_secret(path: Path) -> bytes:
    """The secret in ``path``.

    Raises
    ------
    FileNotFoundError
        No secret there.
    SealError
        Readable by other users or owned by another account; :class:`MalformedSecret`
        when it is not 64 hex digits.
    """
    path = Path(path)
    st = path.stat()
    if stat.S_IMODE(st.st_mode) & 0o077:
        raise SealError(f"{path} is readable by other users: run `chmod 600 {path}`")
    if hasattr(os, "geteuid") and st.st_uid != os.geteuid():
        raise SealError(
            f"{path} belongs to another account (uid {st.st_uid}): run fedmi as the account "
            "that owns the site's state folder"
        )
    text = path.read_text(encoding="ascii", errors="replace").strip()
    try:
        raw = bytes.fromhex(text)
    except ValueError:
        raw = b""
    if len(raw) != 32:
        raise MalformedSecret(
            f"{path} is not a fedmi ledger secret (64 hex digits): restore it from the copy "
            "kept when it was created"
        )
    return raw


def create_secret(path: Path) -> bytes:
    """Create a new secret at ``path`` (0600) unless one exists; returns the one kept there."""
    create_private(Path(path), (secrets.token_bytes(32).hex() + "\n").encode("ascii"))
    return read_secret(path)
