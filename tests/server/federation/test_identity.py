"""The coordinator's site registry and node-id binding (server/federation/identity.py)."""

from __future__ import annotations

import shutil
import stat
import subprocess

import pytest

from fedmi.server.federation.identity import (
    RegistryError,
    SiteIdentities,
    add_site,
    read_registry,
    remove_node,
)
from fedmi.shared.fingerprint import key_fingerprint


def test_registry_round_trip_is_private_and_refuses_a_second_holder(tmp_path):
    path = tmp_path / "sites.json"
    assert read_registry(path) == {}
    add_site(path, 11, "site-a", "SHA256:a")
    add_site(path, 12, "site-b", "SHA256:b")
    add_site(path, 11, "site-a", "SHA256:a")  # idempotent
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert {n: e["site"] for n, e in read_registry(path).items()} == {11: "site-a", 12: "site-b"}
    with pytest.raises(RegistryError, match="already registered as node 11.*unregister --node 11"):
        add_site(path, 13, "site-a", "SHA256:c")
    with pytest.raises(RegistryError, match="node 12 is already registered as 'site-b'"):
        add_site(path, 12, "site-c", "SHA256:b")
    assert remove_node(path, 11) == "site-a"
    assert remove_node(path, 11) is None
    add_site(path, 13, "site-a", "SHA256:c")  # key rotated
    path.write_text('{"nodes": {"x": 1}}')
    with pytest.raises(RegistryError, match="not a fedmi site registry"):
        read_registry(path)


def test_registered_identities():
    ids = SiteIdentities({1: "site-a", 2: "site-b"})
    assert ids.bind(1, "site-a") == "site-a"
    assert ids.bind(2, "site-a") is None
    assert ids.bind(3, "site-c") is None
    assert ids.bind(2, "site-b") == "site-b"
    assert [r["reason"] for r in ids.refusals] == [
        "node is registered as 'site-b'",
        "node not in the coordinator's registry",
    ]


def test_first_claim_binding_without_registry():
    ids = SiteIdentities()
    assert ids.bind(5, "site-a") == "site-a"
    assert ids.bind(6, "site-a") is None
    assert ids.bind(5, "site-a") == "site-a"
    assert ids.bind(5, "site-b") is None
    assert ids.bind(6, "site-b") == "site-b"
    assert len(ids.refusals) == 2


@pytest.mark.skipif(shutil.which("ssh-keygen") is None, reason="needs ssh-keygen")
def test_fingerprint_matches_ssh_keygen(tmp_path):
    from fedmi.client.deploy.keys import generate_site_key

    _, public = generate_site_key(tmp_path / "k")
    shown = subprocess.run(
        ["ssh-keygen", "-lf", str(public)], capture_output=True, text=True, check=True
    ).stdout.split()[1]
    assert key_fingerprint(public.read_text()) == shown
    with pytest.raises(ValueError):
        key_fingerprint("no-base64-here")
    with pytest.raises(ValueError):
        key_fingerprint("ecdsa-sha2-nistp384 !!!")
