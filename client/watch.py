"""``fedmi-site predict --watch``: predict the studies that arrive in a folder.

A scanner or a PACS export drops study folders into ``--dicom``; every ``--interval``
seconds the watcher looks at its top-level entries (a *unit*: one sub-folder, or the
loose files directly in ``--dicom`` together; names starting with ``.`` are ignored, as
are rsync's and most copy tools' partial files). A unit is taken once it has *settled*:
its newest file is at least ``--settle`` seconds old and its files (path, size,
modification time) are the same as at the previous look (so a copy that keeps the
originals' times is not caught half-way). With ``--settle 0`` a unit is taken at once.

Settled units that are new or changed are ingested together, alone (the folders already
done are not read again), through the very path of ``fedmi-site predict``
(:func:`fedmi.client.predict.predict_site`), into ``OUT/.work/watch``. A series is
reported once: ``OUT/.watch-state.json`` (written atomically after every batch) holds each
processed unit's and series' fingerprint, so a restarted watcher resumes without repeating
work, and a series whose files change after it was processed is processed again, as a new
``study-NNN`` (the old one is kept). Reports are numbered on from the last one.

One INFO line per study (its report's name and the result; no patient identifier, UID or
path). SIGTERM or SIGINT stop the watcher after the batch under way (the state stays
consistent); ``--max-cycles`` stops it after that many looks.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from fedmi.client.predict import FileStamp, LoadedModel, load_model, predict_site

log = logging.getLogger(__name__)

STATE_FILE = ".watch-state.json"
STATE_VERSION = 1
DEFAULT_INTERVAL = 10.0
DEFAULT_SETTLE = 30.0
#: The unit of the loose files directly in the watched folder.
LOOSE = "."


@dataclass(frozen=True)
class Unit:
    """A top-level entry of the watched folder as seen now."""

    fingerprint: str
    newest_mtime: float
    files: tuple[str, ...]  # paths relative to the watched folder


def fingerprint(stamps: list[FileStamp] | list[tuple[str, int, int]]) -> str:
    """SHA-256 of the sorted ``(path, size, mtime_ns)`` triples."""
    blob = json.dumps(sorted([list(s) for s in stamps])).encode()
    return hashlib.sha256(blob).hexdigest()


def _files(root: Path, top: Path) -> list[Path]:
    if top.is_file():
        return [top]
    out = []
    for dirpath, dirnames, filenames in os.walk(top):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        out += [Path(dirpath) / f for f in sorted(filenames) if not f.startswith(".")]
    return out


def scan(root: Path) -> dict[str, Unit]:
    """The watched folder's units now (files that vanish while looked at are left out)."""
    groups: dict[str, list[Path]] = {}
    for entry in sorted(Path(root).iterdir()):
        if entry.name.startswith("."):
            continue
        if entry.is_dir():
            groups[entry.name] = _files(root, entry)
        elif entry.is_file():
            groups.setdefault(LOOSE, []).append(entry)
    units = {}
    for name, paths in groups.items():
        stamps, newest = [], 0.0
        for p in paths:
            try:
                st = p.stat()
            except OSError:
                continue
            stamps.append((p.relative_to(root).as_posix(), st.st_size, st.st_mtime_ns))
            newest = max(newest, st.st_mtime)
        if stamps:
            units[name] = Unit(fingerprint(stamps), newest, tuple(s[0] for s in stamps))
    return units


def _empty_state() -> dict:
    return {"version": STATE_VERSION, "next_number": 1, "units": {}, "series": {}}


def _next_free(out_dir: Path) -> int:
    """One past the highest ``study-NNN`` already in ``out_dir`` (1 when none)."""
    numbers = [
        int(p.stem.split("-")[1])
        for p in out_dir.glob("study-*.json")
        if p.stem.split("-")[1].isdigit()
    ]
    return max(numbers, default=0) + 1


class Watcher:
    """Polls ``dicom_dir``; :meth:`cycle` is one look, :meth:`run` the loop."""

    def __init__(
        self,
        loaded: LoadedModel,
        dicom_dir: Path,
        out_dir: Path,
        *,
        interval: float = DEFAULT_INTERVAL,
        settle: float = DEFAULT_SETTLE,
        mc_passes: int = 20,
        dicom_out: bool = True,
        send: Callable[[list[Path]], int] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        from fedmi.client.private_files import private_dir

        self.loaded = loaded
        self.dicom_dir = Path(dicom_dir).resolve()
        self.out_dir = private_dir(Path(out_dir))
        self.work = private_dir(self.out_dir / ".work" / "watch")
        self.interval, self.settle = float(interval), float(settle)
        self.mc_passes, self.dicom_out, self.send = mc_passes, dicom_out, send
        self.clock = clock
        self.state_path = self.out_dir / STATE_FILE
        self.state = self._load_state()
        #: The previous look's fingerprints (a unit must look the same twice to settle).
        self.seen: dict[str, str] = {}
        self.stop = threading.Event()

    def _load_state(self) -> dict:
        try:
            state = json.loads(self.state_path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            state = _empty_state()
        except (OSError, ValueError) as exc:
            raise ValueError(
                f"{self.state_path} is unreadable ({exc}): move it away to start over "
                "(every study in --dicom is then processed again)"
            ) from None
        if state.get("version") != STATE_VERSION:
            raise ValueError(f"{self.state_path} is of another version: move it away")
        state["next_number"] = max(int(state["next_number"]), _next_free(self.out_dir))
        return state

    def _save_state(self) -> None:
        from fedmi.client.private_files import write_private

        write_private(self.state_path, json.dumps(self.state, indent=1) + "\n", durable=True)

    def ready(self) -> dict[str, Unit]:
        """The units to process now: new or changed, and settled."""
        units = scan(self.dicom_dir)
        now = self.clock()
        out = {}
        for name, unit in units.items():
            if self.state["units"].get(name) == unit.fingerprint:
                continue  # processed, unchanged
            stable = self.settle == 0 or self.seen.get(name) == unit.fingerprint
            if stable and now - unit.newest_mtime >= self.settle:
                out[name] = unit
        self.seen = {name: unit.fingerprint for name, unit in units.items()}
        return out

    def _mirror(self, units: dict[str, Unit]) -> Path:
        """A site folder whose ``dicom/`` links to the given units' files only."""
        site = self.work / "site"
        dicom = site / "dicom"
        if dicom.is_symlink() or dicom.is_file():
            dicom.unlink()
        elif dicom.exists():
            shutil.rmtree(dicom)  # links only: the studies themselves are not touched
        dicom.mkdir(parents=True, mode=0o700)
        for unit in units.values():
            for rel in unit.files:
                link = dicom / rel
                link.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
                os.symlink(self.dicom_dir / rel, link)
        return site

    def cycle(self) -> list[dict]:
        """One look: process what has settled; the new records."""
        units = self.ready()
        if not units:
            return []
        done: dict[str, str] = {}

        def keep(uid: str | None, stamps: list[FileStamp]) -> bool:
            # ingest's paths are dicom/<path in the watched folder>
            own = [(rel.removeprefix("dicom/"), size, mtime) for rel, size, mtime in stamps]
            key = uid or (f"file:{own[0][0]}" if own else "file:?")
            fp = fingerprint(own)
            if self.state["series"].get(key) == fp:
                return False
            done[key] = fp
            return True

        first = int(self.state["next_number"])
        records = predict_site(
            self.loaded,
            self._mirror(units),
            self.work / "ingest",
            self.out_dir,
            mc_passes=self.mc_passes,
            dicom_out=self.dicom_out,
            keep=keep,
            first_number=first,
        )
        for i, rec in enumerate(records):
            name = f"study-{first + i:03d}"
            if rec["assessable"]:
                log.info("%s: %s (p = %.3f)", name, rec["class"], rec["probability"])
            else:
                log.info("%s: not assessable (%s)", name, rec["reason"])
        if self.send is not None:
            files = [self.out_dir / "dicom" / n for r in records for n in r.get("dicom", [])]
            from fedmi.client.pacs import SendError

            try:
                n = self.send(files)
                log.info("%d DICOM object(s) stored at the PACS", n)
            except SendError as exc:  # the results stay in OUT/dicom; the watcher goes on
                log.error("sending to the PACS failed: %s", exc)
        self.state["series"].update(done)
        self.state["units"].update({name: unit.fingerprint for name, unit in units.items()})
        self.state["next_number"] = first + len(records)
        self._save_state()
        return records

    def run(self, max_cycles: int | None = None) -> int:
        """Look every ``interval`` seconds until SIGTERM/SIGINT or ``max_cycles``; the
        number of studies reported."""
        installed = {}
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                installed[sig] = signal.signal(sig, lambda *_: self.stop.set())
        n_cycles = n_records = 0
        log.info(
            "watching for studies every %g s (settle %g s); %d study report(s) so far",
            self.interval,
            self.settle,
            int(self.state["next_number"]) - 1,
        )
        try:
            while not self.stop.is_set():
                n_records += len(self.cycle())
                n_cycles += 1
                if max_cycles is not None and n_cycles >= max_cycles:
                    break
                self.stop.wait(self.interval)
        finally:
            for sig, old in installed.items():
                signal.signal(sig, old)
        log.info("watch stopped after %d look(s), %d new study report(s)", n_cycles, n_records)
        return n_records


def watch(
    package: Path,
    state_dir: Path,
    dicom_dir: Path,
    out_dir: Path,
    **kwargs,
) -> Watcher:
    """A :class:`Watcher` with the verified package loaded (``kwargs``: the watcher's).

    Raises
    ------
    PackageError
        The package is not verified against the site's pinned key.
    ValueError
        ``dicom_dir`` is not a folder, or the state file is unreadable.
    """
    from fedmi.client.model import load_verified

    if not Path(dicom_dir).is_dir():
        raise ValueError(f"--dicom {dicom_dir} is not a folder")
    return Watcher(
        load_model(load_verified(package, state_dir), state_dir), dicom_dir, out_dir, **kwargs
    )
