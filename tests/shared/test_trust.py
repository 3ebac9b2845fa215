"""The site's app approvals (client/deploy/trust.py)."""

from __future__ import annotations

import hashlib
import stat

import pytest

from fedmi.shared.trust import (
    TrustError,
    approve,
    approved_hashes,
    fab_hash,
    installed_app_dir,
    installed_fab_hash,
    is_approved,
)


def test_installed_hash_is_the_hash_flwr_run_sends():
    from flwr.cli.build import build_fab_from_disk

    root = installed_app_dir()
    assert (root / "shared" / "trust.py").is_file()
    built = build_fab_from_disk(root)
    assert installed_fab_hash() == hashlib.sha256(built).hexdigest() == fab_hash(built)


def test_approvals(tmp_path):
    installed = "a" * 64
    other_fab = tmp_path / "other.fab"
    other_fab.write_bytes(b"another app")
    other = hashlib.sha256(b"another app").hexdigest()
    assert is_approved(installed, installed, tmp_path)
    assert not is_approved(other, installed, tmp_path)
    assert approve(tmp_path, str(other_fab)) == other
    assert is_approved(other, installed, tmp_path)
    assert stat.S_IMODE((tmp_path / "approved-apps.json").stat().st_mode) == 0o600
    third = "B" * 64
    assert approve(tmp_path, third) == "b" * 64
    assert approved_hashes(tmp_path) == {other, "b" * 64}
    with pytest.raises(TrustError, match="neither a .fab file nor a SHA-256"):
        approve(tmp_path, "abc")
    (tmp_path / "approved-apps.json").write_text("[]")
    with pytest.raises(TrustError, match="not a fedmi approval list"):
        is_approved(other, installed, tmp_path)
