"""The site's privacy ledger: every DP-SGD step ever charged against its dataset.

The budget belongs to the dataset, not to a run: the ledger lives on the site's disk and
survives SuperNode restarts and new runs. Location: ``<ledger-dir>/privacy_ledger.json``,
where ``ledger-dir`` is the site's ``state-dir`` in deployment and, in simulation, the
site's ingest-cache folder beside the data (``<data-root>/.fedmi-cache/<site>/``), which
outlives every run folder (see :func:`fedmi.client.privacy.settings.resolve_privacy`).

Format (JSON, one file; version 2)::

    {"format": "fedmi-privacy-ledger", "version": 2, "key_id": "<16 hex>",
     "hmac_sha256": "<HMAC-SHA256, with the site's ledger secret, of the canonical JSON
                     of {format, version, key_id, body}>",
     "body": {"ledger_id": "...", "created": "...", "site_id": "...", "revision": 12,
              "budget": {"epsilon": 8.0, "delta": 1e-05},
              "runs": {"<run-id>": {"noise_multiplier", "sample_rate", "planned_steps",
                                     "max_grad_norm", "delta", "epsilon_budget", "created"}},
              "charges": [{"run_id", "kind", "round", "noise_multiplier", "sample_rate",
                           "steps", "max_grad_norm", "delta", "epsilon", "time"}],
              "resets": [{"time", "previous_ledger_id", "previous_epsilon", "archived_as",
                          "reason"}],
              "upgrades": [{"time", "from_version", "archived_as", "epsilon"}]}}

``charges`` is the Opacus accountant history ``(noise_multiplier, sample_rate, steps)``
with who/when and ``kind``: ``train`` for DP-SGD steps, else the message type of a
statistic release (one Gaussian mechanism: sample rate 1, one step; see
:mod:`fedmi.client.privacy.release`); ``epsilon`` is the cumulative ε after the charge. A charge is written
*before* the steps are taken (write-ahead), so a crash mid-round never under-counts.
``revision`` counts the writes.

Integrity (docs/privacy.md, "Ledger integrity"): the file is **sealed** with the site's
ledger secret (:mod:`fedmi.client.privacy.seal`; an edit, even with a recomputed plain
checksum, fails the seal); ``site_id`` is inside the seal and **checked** against the site
opening it (an empty one, after a reset of an unverifiable ledger, is claimed by the first
site); :meth:`PrivacyLedger.transaction` holds an exclusive **lock**
(:mod:`fedmi.client.privacy.lock`) from reading the charges to writing the new one, and a
change made outside a transaction is written only if the file is still the revision it
was read at. Any failure raises :class:`LedgerError` naming the file and the fix, and the
site refuses to train (``ledger-error``): the ledger is **never reset silently**, and an
old unsealed ledger (version 1) waits for the operator's one-time
``fedmi-site ledger --upgrade --yes`` (:mod:`fedmi.client.privacy.ledger_admin`). Files
are written atomically and 0600 (:mod:`fedmi.client.private_files`).
"""

from __future__ import annotations

import contextlib
import copy
import json
import logging
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from fedmi.client.privacy import seal
from fedmi.client.privacy.ledger_files import (
    FORMAT,
    RESTORE_FIX,
    LedgerError,
    load_secret,
    locked,
    read_document,
)
from fedmi.client.privacy.seal import SECRET_FILE
from fedmi.client.private_files import write_private

log = logging.getLogger(__name__)

LEDGER_FILE = "privacy_ledger.json"
MARKER_FILE = "privacy_ledger.id"
VERSION = 2
#: the unkeyed format (a plain SHA-256 of the body), refused until upgraded
OLD_VERSION = 1


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def _sealed_part(key_id: str, body: dict) -> dict:
    """What the seal covers: everything in the file but the seal itself."""
    return {"format": FORMAT, "version": VERSION, "key_id": key_id, "body": body}


@dataclass
class PrivacyLedger:
    """An open ledger (see the module docstring for its format, location and integrity)."""

    directory: Path
    body: dict = field(default_factory=dict)
    secret: bytes = field(default=b"", repr=False)
    in_transaction: bool = field(default=False, repr=False)

    @property
    def path(self) -> Path:
        return self.directory / LEDGER_FILE

    # --- opening ---------------------------------------------------------------------
    @classmethod
    def open(
        cls,
        directory: Path,
        *,
        site_id: str = "",
        create: bool = True,
        timeout: float | None = None,
    ) -> PrivacyLedger:
        """Load and verify the ledger in ``directory``; create one only if none ever existed.

        For a read followed by a charge, use :meth:`transaction` instead. ``site_id``: the
        site opening it (checked; empty: not checked, e.g. ``fedmi-site ledger``).

        Raises
        ------
        LedgerError
            See the module docstring ("Integrity").
        FileNotFoundError
            When there is no ledger and ``create`` is false.
        """
        directory = Path(directory)
        if (directory / LEDGER_FILE).exists():
            ledger = cls._load(directory, site_id)
            if not site_id or ledger.body.get("site_id"):
                return ledger
        elif not create:
            cls._check_never_kept(directory)
            raise FileNotFoundError(f"no privacy ledger in {directory}")
        with cls.transaction(directory, site_id=site_id, timeout=timeout) as ledger:
            return ledger

    @classmethod
    @contextlib.contextmanager
    def transaction(
        cls,
        directory: Path,
        *,
        site_id: str = "",
        create: bool = True,
        timeout: float | None = None,
    ) -> Iterator[PrivacyLedger]:
        """The ledger, verified and held under its exclusive lock for the ``with`` block.

        Read the charges, decide and charge inside the block: no other process can charge
        in between. A new ledger (and its secret) is created when none ever existed.

        Raises
        ------
        LedgerError
            The lock was not had within ``timeout`` seconds, or see :meth:`open`.
        """
        directory = Path(directory)
        with locked(directory, timeout):
            if (directory / LEDGER_FILE).exists():
                ledger = cls._load(directory, site_id)
            elif create:
                ledger = cls._create(directory, site_id)
            else:
                cls._check_never_kept(directory)
                raise FileNotFoundError(f"no privacy ledger in {directory}")
            ledger.in_transaction = True
            try:
                if site_id and not ledger.body.get("site_id"):
                    log.warning("privacy ledger %s claimed by site %s", ledger.path, site_id)
                    ledger.body["site_id"] = site_id
                    ledger.save()
                yield ledger
            finally:
                ledger.in_transaction = False

    @classmethod
    def _check_never_kept(cls, directory: Path) -> None:
        """Refuse when the marker or the secret shows a ledger was kept in ``directory``."""
        for name in (MARKER_FILE, SECRET_FILE):
            if (directory / name).exists():
                raise LedgerError(
                    f"the privacy ledger {directory / LEDGER_FILE} is missing but {name} shows "
                    f"one was kept there: {RESTORE_FIX.format(d=directory)}"
                )

    @classmethod
    def _create(cls, directory: Path, site_id: str) -> PrivacyLedger:
        """A new, empty ledger with a new secret (the caller holds the lock)."""
        cls._check_never_kept(directory)
        ledger = cls(directory, cls._new_body(site_id), load_secret(directory, create=True))
        ledger.in_transaction = True
        ledger.save()
        log.info("new privacy ledger created in %s (no privacy spent yet)", directory)
        return ledger

    @staticmethod
    def _new_body(site_id: str) -> dict:
        return {
            "ledger_id": uuid.uuid4().hex,
            "created": _now(),
            "site_id": site_id,
            "revision": 0,
            "budget": {},
            "runs": {},
            "charges": [],
            "resets": [],
            "upgrades": [],
        }

    @classmethod
    def _load(cls, directory: Path, site_id: str) -> PrivacyLedger:
        """Read, verify the seal, the marker and the site (see "Integrity")."""
        path = directory / LEDGER_FILE
        doc = read_document(path)
        if doc.get("version") == OLD_VERSION:
            raise LedgerError(
                f"{path} is in the old unsealed format (version 1, a plain SHA-256 anyone can "
                f"recompute): check the spend it shows, then seal it once with `fedmi-site "
                f"ledger --state-dir {directory} --upgrade --yes` (docs/privacy.md)"
            )
        if doc.get("version") != VERSION:
            raise LedgerError(f"{path} has unsupported version {doc.get('version')!r}")
        secret = load_secret(directory)
        body = doc["body"]
        if doc.get("key_id") != seal.key_id(secret):
            raise LedgerError(
                f"{path} was sealed with another secret than {directory / SECRET_FILE} (key "
                f"{doc.get('key_id')!r}, this folder's is {seal.key_id(secret)!r}): restore the "
                "ledger.secret kept with this ledger; a ledger copied from another site or "
                f"folder is not this site's: {RESTORE_FIX.format(d=directory)}"
            )
        if not isinstance(body, dict) or not seal.verify(
            secret, _sealed_part(doc["key_id"], body), doc.get("hmac_sha256")
        ):
            raise LedgerError(
                f"the privacy ledger {path} fails its seal (edited or damaged); the site will "
                f"not train until a person acts: {RESTORE_FIX.format(d=directory)}"
            )
        for key in ("ledger_id", "runs", "charges", "site_id", "revision"):
            if key not in body:
                raise LedgerError(f"{path} lacks {key!r}: {RESTORE_FIX.format(d=directory)}")
        cls._check_marker(directory, body["ledger_id"])
        owner = body["site_id"]
        if site_id and owner and owner != site_id:
            raise LedgerError(
                f"{path} is the privacy ledger of site {owner!r}, not of this site "
                f"({site_id!r}): give this site its own ledger-dir/state-dir (never copy a "
                "ledger between sites); if this site's id changed on purpose, set its old "
                "site-id back in site.toml"
            )
        return cls(directory, body, secret)

    @staticmethod
    def _check_marker(directory: Path, ledger_id: str) -> None:
        marker = directory / MARKER_FILE
        if not marker.exists():
            write_private(marker, ledger_id + "\n", durable=True)
        elif marker.read_text(encoding="utf-8").strip() != ledger_id:
            raise LedgerError(
                f"{directory / LEDGER_FILE} is not the ledger that was kept there (its id "
                f"differs from {marker}): restore the right file or reset on purpose"
            )

    # --- writing ---------------------------------------------------------------------
    def save(self) -> None:
        """Write atomically, sealed, as the next revision (and the marker beside it).

        Outside a :meth:`transaction` the write takes the lock and happens only if the
        file is still the revision this ledger was read at.

        Raises
        ------
        LedgerError
            Another process changed the ledger meanwhile, or it cannot be written. After
            this error, discard this object and open the ledger again.
        """
        if self.in_transaction:
            self._write()
            return
        with locked(self.directory):
            on_disk = self._load(self.directory, "")
            if on_disk.body["revision"] != self.body["revision"]:
                raise LedgerError(
                    f"{self.path} was changed by another process since it was read "
                    "(revision {} → {}): nothing was written; retry".format(
                        self.body["revision"], on_disk.body["revision"]
                    )
                )
            self._write()

    def _write(self) -> None:
        body = copy.deepcopy(self.body)
        body["revision"] = int(body.get("revision", 0)) + 1
        kid = seal.key_id(self.secret)
        doc = {
            **_sealed_part(kid, body),
            "hmac_sha256": seal.mac(self.secret, _sealed_part(kid, body)),
        }
        try:
            write_private(self.path, json.dumps(doc, indent=1, sort_keys=True), durable=True)
            if not (self.directory / MARKER_FILE).exists():
                write_private(self.directory / MARKER_FILE, body["ledger_id"] + "\n", durable=True)
        except OSError as exc:
            raise LedgerError(
                f"{self.path} cannot be written ({exc.strerror}): free disk space or fix the "
                "folder's permissions; nothing was charged"
            ) from None
        self.body = body

    def set_budget(self, epsilon: float, delta: float) -> None:
        if self.body.get("budget") != {"epsilon": epsilon, "delta": delta}:
            self.body["budget"] = {"epsilon": epsilon, "delta": delta}
            self.save()

    def set_run_plan(self, run_id: str, plan: dict) -> None:
        self.body["runs"][str(run_id)] = {**plan, "created": _now()}
        self.save()

    def charge(
        self,
        *,
        run_id: str,
        server_round: int,
        noise_multiplier: float,
        sample_rate: float,
        steps: int,
        max_grad_norm: float,
        delta: float,
        epsilon: float,
        kind: str = "train",
    ) -> None:
        """Append one charge (write-ahead: call before taking the steps or releasing).

        ``kind``: the message type it pays for (``train``, or a statistic release such as
        ``evaluate.external``: one Gaussian step, ``sample_rate`` 1).
        """
        self.body["charges"].append(
            {
                "run_id": str(run_id),
                "kind": str(kind),
                "round": int(server_round),
                "noise_multiplier": float(noise_multiplier),
                "sample_rate": float(sample_rate),
                "steps": int(steps),
                "max_grad_norm": float(max_grad_norm),
                "delta": float(delta),
                "epsilon": float(epsilon),
                "time": _now(),
            }
        )
        self.save()

    # --- reading ---------------------------------------------------------------------
    def run_plan(self, run_id: str) -> dict | None:
        return self.body["runs"].get(str(run_id))

    def history(self, run_id: str | None = None) -> list[tuple[float, float, int]]:
        """Opacus accountant history ``[(noise_multiplier, sample_rate, steps), ...]``."""
        return [
            (float(c["noise_multiplier"]), float(c["sample_rate"]), int(c["steps"]))
            for c in self.body["charges"]
            if run_id is None or c["run_id"] == str(run_id)
        ]

    def charges(self, *, run_id: str | None = None, kind: str | None = None) -> list[dict]:
        """The charges (copies), optionally of one run and one kind (``train`` for older
        entries, which predate release charges)."""
        return [
            dict(c)
            for c in self.body["charges"]
            if (run_id is None or c["run_id"] == str(run_id))
            and (kind is None or c.get("kind", "train") == kind)
        ]

    def run_ids(self) -> list[str]:
        seen: dict[str, None] = {}
        for c in self.body["charges"]:
            seen.setdefault(c["run_id"], None)
        return list(seen)
