"""The site's privacy ledger: every DP-SGD step ever charged against its dataset.

The budget belongs to the dataset, not to a run: the ledger lives on the site's disk and
survives SuperNode restarts and new runs. Location: ``<ledger-dir>/privacy_ledger.json``,
where ``ledger-dir`` is the site's ``state-dir`` in deployment and, in simulation, the
site's ingest-cache folder beside the data (``<data-root>/.fedmi-cache/<site>/``), which
outlives every run folder (see :func:`fedmi.client.privacy.settings.resolve_privacy`).

Format (JSON, one file)::

    {"format": "fedmi-privacy-ledger", "version": 1,
     "sha256": "<hex digest of the canonical JSON of body>",
     "body": {"ledger_id": "...", "created": "...", "site_id": "...",
              "budget": {"epsilon": 8.0, "delta": 1e-05},
              "runs": {"<run-id>": {"noise_multiplier", "sample_rate", "planned_steps",
                                     "max_grad_norm", "delta", "epsilon_budget", "created"}},
              "charges": [{"run_id", "kind", "round", "noise_multiplier", "sample_rate",
                           "steps", "max_grad_norm", "delta", "epsilon", "time"}],
              "resets": [{"time", "previous_ledger_id", "previous_epsilon", "archived_as",
                          "reason"}]}}

``charges`` is the Opacus accountant history ``(noise_multiplier, sample_rate, steps)``
with who/when and ``kind``: ``train`` for DP-SGD steps, else the message type of a
statistic release (one Gaussian mechanism: sample rate 1, one step; see
:mod:`fedmi.client.privacy.release`); ``epsilon`` is the cumulative ε after the charge. A charge is written
*before* the steps are taken (write-ahead), so a crash mid-round never under-counts.

Writes are atomic (temporary file, ``fsync``, :func:`os.replace`). A ledger that fails
its checksum or cannot be parsed, or that is missing although a ledger was created here
before (the ``privacy_ledger.id`` marker beside it), raises :class:`LedgerError`: the
site then refuses to train until a person inspects it and resets it on purpose
(``fedmi-site ledger --state-dir DIR --reset --yes``). It never silently restarts at zero.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger(__name__)

LEDGER_FILE = "privacy_ledger.json"
MARKER_FILE = "privacy_ledger.id"
FORMAT = "fedmi-privacy-ledger"
VERSION = 1


class LedgerError(RuntimeError):
    """The ledger is corrupt or missing although expected: a person must act."""


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def _canonical(body: dict) -> bytes:
    return json.dumps(body, sort_keys=True, separators=(",", ":")).encode("utf-8")


def _digest(body: dict) -> str:
    return hashlib.sha256(_canonical(body)).hexdigest()


def _atomic_write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w", encoding="utf-8") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    with contextlib.suppress(OSError):  # make the rename itself durable where supported
        fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


@dataclass
class PrivacyLedger:
    """An open ledger (see the module docstring for its format and location)."""

    directory: Path
    body: dict = field(default_factory=dict)

    @property
    def path(self) -> Path:
        return self.directory / LEDGER_FILE

    # --- opening ---------------------------------------------------------------------
    @classmethod
    def open(cls, directory: Path, *, site_id: str = "", create: bool = True) -> PrivacyLedger:
        """Load the ledger in ``directory``; create an empty one only if none ever existed.

        Raises
        ------
        LedgerError
            When the file is corrupt, fails its checksum, or is missing although the
            marker says a ledger was created here.
        FileNotFoundError
            When there is no ledger and ``create`` is false.
        """
        directory = Path(directory)
        path = directory / LEDGER_FILE
        marker = directory / MARKER_FILE
        if not path.exists():
            if marker.exists():
                raise LedgerError(
                    f"the privacy ledger {LEDGER_FILE} is missing but {MARKER_FILE} shows one "
                    "was kept here: restore it from backup, or reset it on purpose with "
                    "`fedmi-site ledger --state-dir DIR --reset --yes`"
                )
            if not create:
                raise FileNotFoundError(f"no privacy ledger in {directory}")
            ledger = cls(directory, cls._new_body(site_id))
            ledger.save()
            log.info("new privacy ledger created (no privacy spent yet)")
            return ledger
        body = cls._read_checked(path)
        ledger = cls(directory, body)
        if marker.exists():
            if marker.read_text(encoding="utf-8").strip() != body["ledger_id"]:
                raise LedgerError(
                    f"{LEDGER_FILE} is not the ledger that was kept here (its id differs from "
                    f"{MARKER_FILE}): restore the right file or reset on purpose"
                )
        else:
            _atomic_write(marker, body["ledger_id"] + "\n")
        return ledger

    @staticmethod
    def _new_body(site_id: str) -> dict:
        return {
            "ledger_id": uuid.uuid4().hex,
            "created": _now(),
            "site_id": site_id,
            "budget": {},
            "runs": {},
            "charges": [],
            "resets": [],
        }

    @staticmethod
    def _read_checked(path: Path) -> dict:
        try:
            doc = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise LedgerError(
                f"the privacy ledger {LEDGER_FILE} cannot be read ({type(exc).__name__}): "
                "the site will not train until it is restored or reset on purpose"
            ) from None
        if not isinstance(doc, dict) or doc.get("format") != FORMAT or "body" not in doc:
            raise LedgerError(f"{LEDGER_FILE} is not a fedmi privacy ledger")
        if doc.get("version") != VERSION:
            raise LedgerError(f"{LEDGER_FILE} has unsupported version {doc.get('version')!r}")
        body = doc["body"]
        if not isinstance(body, dict) or doc.get("sha256") != _digest(body):
            raise LedgerError(
                f"the privacy ledger {LEDGER_FILE} fails its checksum (edited or damaged): "
                "the site will not train until it is restored or reset on purpose"
            )
        for key in ("ledger_id", "runs", "charges"):
            if key not in body:
                raise LedgerError(f"{LEDGER_FILE} lacks {key!r}")
        return body

    # --- writing ---------------------------------------------------------------------
    def save(self) -> None:
        """Write atomically with a fresh checksum, and the marker beside it."""
        doc = {
            "format": FORMAT,
            "version": VERSION,
            "sha256": _digest(self.body),
            "body": self.body,
        }
        _atomic_write(self.path, json.dumps(doc, indent=1, sort_keys=True))
        marker = self.directory / MARKER_FILE
        if not marker.exists():
            _atomic_write(marker, self.body["ledger_id"] + "\n")

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


def reset_ledger(directory: Path, *, reason: str = "reset by a person") -> Path | None:
    """Archive the current ledger (kept, never deleted) and start an empty one.

    Returns the archive path (``None`` when there was no ledger). A corrupt ledger is
    archived as it is; its spend is recorded as unknown.
    """
    directory = Path(directory)
    path = directory / LEDGER_FILE
    previous_id, previous_eps = None, None
    archived: Path | None = None
    if path.exists():
        try:
            body = PrivacyLedger._read_checked(path)
            previous_id = body.get("ledger_id")
            previous_eps = body["charges"][-1]["epsilon"] if body["charges"] else 0.0
        except LedgerError:
            pass
        archived = directory / f"privacy_ledger.{time.strftime('%Y%m%dT%H%M%S')}.reset.json"
        os.replace(path, archived)
    body = PrivacyLedger._new_body("")
    body["resets"].append(
        {
            "time": _now(),
            "previous_ledger_id": previous_id,
            "previous_epsilon": previous_eps,
            "archived_as": archived.name if archived else None,
            "reason": reason,
        }
    )
    ledger = PrivacyLedger(directory, body)
    marker = directory / MARKER_FILE
    if marker.exists():
        marker.unlink()
    ledger.save()
    log.warning("privacy ledger reset by request; the previous ledger was archived")
    return archived
