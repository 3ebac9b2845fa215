"""An exclusive lock on the ledger's folder, so read-charge-write is one step per process.

``fcntl.flock`` on ``privacy_ledger.lock`` (created 0600 and never deleted: deleting a lock
file lets two processes hold "the" lock on two different files). The kernel drops the lock
when its holder exits, also on a crash, so a killed SuperNode never leaves the site locked.
Two processes (two ClientApps of one site, a ClientApp and ``fedmi-site ledger --reset``)
that charge at the same time are serialised: each reads the charges the other wrote.
The state folder must be on a local file system (flock on NFS is emulated, or absent).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import time
from collections.abc import Iterator
from pathlib import Path

from fedmi.client.private_files import PRIVATE_FILE, private_dir

LOCK_FILE = "privacy_ledger.lock"
#: seconds to wait for another process's charge (noise calibration included) to finish
LOCK_TIMEOUT = 60.0
_POLL = 0.02


class LockTimeout(TimeoutError):
    """Another process held the ledger's lock for longer than the timeout."""


def acquire(directory: Path, timeout: float | None = None) -> int:
    """Take the exclusive lock of the ledger in ``directory``; returns the descriptor that
    holds it (give it to :func:`release`).

    ``timeout``: seconds to wait, default :data:`LOCK_TIMEOUT` (read at each call).

    Raises
    ------
    LockTimeout
        When the lock is still held by another process after ``timeout`` seconds.
    OSError
        When the lock file cannot be created or opened.
    """
    timeout = LOCK_TIMEOUT if timeout is None else timeout
    path = private_dir(Path(directory)) / LOCK_FILE
    fd = os.open(path, os.O_RDWR | os.O_CREAT, PRIVATE_FILE)
    deadline = time.monotonic() + timeout
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return fd
        except BlockingIOError:
            if time.monotonic() >= deadline:
                os.close(fd)
                raise LockTimeout(
                    f"{path}: another process has held the privacy ledger's lock for over "
                    f"{timeout:g} s (a second SuperNode, ClientApp or `fedmi-site ledger` "
                    "on this state folder?): let it finish or stop it, then retry; never "
                    "delete the lock file while fedmi runs"
                ) from None
            time.sleep(_POLL)


def release(fd: int) -> None:
    """Release the lock held by ``fd`` (closing the descriptor releases it)."""
    os.close(fd)


@contextlib.contextmanager
def ledger_lock(directory: Path, timeout: float | None = None) -> Iterator[None]:
    """Hold the exclusive lock of the ledger in ``directory`` for the ``with`` block
    (:func:`acquire`, :func:`release`)."""
    fd = acquire(directory, timeout)
    try:
        yield
    finally:
        release(fd)
