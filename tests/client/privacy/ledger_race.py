"""Charging one ledger from several processes or threads at once (the race tests' worker).

Kept apart from the test modules so a spawned process imports only the ledger, not torch.
Each charge records as ``epsilon`` the number of charges its writer saw plus one: with the
lock, every charge sees all earlier ones, so the values are exactly 1..total.
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

from fedmi.client.privacy.ledger import LedgerError, PrivacyLedger


def _charge(ledger: PrivacyLedger, who: str) -> None:
    seen = len(ledger.body["charges"])
    time.sleep(0.002)  # widen the read → write window a lost update needs
    ledger.charge(
        run_id=who,
        server_round=seen + 1,
        noise_multiplier=1.0,
        sample_rate=0.1,
        steps=1,
        max_grad_norm=1.0,
        delta=1e-5,
        epsilon=float(seen + 1),
    )


def charge_many(directory: str, n: int, locked: bool = True, start=None) -> int:
    """Charge the ledger in ``directory`` ``n`` times; returns the charges written.

    ``locked``: each read-charge-write in :meth:`PrivacyLedger.transaction`; otherwise
    :meth:`PrivacyLedger.open` then ``charge`` (the write is refused when another process
    wrote meanwhile). ``start``: an event to wait for, so that the writers start together.
    """
    who = f"{os.getpid()}-{threading.get_ident()}"
    if start is not None:
        start.wait(30)
    written = 0
    for _ in range(n):
        try:
            if locked:
                with PrivacyLedger.transaction(Path(directory), site_id="site-a") as ledger:
                    _charge(ledger, who)
            else:
                _charge(PrivacyLedger.open(Path(directory), site_id="site-a"), who)
            written += 1
        except LedgerError:
            pass  # only without the lock: another writer came first
    return written


def report_charges(directory: str, n: int, locked: bool, start, results) -> None:
    """Process target: :func:`charge_many`, its count put on the ``results`` queue."""
    results.put(charge_many(directory, n, locked, start))
