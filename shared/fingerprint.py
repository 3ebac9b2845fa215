"""The fingerprint of a site's public key, as ``ssh-keygen -lf site.pub`` prints it.

``fedmi-site keygen`` prints it at the site and ``fedmi-server register`` at the
coordinator: the two people compare it over a second channel (telephone, signed letter)
before the key is registered, so a key swapped on the way is noticed.
"""

from __future__ import annotations

import base64
import binascii
import hashlib


def key_fingerprint(public_line: str) -> str:
    """``SHA256:<base64>`` of an OpenSSH public key line (``type base64 [comment]``).

    Raises
    ------
    ValueError
        When the line is not ``type base64 ...``.
    """
    parts = public_line.strip().split()
    if len(parts) < 2:
        raise ValueError("not an OpenSSH public key line (`type base64 [comment]`)")
    try:
        blob = base64.b64decode(parts[1], validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("the key's base64 part does not decode") from None
    digest = base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")
    return f"SHA256:{digest}"
