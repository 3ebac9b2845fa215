"""Site side of the model package: pin, pull, show; tampered or foreign packages refused."""

from __future__ import annotations

import numpy as np
import pytest

from fedmi.client.cli import main
from fedmi.client.model import latest, load_verified, pin_coordinator, pull
from fedmi.server.deploy.certs import make_certificates
from fedmi.server.package import PUBLIC_FILE, load_signing_key, write_model_package
from fedmi.shared.contract import array_record
from fedmi.shared.package import PackageError

CARD = {"task": "ad-vs-cn", "tracers": ["FDG"], "modality": "PT", "training": {"sites": []}}


def _package(run_dir, **kw):
    arrays = array_record({"w": np.arange(6, dtype=np.float32).reshape(2, 3)})
    return write_model_package(run_dir, CARD, arrays, **kw)


def test_pull_show_and_default_threshold(tmp_path, capsys):
    run, state = tmp_path / "run", tmp_path / "state"
    run.mkdir()
    path = _package(run)
    assert (run / "coordinator.key").stat().st_mode & 0o777 == 0o600
    rc = main(
        [
            "model",
            "pull",
            "--package",
            str(path),
            "--state-dir",
            str(state),
            "--coordinator",
            str(run / PUBLIC_FILE),
        ]
    )
    assert rc == 0
    kept = latest(state)
    pkg = load_verified(kept, state)
    assert pkg.card["operating_point"] == {"threshold": 0.5, "source": "default"}
    with np.load(__import__("io").BytesIO(pkg.members["weights.npz"])) as w:
        np.testing.assert_array_equal(w["w"], np.arange(6, dtype=np.float32).reshape(2, 3))
    assert main(["model", "show", "--state-dir", str(state)]) == 0
    out = capsys.readouterr().out
    assert "threshold   0.5 (default)" in out and pkg.device_uid in out


def test_card_threshold_is_used(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    arrays = array_record({"w": np.zeros(2, dtype=np.float32)})
    card = dict(CARD, operating_point={"threshold": 0.42})
    path = write_model_package(run, card, arrays)
    pull(path, tmp_path / "s", run / PUBLIC_FILE)
    assert load_verified(path, tmp_path / "s").threshold == (0.42, "model card")


def test_one_changed_byte_is_refused(tmp_path, capsys):
    run, state = tmp_path / "run", tmp_path / "state"
    run.mkdir()
    path = _package(run)
    data = bytearray(path.read_bytes())
    data[-10] ^= 0xFF
    bad = tmp_path / "bad.fmp"
    bad.write_bytes(bytes(data))
    rc = main(
        [
            "model",
            "pull",
            "--package",
            str(bad),
            "--state-dir",
            str(state),
            "--coordinator",
            str(run / PUBLIC_FILE),
        ]
    )
    assert rc == 2
    assert "signature does not verify" in capsys.readouterr().err
    assert not (state / "model" / "packages").exists()


def test_package_of_another_coordinator_is_refused(tmp_path):
    run, other, state = tmp_path / "run", tmp_path / "other", tmp_path / "state"
    run.mkdir(), other.mkdir()
    _package(run)
    pin_coordinator(state, run / PUBLIC_FILE)
    with pytest.raises(PackageError, match="not by the pinned coordinator key"):
        pull(_package(other), state)
    # nor can another key replace the pinned one
    with pytest.raises(PackageError, match="not the coordinator key this site pinned"):
        pull(_package(other), state, other / PUBLIC_FILE)


def test_no_pinned_key_no_package(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    with pytest.raises(PackageError, match="no coordinator key is pinned"):
        load_verified(_package(run), tmp_path / "state")
    with pytest.raises(PackageError, match="keeps no model package"):
        latest(tmp_path / "state")


def test_deployment_ca_key_signs_and_ca_crt_verifies(tmp_path):
    certs = make_certificates(tmp_path / "certs", ["127.0.0.1"])
    run = tmp_path / "run"
    run.mkdir()
    path = _package(run, key=load_signing_key(certs.ca_key))
    kept = pull(path, tmp_path / "state", certs.ca_cert)
    assert load_verified(kept, tmp_path / "state").card["task"] == "ad-vs-cn"


def test_signing_key_errors_name_the_file(tmp_path):
    bad = tmp_path / "ca.key"
    bad.write_text("not a key")
    with pytest.raises(ValueError, match="ca.key"):
        load_signing_key(bad)


def test_release_signed_with_the_ca_key(tmp_path, capsys):
    from fedmi.server.cli import main as server_main

    certs = make_certificates(tmp_path / "certs", ["127.0.0.1"])
    run = tmp_path / "run"
    run.mkdir()
    path = _package(run)
    assert server_main(["package", "--run-dir", str(run), "--key", str(certs.ca_key)]) == 0
    release = next((run / "model_package" / "release").glob("*.fmp"))
    kept = pull(release, tmp_path / "state", certs.ca_cert)
    pkg = load_verified(kept, tmp_path / "state")
    pin_coordinator(tmp_path / "s2", run / PUBLIC_FILE)
    assert pkg.members == load_verified(path, tmp_path / "s2").members
    # a package changed after the run is not re-signed
    data = bytearray(path.read_bytes())
    data[-5] ^= 1
    path.write_bytes(bytes(data))
    assert server_main(["package", "--run-dir", str(run), "--key", str(certs.ca_key)]) == 2
    assert "signature does not verify" in capsys.readouterr().err
