"""The site's copy of the federation's model package: pin, pull, verify, show.

A site pins the coordinator's public key once (the ``ca.crt`` it joined with, or the
simulation's ``coordinator.pub``) under ``STATE_DIR/model/coordinator.pem``; every package is
verified against that pinned key before it is kept (``STATE_DIR/model/packages/``) and again
before it is used (:func:`load_verified`). Nothing of an unverified package is ever read.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from pathlib import Path

from fedmi.shared.package import (
    SUFFIX,
    ModelPackage,
    PackageError,
    key_id,
    load_public_key,
    verify_package,
)

MODEL_DIR = "model"
PINNED = "coordinator.pem"
PACKAGES = "packages"


def model_dir(state_dir: Path) -> Path:
    """``STATE_DIR/model``: the pinned key and the kept packages."""
    return Path(state_dir) / MODEL_DIR


def pin_coordinator(state_dir: Path, key_file: Path) -> str:
    """Pin the coordinator key (PEM public key or certificate) for this site; its key id.

    Pinning the same key again is a no-op; a different key is refused (a site that must
    change coordinator removes ``STATE_DIR/model/coordinator.pem`` itself, knowingly).

    Raises
    ------
    PackageError
        The file is not a usable key, or another key is already pinned.
    """
    try:
        pem = Path(key_file).read_bytes()
    except OSError as exc:
        raise PackageError(f"cannot read the coordinator key {key_file}: {exc.strerror}") from None
    kid = key_id(load_public_key(pem, str(key_file)))
    pinned = model_dir(state_dir) / PINNED
    if pinned.exists():
        old = key_id(load_public_key(pinned.read_bytes(), str(pinned)))
        if old != kid:
            raise PackageError(
                f"{key_file} is not the coordinator key this site pinned ({pinned}, key "
                f"{old[:16]}…): refused. Remove {pinned} only if the federation really changed "
                "its coordinator key."
            )
        return kid
    pinned.parent.mkdir(parents=True, exist_ok=True)
    pinned.write_bytes(pem)
    os.chmod(pinned, 0o644)
    return kid


def pinned_key(state_dir: Path):
    """The pinned coordinator public key.

    Raises
    ------
    PackageError
        No key is pinned yet.
    """
    pinned = model_dir(state_dir) / PINNED
    if not pinned.is_file():
        raise PackageError(
            f"no coordinator key is pinned for this site ({pinned} is missing): run "
            "`fedmi-site model pull --coordinator ca.crt ...` with the coordinator's ca.crt "
            "(deployment) or coordinator.pub (simulation)"
        )
    return load_public_key(pinned.read_bytes(), str(pinned))


def load_verified(path: Path, state_dir: Path) -> ModelPackage:
    """Read and verify a package file against the site's pinned key.

    Raises
    ------
    PackageError
        Unreadable, not a package, or not verified (the message says why).
    """
    key = pinned_key(state_dir)
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise PackageError(f"cannot read the model package {path}: {exc.strerror}") from None
    try:
        return verify_package(data, key)
    except PackageError as exc:
        raise PackageError(f"{path}: {exc}") from None


def pull(source: Path, state_dir: Path, coordinator: Path | None = None) -> Path:
    """Verify ``source`` and keep a copy under ``STATE_DIR/model/packages``; the copy.

    ``coordinator`` pins the coordinator key first (see :func:`pin_coordinator`).
    """
    if coordinator is not None:
        pin_coordinator(state_dir, coordinator)
    pkg = load_verified(source, state_dir)
    folder = model_dir(state_dir) / PACKAGES
    folder.mkdir(parents=True, exist_ok=True)
    dest = folder / f"{pkg.version}{SUFFIX}"
    tmp = dest.with_suffix(".tmp")
    shutil.copyfile(source, tmp)
    os.replace(tmp, dest)
    load_verified(dest, state_dir)  # the copy, too
    return dest


def latest(state_dir: Path) -> Path:
    """The newest kept package (by modification time)."""
    folder = model_dir(state_dir) / PACKAGES
    found = sorted(folder.glob(f"*{SUFFIX}"), key=lambda p: p.stat().st_mtime)
    if not found:
        raise PackageError(
            f"this site keeps no model package ({folder} is empty): run `fedmi-site model pull`"
        )
    return found[-1]


def summary(pkg: ModelPackage) -> str:
    """A few lines describing a verified package (for ``fedmi-site model show``)."""
    card = pkg.card
    threshold, source = pkg.threshold
    sites = card.get("training", {}).get("sites", [])
    n = sum(int(s.get("num_train", 0)) for s in sites)
    lines = [
        f"model package {pkg.version} (verified; key {pkg.header['key_id'][:16]}…)",
        f"  task        {card.get('task')}: {card.get('description', '')}",
        f"  tracers     {', '.join(card.get('tracers', []))} ({card.get('modality')})",
        f"  classes     {card.get('classes')}",
        f"  trained on  {len(sites)} site(s), {n} scans; method {card.get('training', {}).get('method')}",
        f"  threshold   {threshold:g} ({source})",
        f"  device UID  {pkg.device_uid}",
        f"  content     sha256 {pkg.content_sha256}",
        f"  versions    {card.get('versions', {})}",
    ]
    return "\n".join(lines)


def _cmd_pull(args: argparse.Namespace) -> int:
    try:
        dest = pull(args.package, args.state_dir, args.coordinator)
    except PackageError as exc:
        print(f"fedmi-site model pull: {exc}", file=sys.stderr)
        return 2
    print(f"verified and kept {dest}")
    return 0


def _cmd_show(args: argparse.Namespace) -> int:
    try:
        path = args.package or latest(args.state_dir)
        print(summary(load_verified(path, args.state_dir)))
    except PackageError as exc:
        print(f"fedmi-site model show: {exc}", file=sys.stderr)
        return 2
    return 0
