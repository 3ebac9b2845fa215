"""Site files fedmi creates are private: folders 0700, files 0600, whatever the umask."""

from __future__ import annotations

import os

import pytest

from fedmi.client.cli import main as site_cli
from fedmi.client.private_files import create_private, private_dir, write_private


@pytest.fixture
def open_umask():
    old = os.umask(0o000)  # the loosest umask a site could run with
    yield
    os.umask(old)


def _mode(path) -> int:
    return path.stat().st_mode & 0o777


def test_folders_and_files_are_private_and_writes_atomic(tmp_path, open_umask):
    existing = tmp_path / "existing"
    existing.mkdir(mode=0o755)
    target = existing / "a" / "b" / "file.json"
    write_private(target, "one")
    assert _mode(existing) == 0o755  # an operator's folder keeps its mode
    assert _mode(existing / "a") == _mode(existing / "a" / "b") == 0o700
    assert _mode(target) == 0o600 and target.read_text() == "one"
    target.chmod(0o644)
    write_private(target, b"two")  # a rewritten file becomes 0600 again
    assert _mode(target) == 0o600 and target.read_bytes() == b"two"
    assert sorted(p.name for p in target.parent.iterdir()) == ["file.json"]  # no temp left
    assert create_private(target, b"three") is False and target.read_bytes() == b"two"
    assert create_private(tmp_path / "new" / "s", b"x") and _mode(tmp_path / "new" / "s") == 0o600
    assert private_dir(tmp_path / "x" / "y") == tmp_path / "x" / "y"


def test_keygen_keeps_the_key_folder_private(tmp_path, open_umask, capsys):
    keys = tmp_path / "keys"
    assert site_cli(["keygen", "--out", str(keys)]) == 0
    assert _mode(keys) == 0o700
    assert _mode(keys / "site") == _mode(keys / "site.pub") == 0o600
    assert (keys / "site.pub").read_text().startswith("ecdsa-sha2-nistp384 ")
