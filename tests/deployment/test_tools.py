"""Fast checks of the deployment tools: certificates, site keys, TLS probe, one-line errors."""

from __future__ import annotations

import re
import socket
import ssl
import stat
import threading
import tomllib

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from fedmi.client import cli as site_cli
from fedmi.client.deploy.join import probe_tls
from fedmi.client.deploy.keys import (
    KeyFileError,
    check_ca_certificate,
    check_private_key,
    generate_site_key,
)
from fedmi.server import cli as server_cli
from fedmi.server.deploy.certs import (
    CertificateError,
    certificate_names,
    check_public_key,
    check_server_certs,
    issued_by,
    make_certificates,
)
from fedmi.server.deploy.flower import write_connection


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    root = tmp_path_factory.mktemp("pki")
    good = make_certificates(root / "good", ["127.0.0.1", "Coordinator.Example.org"])
    other = make_certificates(root / "other", ["127.0.0.1"])
    return good, other


def test_certificates_name_every_address_and_keep_keys_private(pki):
    good, other = pki
    server = x509.load_pem_x509_certificate(good.server_cert.read_bytes())
    ca = x509.load_pem_x509_certificate(good.ca_cert.read_bytes())
    assert sorted(certificate_names(server)) == ["127.0.0.1", "coordinator.example.org"]
    assert issued_by(server, ca)
    assert not issued_by(server, x509.load_pem_x509_certificate(other.ca_cert.read_bytes()))
    for key in (good.ca_key, good.server_key):
        assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert check_server_certs(good.folder).server_cert == good.server_cert.resolve()


def test_bad_certificate_folders_name_the_file_and_the_fix(pki, tmp_path):
    good, other = pki
    with pytest.raises(CertificateError, match="already exists"):
        make_certificates(good.folder, ["127.0.0.1"])
    with pytest.raises(CertificateError, match="host only"):
        make_certificates(tmp_path / "x", ["127.0.0.1:8000"])
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    for name in ("ca.crt", "server.pem", "server.key"):
        (mixed / name).write_bytes((good.folder / name).read_bytes())
    (mixed / "server.key").chmod(0o600)
    (mixed / "ca.crt").write_bytes(other.ca_cert.read_bytes())
    with pytest.raises(CertificateError, match=r"server\.pem: not signed by .*ca\.crt"):
        check_server_certs(mixed)
    (mixed / "ca.crt").write_bytes(good.ca_cert.read_bytes())
    (mixed / "server.key").write_bytes(other.server_key.read_bytes())
    with pytest.raises(CertificateError, match=r"server\.key: does not belong"):
        check_server_certs(mixed)
    (mixed / "server.pem").write_text("not a certificate")
    with pytest.raises(CertificateError, match=r"server\.pem: not a PEM certificate"):
        check_server_certs(mixed)


def test_site_keys_are_openssh_p384_and_checked(tmp_path, pki):
    private, public = generate_site_key(tmp_path / "k")
    assert stat.S_IMODE(private.stat().st_mode) == 0o600
    assert public.read_text().startswith("ecdsa-sha2-nistp384 ")
    key = serialization.load_ssh_private_key(private.read_bytes(), None)
    assert isinstance(key, ec.EllipticCurvePrivateKey) and key.curve.name == "secp384r1"
    check_private_key(private)
    check_public_key(public)
    with pytest.raises(KeyFileError, match="already exists"):
        generate_site_key(tmp_path / "k")
    with pytest.raises(KeyFileError, match=r"site\.pub: not an unencrypted OpenSSH private key"):
        check_private_key(public)
    with pytest.raises(CertificateError, match="never the private key"):
        check_public_key(private)
    ed = tmp_path / "ed"
    ed.write_bytes(
        ed25519.Ed25519PrivateKey.generate().private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.OpenSSH,
            serialization.NoEncryption(),
        )
    )
    ed.chmod(0o600)
    with pytest.raises(KeyFileError, match="ECDSA"):
        check_private_key(ed)
    private.chmod(0o644)
    with pytest.raises(KeyFileError, match="chmod 600"):
        check_private_key(private)
    good, _ = pki
    check_ca_certificate(good.ca_cert)
    with pytest.raises(KeyFileError, match="not a CA certificate"):
        check_ca_certificate(good.server_cert)


def _tls_server(pki_paths) -> tuple[int, threading.Event]:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(pki_paths.server_cert, pki_paths.server_key)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(4)
    stop = threading.Event()

    def serve() -> None:
        sock.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = sock.accept()
            except OSError:
                continue
            try:
                with ctx.wrap_socket(conn, server_side=True):
                    pass
            except (ssl.SSLError, OSError):
                pass
        sock.close()

    threading.Thread(target=serve, daemon=True).start()
    return sock.getsockname()[1], stop


def test_tls_probe_tells_a_wrong_ca_from_a_wrong_name(pki):
    good, other = pki
    port, stop = _tls_server(good)
    try:
        assert probe_tls("127.0.0.1", port, good.ca_cert) is None
        assert "not signed by" in (probe_tls("127.0.0.1", port, other.ca_cert) or "")
        assert "does not name localhost" in (probe_tls("localhost", port, good.ca_cert) or "")
    finally:
        stop.set()
    # nothing listening: the SuperNode will retry, so no error yet
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        free = s.getsockname()[1]
    assert probe_tls("127.0.0.1", free, good.ca_cert) is None


def test_join_refuses_bad_inputs_in_one_line(tmp_path, pki, capsys):
    good, _ = pki
    private, _ = generate_site_key(tmp_path / "k")
    site = tmp_path / "site"
    site.mkdir()
    (site / "site.toml").write_text('[site]\nsite-id = "h1"\nrole = "train"\n')
    base = ["join", "--superlink", "127.0.0.1:1", "--site-dir", str(site)]
    base += ["--state-dir", str(tmp_path / "state")]
    cases = [
        (
            ["--ca", str(tmp_path / "none.crt"), "--key", str(private)],
            "none.crt: CA certificate not found",
        ),
        (["--ca", str(good.server_cert), "--key", str(private)], "not a CA certificate"),
        (["--ca", str(good.ca_cert), "--key", str(private) + ".pub"], "not an unencrypted OpenSSH"),
    ]
    for extra, needle in cases:
        assert site_cli.main([*base, *extra]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and needle in err[0], err
    bad = ["join", "--superlink", "coordinator", "--ca", str(good.ca_cert), "--key", str(private)]
    assert site_cli.main([*bad, "--site-dir", str(site), "--state-dir", str(tmp_path)]) == 2
    assert "HOST:PORT" in capsys.readouterr().err


def test_coordinator_commands_fail_in_one_line(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("FLWR_HOME", str(tmp_path / "home"))
    assert server_cli.main(["certs", "--out", str(tmp_path / "c"), "--address", "10.0.0.7"]) == 0
    assert "10.0.0.7" in capsys.readouterr().out
    code = server_cli.main(["start", "--certs", str(tmp_path / "nope"), "--state", str(tmp_path)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "ca.crt: CA certificate not found" in err[0]
    key = ["--key", str(tmp_path / "c" / "ca.crt"), "--site", "site-a"]
    assert server_cli.main(["register", *key]) == 2
    assert "not an OpenSSH public key" in capsys.readouterr().err
    # a coordinator that was started and stopped: status says so in one line
    (tmp_path / "home").mkdir(exist_ok=True)
    (tmp_path / "home" / "fedmi-coordinator.json").write_text(f'{{"state": "{tmp_path}"}}')
    assert server_cli.main(["status"]) == 1
    out = capsys.readouterr().out.strip().splitlines()
    assert out == [f"no SuperLink is running (state folder {tmp_path}): `fedmi-server start`"]


def test_flwr_connection_entry_keeps_other_connections(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    (home / "config.toml").write_text(
        '[superlink]\ndefault = "local"\n\n[superlink.local]\naddress = ":local:"\n'
    )
    write_connection("127.0.0.1:9000", tmp_path / "ca.crt", home=home)
    doc = tomllib.loads((home / "config.toml").read_text())
    assert doc["superlink"]["default"] == "local"
    assert doc["superlink"]["local"] == {"address": ":local:"}
    assert doc["superlink"]["fedmi"] == {
        "address": "127.0.0.1:9000",
        "root-certificates": str((tmp_path / "ca.crt").resolve()),
    }


def test_the_flower_app_is_the_checkout_holding_pyproject():
    from fedmi.server.deploy.flower import app_dir

    root = app_dir()
    assert (root / "pyproject.toml").is_file()
    assert 'serverapp = "fedmi.server.app:app"' in (root / "pyproject.toml").read_text()


def test_server_run_checks_the_run_config_before_submitting(tmp_path, capsys, monkeypatch):
    from fedmi.server.deploy import cli as deploy_cli

    def submitted(*_a, **_k):
        raise AssertionError("flwr run must not start")

    monkeypatch.setattr(deploy_cli.subprocess, "call", submitted)
    out = tmp_path / "run"
    cases = [
        (
            'modle="cnn" num-server-rounds=3',
            r"fedmi-server: --run-config: `modle` is not a run config setting; "
            r"did you mean `model`\?",
        ),
        (
            'num-server-rounds="3"',
            r"fedmi-server: --run-config: `num-server-rounds` must be a whole number "
            r"\(at least 1\), not '3'",
        ),
        ("task=fdg-ad", r"fedmi-server: --run-config 'task=fdg-ad': .*key3=\"string\".*"),
    ]
    for text, message in cases:
        assert server_cli.main(["run", "--out", str(out), "--run-config", text]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and re.fullmatch(message, err[0]), err
    assert not out.exists()


def test_join_checks_site_toml_and_node_config_before_starting(tmp_path, pki, capsys):
    good, _ = pki
    private, _ = generate_site_key(tmp_path / "k")
    site = tmp_path / "site"
    site.mkdir()
    toml = site / "site.toml"
    base = ["join", "--superlink", "127.0.0.1:1", "--ca", str(good.ca_cert), "--key", str(private)]
    base += ["--site-dir", str(site), "--state-dir", str(tmp_path / "state")]
    toml.write_text('role = "holdout"\n')
    assert site_cli.main(base) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"fedmi-site join: {toml}: `role` belongs in [site], not at the top level"], err
    toml.write_text('[site]\nsite-id = "h1"\n')
    cases = [
        (
            "epsilon-budget=3.0",
            r"`epsilon-budget` is not a node-config setting; did you mean `epsilon`\?",
        ),
        ("delta=2.0", r"`delta` must be a number \(greater than 0 and less than 1\), not 2\.0"),
        ('data-dir="/elsewhere"', r"`data-dir` is set by join from --site-dir"),
    ]
    for extra, message in cases:
        assert site_cli.main([*base, "--node-config", extra]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and re.search(message, err[0]), err
    assert not (tmp_path / "state").exists()  # nothing started, nothing written


def test_join_refuses_a_site_that_has_not_ingested(tmp_path, pki, capsys):
    """Ingest is an explicit step: join names the command instead of a surprise ingest."""
    good, _ = pki
    private, _ = generate_site_key(tmp_path / "k")
    site = tmp_path / "site"
    site.mkdir()
    (site / "site.toml").write_text('[site]\nsite-id = "h1"\n')
    args = ["join", "--superlink", "127.0.0.1:1", "--ca", str(good.ca_cert), "--key", str(private)]
    args += ["--site-dir", str(site), "--state-dir", str(tmp_path / "state")]
    assert site_cli.main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "has not ingested" in err[0] and "fedmi-site check" in err[0], err
