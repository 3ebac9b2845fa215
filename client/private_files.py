"""The site's private files: folders fedmi creates are 0700, files it writes are 0600.

Everything fedmi keeps at a hospital — the state folder, the ingest cache and reports, the
privacy ledger and its secret, local harmonization layers, the site's keys — is derived
from patient data or guards it, so only the account running fedmi may read it. The modes
are set explicitly (not through the process umask, which fedmi does not own inside Flower's
or Ray's processes), and writes are atomic: a same-folder temporary file created 0600,
then :func:`os.replace`, so a reader never sees half a file.

Folders that already exist are left as they are (an operator may have chosen their
permissions on purpose); a file fedmi rewrites becomes 0600.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

PRIVATE_DIR = 0o700
PRIVATE_FILE = 0o600


def private_dir(path: Path) -> Path:
    """Create ``path`` and its missing parents with mode 0700; returns ``path``.

    Existing folders keep their mode.
    """
    path = Path(path)
    missing = []
    p = path
    while not p.exists():
        missing.append(p)
        if p.parent == p:
            break
        p = p.parent
    for folder in reversed(missing):
        try:
            os.mkdir(folder, PRIVATE_DIR)
        except FileExistsError:  # created meanwhile by another process
            continue
        os.chmod(folder, PRIVATE_DIR)  # exactly 0700, whatever the umask
    if not path.is_dir():
        raise NotADirectoryError(f"{path} is not a folder")
    return path


def _tmp_name(path: Path) -> Path:
    return path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")


@contextlib.contextmanager
def private_writer(path: Path, *, durable: bool = False) -> Iterator[BinaryIO]:
    """Write ``path`` atomically as a 0600 file: yields a binary file to write into.

    The content goes to a same-folder temporary file (created 0600), which replaces
    ``path`` only when the block ends without an exception. ``durable``: ``fsync`` the
    file and its folder, so the new content survives a power cut once this returns.
    """
    path = Path(path)
    private_dir(path.parent)
    tmp = _tmp_name(path)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PRIVATE_FILE)
    try:
        os.fchmod(fd, PRIVATE_FILE)
        with os.fdopen(fd, "wb") as fh:
            yield fh
            fh.flush()
            if durable:
                os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    if durable:
        with contextlib.suppress(OSError):  # make the rename durable where supported
            dfd = os.open(path.parent, os.O_RDONLY)
            try:
                os.fsync(dfd)
            finally:
                os.close(dfd)


def write_private(path: Path, data: bytes | str, *, durable: bool = False) -> Path:
    """Write ``data`` (text as UTF-8) to ``path`` atomically, mode 0600; returns ``path``."""
    raw = data.encode("utf-8") if isinstance(data, str) else data
    with private_writer(path, durable=durable) as fh:
        fh.write(raw)
    return Path(path)


def create_private(path: Path, data: bytes) -> bool:
    """Create ``path`` with ``data`` and mode 0600 only if it does not exist yet.

    Returns ``False`` (and writes nothing) when it already exists: two processes racing to
    create it end with one file, the first one's.
    """
    path = Path(path)
    private_dir(path.parent)
    tmp = _tmp_name(path)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PRIVATE_FILE)
    try:
        os.fchmod(fd, PRIVATE_FILE)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        try:
            os.link(tmp, path)  # atomic "create if absent" with the full content
        except FileExistsError:
            return False
        except OSError:  # a file system without hard links: exclusive create in place
            return _create_in_place(path, data)
        return True
    finally:
        with contextlib.suppress(OSError):
            os.unlink(tmp)


def _create_in_place(path: Path, data: bytes) -> bool:
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PRIVATE_FILE)
    except FileExistsError:
        return False
    with os.fdopen(fd, "wb") as fh:
        os.fchmod(fh.fileno(), PRIVATE_FILE)
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    return True
