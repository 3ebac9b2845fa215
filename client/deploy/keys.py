"""The site's authentication key pair and the checks of the files a site is handed.

``fedmi-site keygen --out DIR`` writes ``DIR/site`` (private key, mode 0600, OpenSSH format)
and ``DIR/site.pub`` (``ecdsa-sha2-nistp384 ...``; also 0600, in ``DIR`` created 0700), the
ECDSA P-384 pair Flower's node authentication expects (the same files ``ssh-keygen -t ecdsa
-b 384`` writes). Only the ``.pub`` file goes to the coordinator, who registers it; the
private key never leaves the site. The SuperLink then accepts this SuperNode and no other.

The ``check_*`` functions validate a file *before* Flower starts and raise
:class:`KeyFileError` with one sentence naming the file and the fix.
"""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from fedmi.client.private_files import private_dir, write_private

PRIVATE_NAME = "site"
PUBLIC_NAME = "site.pub"


class KeyFileError(ValueError):
    """A key or certificate file is unusable; the message names the file and the fix."""


def generate_site_key(
    out_dir: Path, *, name: str = PRIVATE_NAME, comment: str = "fedmi-site", overwrite: bool = False
) -> tuple[Path, Path]:
    """Write a new ECDSA P-384 key pair in OpenSSH format; returns (private, public) paths.

    Raises
    ------
    KeyFileError
        When the key exists and ``overwrite`` is false (a new key must be registered again).
    """
    out_dir = Path(out_dir)
    private, public = out_dir / name, out_dir / f"{name}.pub"
    if (private.exists() or public.exists()) and not overwrite:
        raise KeyFileError(
            f"{private} already exists: keep using it, or pass --overwrite and send the new "
            f"{public.name} to the coordinator to register again"
        )
    private_dir(out_dir)  # 0700 when keygen creates it
    key = ec.generate_private_key(ec.SECP384R1())
    data = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.OpenSSH,
        serialization.NoEncryption(),
    )
    fd = os.open(private, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.chmod(private, 0o600)
    pub = key.public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
    )
    write_private(public, pub + f" {comment}\n".encode())  # 0600 like every site file
    return private, public


def check_private_key(path: Path) -> ec.EllipticCurvePrivateKey:
    """The site's OpenSSH EC private key, or :class:`KeyFileError`."""
    path = Path(path)
    if not path.is_file():
        raise KeyFileError(
            f"{path}: private key not found: run `fedmi-site keygen --out {path.parent}` and "
            "give the coordinator the .pub file"
        )
    try:
        key = serialization.load_ssh_private_key(path.read_bytes(), password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        raise KeyFileError(
            f"{path}: not an unencrypted OpenSSH private key: give the key file "
            "`fedmi-site keygen` wrote (not the .pub file, not a TLS key)"
        ) from None
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise KeyFileError(
            f"{path}: a {type(key).__name__.replace('_', '')} key; Flower needs ECDSA (P-384): "
            "run `fedmi-site keygen`"
        )
    if path.stat().st_mode & 0o077:
        raise KeyFileError(f"{path}: readable by other users: run `chmod 600 {path}`")
    return key


def check_ca_certificate(path: Path) -> x509.Certificate:
    """The federation's CA certificate (``ca.crt``), or :class:`KeyFileError`."""
    path = Path(path)
    if not path.is_file():
        raise KeyFileError(f"{path}: CA certificate not found: ask the coordinator for ca.crt")
    try:
        cert = x509.load_pem_x509_certificate(path.read_bytes())
    except ValueError:
        raise KeyFileError(
            f"{path}: not a PEM certificate: ask the coordinator for ca.crt (written by "
            "`fedmi-server certs`)"
        ) from None
    try:
        is_ca = cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    except x509.ExtensionNotFound:
        is_ca = False
    if not is_ca:
        raise KeyFileError(
            f"{path}: not a CA certificate (perhaps the server certificate): use ca.crt"
        )
    try:
        cert.verify_directly_issued_by(cert)
    except (ValueError, TypeError, InvalidSignature):
        pass  # an intermediate CA: fine, TLS will check the chain
    now = dt.datetime.now(dt.UTC)
    if now > cert.not_valid_after_utc:
        raise KeyFileError(
            f"{path}: CA certificate expired on {cert.not_valid_after_utc:%Y-%m-%d}: ask the "
            "coordinator for the current ca.crt"
        )
    return cert
