"""The coordinator's TLS material: a private CA and the SuperLink's server certificate.

``fedmi-server certs`` writes into one folder:

* ``ca.crt`` / ``ca.key``: a self-signed certificate authority (ECDSA P-384). Give ``ca.crt``
  (never ``ca.key``) to every hospital: their SuperNodes verify the coordinator with it.
* ``server.pem`` / ``server.key``: the SuperLink's certificate, signed by the CA, with a
  subjectAltName entry for every address the hospitals use to reach the coordinator (an
  IP address or a DNS name); TLS refuses a connection to any other name.

Private keys are written with mode 0600. :func:`check_server_certs` re-reads the folder and
returns one actionable sentence per problem, so that ``fedmi-server start`` can refuse bad
material before Flower starts.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

CA_CERT = "ca.crt"
CA_KEY = "ca.key"
SERVER_CERT = "server.pem"
SERVER_KEY = "server.key"
#: validity of the generated certificates (days)
DEFAULT_DAYS = 825


class CertificateError(ValueError):
    """Unusable certificate material; the message names the file and the fix."""


@dataclass(frozen=True)
class CertPaths:
    """Where the TLS files of one coordinator live."""

    folder: Path

    @property
    def ca_cert(self) -> Path:
        return self.folder / CA_CERT

    @property
    def ca_key(self) -> Path:
        return self.folder / CA_KEY

    @property
    def server_cert(self) -> Path:
        return self.folder / SERVER_CERT

    @property
    def server_key(self) -> Path:
        return self.folder / SERVER_KEY


def subject_alt_names(addresses: list[str]) -> list[x509.GeneralName]:
    """subjectAltName entries: an ``IPAddress`` for IP literals, a ``DNSName`` otherwise."""
    names: list[x509.GeneralName] = []
    for raw in addresses:
        addr = raw.strip().strip("[]")
        if not addr:
            continue
        if ":" in addr and addr.count(":") == 1:  # host:port given by mistake
            raise CertificateError(
                f"address {raw!r}: give the host only (no port), e.g. --address {addr.split(':')[0]}"
            )
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(addr)))
        except ValueError:
            if not all(part and len(part) < 64 for part in addr.split(".")):
                raise CertificateError(
                    f"address {raw!r} is neither an IP address nor a DNS name"
                ) from None
            names.append(x509.DNSName(addr.lower()))
    if not names:
        raise CertificateError(
            "no address given: name every address the sites connect to, e.g. --address "
            "coordinator.example.org --address 127.0.0.1"
        )
    return names


def _write_private(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    data = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.chmod(path, 0o600)


def make_certificates(
    out_dir: Path,
    addresses: list[str],
    *,
    days: int = DEFAULT_DAYS,
    common_name: str = "fedmi coordinator",
    overwrite: bool = False,
) -> CertPaths:
    """Create a CA and a server certificate for ``addresses`` in ``out_dir``.

    Parameters
    ----------
    out_dir
        Folder to write ``ca.crt``, ``ca.key``, ``server.pem`` and ``server.key`` to.
    addresses
        Host names or IP addresses the sites use for the SuperLink (subjectAltName);
        ``127.0.0.1`` is added when absent.
    days
        Validity of both certificates.
    common_name
        Subject common name of the server certificate.
    overwrite
        Replace existing files (a new CA invalidates the ``ca.crt`` the sites hold).

    Raises
    ------
    CertificateError
        On an unusable address, or when files exist and ``overwrite`` is false.
    """
    paths = CertPaths(Path(out_dir))
    # the coordinator's own loopback is always named: `fedmi-server` (flwr) reaches the
    # SuperLink there, and the public front forwards to it (fedmi.server.deploy.front)
    wanted = [*addresses, *([] if "127.0.0.1" in addresses else ["127.0.0.1"])]
    sans = subject_alt_names(wanted)
    _refuse_existing(paths, overwrite)
    paths.folder.mkdir(parents=True, exist_ok=True)
    now = dt.datetime.now(dt.UTC)
    validity = (now - dt.timedelta(minutes=5), now + dt.timedelta(days=days))

    ca_key = ec.generate_private_key(ec.SECP384R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "fedmi federation CA")])
    ca_cert = _ca_certificate(ca_key, ca_name, validity)
    server_key = ec.generate_private_key(ec.SECP384R1())
    server_cert = _server_certificate(server_key, common_name, sans, ca_key, ca_name, validity)

    paths.ca_cert.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    paths.server_cert.write_bytes(server_cert.public_bytes(serialization.Encoding.PEM))
    _write_private(paths.ca_key, ca_key)
    _write_private(paths.server_key, server_key)
    return paths


def _refuse_existing(paths: CertPaths, overwrite: bool) -> None:
    existing = [
        p for p in (paths.ca_cert, paths.ca_key, paths.server_cert, paths.server_key) if p.exists()
    ]
    if existing and not overwrite:
        raise CertificateError(
            f"{existing[0]} already exists: choose an empty --out folder or pass --overwrite "
            "(the sites then need the new ca.crt)"
        )


def _ca_certificate(
    ca_key: ec.EllipticCurvePrivateKey,
    ca_name: x509.Name,
    validity: tuple[dt.datetime, dt.datetime],
) -> x509.Certificate:
    """The self-signed CA: may sign certificates (no intermediate CA below it)."""
    not_before, not_after = validity
    return (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(
            x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA384())
    )


def _server_certificate(
    server_key: ec.EllipticCurvePrivateKey,
    common_name: str,
    sans: list[x509.GeneralName],
    ca_key: ec.EllipticCurvePrivateKey,
    ca_name: x509.Name,
    validity: tuple[dt.datetime, dt.datetime],
) -> x509.Certificate:
    """The SuperLink's TLS server certificate for ``sans``, signed by the CA."""
    not_before, not_after = validity
    return (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
        .issuer_name(ca_name)
        .public_key(server_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
        .sign(ca_key, hashes.SHA384())
    )


def load_certificate(path: Path, what: str) -> x509.Certificate:
    """Read one PEM certificate or raise :class:`CertificateError` naming the file."""
    path = Path(path)
    if not path.is_file():
        raise CertificateError(
            f"{path}: {what} not found: run `fedmi-server certs` or fix the path"
        )
    try:
        return x509.load_pem_x509_certificate(path.read_bytes())
    except ValueError:
        raise CertificateError(
            f"{path}: not a PEM certificate ({what}): use the file `fedmi-server certs` wrote"
        ) from None


def certificate_names(cert: x509.Certificate) -> list[str]:
    """The IP addresses and DNS names of a certificate's subjectAltName."""
    try:
        ext = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    return [str(v) for v in ext.get_values_for_type(x509.IPAddress)] + list(
        ext.get_values_for_type(x509.DNSName)
    )


def issued_by(cert: x509.Certificate, ca: x509.Certificate) -> bool:
    """Whether ``cert`` carries a valid signature of ``ca``'s key."""
    try:
        cert.verify_directly_issued_by(ca)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


def check_validity(cert: x509.Certificate, path: Path) -> None:
    """Raise :class:`CertificateError` when ``cert`` is expired or not yet valid."""
    now = dt.datetime.now(dt.UTC)
    if now > cert.not_valid_after_utc:
        raise CertificateError(
            f"{path}: certificate expired on {cert.not_valid_after_utc:%Y-%m-%d}: "
            "make new ones with `fedmi-server certs`"
        )
    if now < cert.not_valid_before_utc:
        raise CertificateError(
            f"{path}: certificate not valid before {cert.not_valid_before_utc:%Y-%m-%d %H:%M} "
            "UTC: check this machine's clock"
        )


def check_server_certs(folder: Path) -> CertPaths:
    """Validate a ``fedmi-server certs`` folder before the SuperLink starts.

    Checks that every file exists and parses, the server key matches the server certificate,
    the CA signed the server certificate, neither is expired, the certificate names at least
    one address, and the private key is not readable by others.

    Raises
    ------
    CertificateError
        With one sentence naming the file and the fix.
    """
    paths = CertPaths(Path(folder).resolve())
    ca = load_certificate(paths.ca_cert, "CA certificate")
    server = load_certificate(paths.server_cert, "server certificate")
    if not paths.server_key.is_file():
        raise CertificateError(
            f"{paths.server_key}: server key not found: run `fedmi-server certs --out {folder}`"
        )
    try:
        key = serialization.load_pem_private_key(paths.server_key.read_bytes(), password=None)
    except (ValueError, TypeError):
        raise CertificateError(
            f"{paths.server_key}: not an unencrypted PEM private key: use the server.key "
            "`fedmi-server certs` wrote"
        ) from None
    if key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    ) != server.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    ):
        raise CertificateError(
            f"{paths.server_key}: does not belong to {paths.server_cert}: keep the pair "
            "`fedmi-server certs` wrote together"
        )
    if not issued_by(server, ca):
        raise CertificateError(
            f"{paths.server_cert}: not signed by {paths.ca_cert}: regenerate both with "
            "`fedmi-server certs` and give the sites the new ca.crt"
        )
    check_validity(ca, paths.ca_cert)
    check_validity(server, paths.server_cert)
    if not certificate_names(server):
        raise CertificateError(
            f"{paths.server_cert}: no subjectAltName: regenerate with `fedmi-server certs "
            "--address HOST`"
        )
    if paths.server_key.stat().st_mode & 0o077:
        raise CertificateError(
            f"{paths.server_key}: readable by other users: run `chmod 600 {paths.server_key}`"
        )
    return paths


def check_public_key(path: Path) -> None:
    """A site's ``site.pub`` (OpenSSH, ECDSA on a NIST curve), or :class:`CertificateError`."""
    path = Path(path)
    if not path.is_file():
        raise CertificateError(f"{path}: not found: ask the site for the site.pub it generated")
    try:
        key = serialization.load_ssh_public_key(path.read_bytes())
    except (ValueError, UnsupportedAlgorithm):
        raise CertificateError(
            f"{path}: not an OpenSSH public key: ask the site for the site.pub written by "
            "`fedmi-site keygen` (never the private key)"
        ) from None
    if not isinstance(key, ec.EllipticCurvePublicKey):
        raise CertificateError(
            f"{path}: not an ECDSA key; Flower needs ECDSA P-384: the site runs `fedmi-site keygen`"
        )
