"""The model package format: signed, every byte covered, other keys refused."""

from __future__ import annotations

import json

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from fedmi.shared.package import (
    CARD,
    DEFAULT_THRESHOLD,
    WEIGHTS,
    PackageError,
    build_package,
    load_public_key,
    operating_point,
    release_uid,
    verify_package,
)

CARD_BYTES = json.dumps({"task": "t", "operating_point": {"threshold": 0.37}}).encode()
MEMBERS = {CARD: CARD_BYTES, WEIGHTS: b"weights" * 50}


@pytest.fixture(params=["p256", "p384", "ed25519"])
def key(request):
    if request.param == "ed25519":
        return ed25519.Ed25519PrivateKey.generate()
    curve = ec.SECP256R1() if request.param == "p256" else ec.SECP384R1()
    return ec.generate_private_key(curve)


def test_round_trip(key):
    data, version = build_package(MEMBERS, key, version_prefix="t-1")
    pkg = verify_package(data, key.public_key())
    assert pkg.members == MEMBERS
    assert pkg.version == version and version.startswith("t-1-")
    assert pkg.threshold == (0.37, "model card")
    assert pkg.device_uid.startswith("2.25.") and len(pkg.device_uid) <= 64


def test_every_changed_byte_is_refused():
    key = ed25519.Ed25519PrivateKey.generate()
    data, _ = build_package(MEMBERS, key, version_prefix="t")
    # every position: magic, header, signature, payload
    for i in range(0, len(data), 3):
        bad = bytearray(data)
        bad[i] ^= 0x01
        with pytest.raises(PackageError):
            verify_package(bytes(bad), key.public_key())
    with pytest.raises(PackageError):
        verify_package(data + b"x", key.public_key())
    with pytest.raises(PackageError):
        verify_package(data[:-1], key.public_key())


def test_other_key_is_refused_with_key_id():
    key, other = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    data, _ = build_package(MEMBERS, other, version_prefix="t")
    with pytest.raises(PackageError, match="not by the pinned coordinator key"):
        verify_package(data, key.public_key())


def test_forged_key_id_fails_the_signature():
    # a package signed by another key that claims the pinned key's id
    key, other = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    data, _ = build_package(MEMBERS, other, version_prefix="t")
    from fedmi.shared.package import MAGIC, key_id

    header, sig, payload = data[len(MAGIC) :].split(b"\n", 2)
    h = json.loads(header)
    h["key_id"] = key_id(key.public_key())
    forged = MAGIC + json.dumps(h, sort_keys=True, separators=(",", ":")).encode() + b"\n"
    with pytest.raises(PackageError, match="signature does not verify"):
        verify_package(forged + sig + b"\n" + payload, key.public_key())


def test_not_a_package():
    with pytest.raises(PackageError, match="not a fedmi model package"):
        verify_package(b"PK\x03\x04zip", ed25519.Ed25519PrivateKey.generate().public_key())


def test_missing_member_cannot_be_built():
    with pytest.raises(ValueError, match="weights.npz"):
        build_package({CARD: CARD_BYTES}, ed25519.Ed25519PrivateKey.generate(), version_prefix="t")


def test_same_members_give_the_same_payload_hash():
    key = ed25519.Ed25519PrivateKey.generate()
    a, va = build_package(MEMBERS, key, version_prefix="t")
    b, vb = build_package(MEMBERS, key, version_prefix="t")
    assert va == vb
    other = dict(MEMBERS, **{WEIGHTS: b"new"})
    _, vc = build_package(other, key, version_prefix="t")
    assert vc != va
    assert release_uid("0" * 31 + "1") == "2.25.1"


def test_operating_point_default():
    assert operating_point({}) == (DEFAULT_THRESHOLD, "default")
    assert operating_point({"operating_point": {"threshold": 2.0}}) == (0.5, "default")
    assert operating_point({"operating_point": {"threshold": 0.2}}) == (0.2, "model card")


def test_load_public_key_accepts_pem_and_refuses_junk():
    key = ec.generate_private_key(ec.SECP384R1())
    pem = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    assert load_public_key(pem).public_numbers() == key.public_key().public_numbers()
    with pytest.raises(PackageError, match="neither a PEM public key"):
        load_public_key(b"-----BEGIN PUBLIC KEY-----\nnope\n-----END PUBLIC KEY-----\n")
