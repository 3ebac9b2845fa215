"""The model package: the federation's model as one signed, versioned file.

The coordinator writes it at the end of a run (:mod:`fedmi.server.package`); every site
verifies it against the coordinator key it pinned before using it
(:mod:`fedmi.client.model`). This module holds the format and its verification; it does
no file I/O beyond the bytes it is given.

Format (version 1), one file ``*.fmp``::

    b"FEDMI-MODEL-PACKAGE\\n"               magic line
    <header JSON, UTF-8, one line> b"\\n"    format, version, algorithm, key id, payload
                                             length and SHA-256, member list with hashes
    <signature, hex, one line> b"\\n"        over  magic + header line  + payload
    <payload>                               a ZIP archive: model_card.json, weights.npz, ...

The signature covers every byte except its own line, and the header pins the payload's
length and hash, so one changed byte anywhere (or bytes appended) makes verification fail.
Keys: ECDSA (any curve, SHA-256; the deployment CA key of :mod:`fedmi.server.deploy.certs`
is P-384) or Ed25519.
"""

from __future__ import annotations

import hashlib
import io
import json
import zipfile
from dataclasses import dataclass
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

MAGIC = b"FEDMI-MODEL-PACKAGE\n"
FORMAT_VERSION = 1
SUFFIX = ".fmp"

#: Members every package holds.
CARD = "model_card.json"
WEIGHTS = "weights.npz"
REQUIRED_MEMBERS = (CARD, WEIGHTS)
#: Optional member: the OOD reference (feature description + flagging distance).
OOD = "ood_reference.json"
#: Optional member: the federated normative model (:class:`fedmi.shared.normative.NormativeModel`
#: JSON), for anomaly maps at prediction.
NORMATIVE = "normative_model.json"

#: The threshold used when the model card names no operating point.
DEFAULT_THRESHOLD = 0.5

PrivateKey = ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey
PublicKey = ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey


class PackageError(ValueError):
    """A package that is not a valid, verified model package (the message says why)."""


@dataclass(frozen=True)
class ModelPackage:
    """A verified package.

    Attributes
    ----------
    header
        The signed header (``version``, ``payload_sha256``, ``key_id``, ``members`` ...).
    members
        Member name → bytes (each checked against the header's hash).
    """

    header: dict[str, Any]
    members: dict[str, bytes]

    @property
    def card(self) -> dict[str, Any]:
        """The model card."""
        return json.loads(self.members[CARD])

    @property
    def version(self) -> str:
        """The release version (task, creation time and content hash)."""
        return str(self.header["version"])

    @property
    def content_sha256(self) -> str:
        """SHA-256 of the payload: identifies the release."""
        return str(self.header["payload_sha256"])

    @property
    def device_uid(self) -> str:
        """A DICOM UID (``2.25.<int>``) of this release, new with every release."""
        return release_uid(self.content_sha256)

    @property
    def threshold(self) -> tuple[float, str]:
        """The operating point and where it came from (``model card`` or ``default``)."""
        return operating_point(self.card)


def release_uid(content_sha256: str) -> str:
    """A DICOM UID derived from a release's content hash (the ``2.25`` UUID arc, PS3.5 B.2)."""
    return "2.25." + str(int(content_sha256[:32], 16))


def operating_point(card: dict[str, Any]) -> tuple[float, str]:
    """The card's ``operating_point.threshold``; :data:`DEFAULT_THRESHOLD` when absent."""
    op = card.get("operating_point")
    if isinstance(op, dict) and isinstance(op.get("threshold"), (int, float)):
        t = float(op["threshold"])
        if 0.0 <= t <= 1.0:
            # a packaged card records where its threshold came from
            return t, "default" if op.get("source") == "default" else "model card"
    return DEFAULT_THRESHOLD, "default"


def key_id(public_key: PublicKey) -> str:
    """SHA-256 of the key's DER SubjectPublicKeyInfo (hex): names a key in messages."""
    der = public_key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return hashlib.sha256(der).hexdigest()


def load_public_key(pem: bytes, what: str = "coordinator key") -> PublicKey:
    """A PEM public key or an X.509 certificate (e.g. the federation's ``ca.crt``).

    Raises
    ------
    PackageError
        When the bytes are neither, or the key is not ECDSA or Ed25519.
    """
    try:
        if b"BEGIN CERTIFICATE" in pem:
            key = x509.load_pem_x509_certificate(pem).public_key()
        else:
            key = serialization.load_pem_public_key(pem)
    except ValueError as exc:
        raise PackageError(
            f"the {what} is neither a PEM public key nor a PEM certificate ({exc}): use the "
            "coordinator's ca.crt or coordinator.pub"
        ) from None
    if not isinstance(key, (ec.EllipticCurvePublicKey, ed25519.Ed25519PublicKey)):
        raise PackageError(f"the {what} is a {type(key).__name__}; use an ECDSA or Ed25519 key")
    return key


def _algorithm(key: PrivateKey | PublicKey) -> str:
    return (
        "ed25519"
        if isinstance(key, (ed25519.Ed25519PrivateKey, ed25519.Ed25519PublicKey))
        else "ecdsa-sha256"
    )


def _sign(key: PrivateKey, data: bytes) -> bytes:
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return key.sign(data)
    return key.sign(data, ec.ECDSA(hashes.SHA256()))


def _verify(key: PublicKey, signature: bytes, data: bytes) -> None:
    if isinstance(key, ed25519.Ed25519PublicKey):
        key.verify(signature, data)
    else:
        key.verify(signature, data, ec.ECDSA(hashes.SHA256()))


def _zip(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name in sorted(members):
            # fixed timestamps: the same members give the same bytes
            info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(info, members[name])
    return buf.getvalue()


def build_package(
    members: dict[str, bytes], key: PrivateKey, *, version_prefix: str
) -> tuple[bytes, str]:
    """Sign ``members`` (which must include :data:`REQUIRED_MEMBERS`) into package bytes.

    Parameters
    ----------
    members
        Member name → bytes.
    key
        The coordinator's private key (ECDSA or Ed25519).
    version_prefix
        Human part of the release version (e.g. task and date); the content hash is appended.

    Returns
    -------
    (bytes, str)
        The package file's bytes and the release version.
    """
    missing = [m for m in REQUIRED_MEMBERS if m not in members]
    if missing:
        raise ValueError(f"a model package needs the members {missing}")
    payload = _zip(members)
    digest = hashlib.sha256(payload).hexdigest()
    version = f"{version_prefix}-{digest[:12]}"
    header = {
        "format": FORMAT_VERSION,
        "version": version,
        "algorithm": _algorithm(key),
        "key_id": key_id(key.public_key()),
        "payload_length": len(payload),
        "payload_sha256": digest,
        "members": {n: hashlib.sha256(b).hexdigest() for n, b in sorted(members.items())},
    }
    header_line = json.dumps(header, sort_keys=True, separators=(",", ":")).encode() + b"\n"
    signature = _sign(key, MAGIC + header_line + payload)
    return MAGIC + header_line + signature.hex().encode() + b"\n" + payload, version


def read_header(data: bytes) -> tuple[dict[str, Any], bytes, bytes, bytes]:
    """Split package bytes into (header, header line, signature, payload), unverified."""
    if not data.startswith(MAGIC):
        raise PackageError("not a fedmi model package (its first line is not FEDMI-MODEL-PACKAGE)")
    rest = data[len(MAGIC) :]
    try:
        header_line, sig_line, payload = rest.split(b"\n", 2)
        header = json.loads(header_line)
        signature = bytes.fromhex(sig_line.decode("ascii"))
    except (ValueError, UnicodeDecodeError):
        raise PackageError(
            "the package is damaged: its header or signature line cannot be read"
        ) from None
    if not isinstance(header, dict) or header.get("format") != FORMAT_VERSION:
        raise PackageError(
            f"package format {header.get('format') if isinstance(header, dict) else '?'} is not "
            f"supported (this fedmi reads format {FORMAT_VERSION}): update fedmi"
        )
    return header, header_line + b"\n", signature, payload


def verify_package(data: bytes, public_key: PublicKey) -> ModelPackage:
    """Verify package bytes against the pinned coordinator key; the package's contents.

    Raises
    ------
    PackageError
        Not a package, damaged, signed by another key, signature or any hash wrong, or a
        required member missing. Nothing of a refused package is returned.
    """
    header, header_line, signature, payload = read_header(data)
    pinned = key_id(public_key)
    if header.get("key_id") != pinned:
        raise PackageError(
            f"the package is signed by key {str(header.get('key_id'))[:16]}…, not by the pinned "
            f"coordinator key {pinned[:16]}…: refused (ask the coordinator for a package it "
            "signed, or check which coordinator key this site pinned)"
        )
    try:
        _verify(public_key, signature, MAGIC + header_line + payload)
    except InvalidSignature:
        raise PackageError(
            "the package's signature does not verify against the pinned coordinator key: the "
            "file was changed after signing (or damaged in transit); refused. Fetch it again."
        ) from None
    # the signature covers the header, so these hold unless the signer itself erred
    if len(payload) != header.get("payload_length") or (
        hashlib.sha256(payload).hexdigest() != header.get("payload_sha256")
    ):
        raise PackageError("the package's payload does not match its signed length and hash")
    try:
        with zipfile.ZipFile(io.BytesIO(payload)) as zf:
            members = {n: zf.read(n) for n in zf.namelist()}
    except (zipfile.BadZipFile, OSError) as exc:
        raise PackageError(f"the package's payload is not a readable archive ({exc})") from None
    expected = header.get("members", {})
    if set(members) != set(expected) or any(
        hashlib.sha256(b).hexdigest() != expected[n] for n, b in members.items()
    ):
        raise PackageError("the package's members do not match their signed hashes")
    missing = [m for m in REQUIRED_MEMBERS if m not in members]
    if missing:
        raise PackageError(f"the package lacks {missing}")
    return ModelPackage(header=header, members=members)
