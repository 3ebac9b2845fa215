"""The coordinator writes and signs the run's model package (format: :mod:`fedmi.shared.package`).

Signing key:

* in a deployment, the federation CA's key (``ca.key`` of ``fedmi-server certs``,
  :mod:`fedmi.server.deploy.certs`): the sites already hold its ``ca.crt``, which pins the
  coordinator's identity;
* in a simulation (no certificates), a P-256 key generated once in the run folder
  (``coordinator.key``, mode 0600, and ``coordinator.pub`` for the sites).

A run always signs with its run folder's key; in a deployment the coordinator then signs the
release with the CA key (``fedmi-server package --run-dir RUN --key CERTS/ca.key``,
:func:`sign_release`), which first verifies the run's own signature.
"""

from __future__ import annotations

import io
import json
import logging
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from fedmi.shared.package import (
    CARD,
    NORMATIVE,
    OOD,
    SUFFIX,
    WEIGHTS,
    PackageError,
    PrivateKey,
    build_package,
    load_public_key,
    operating_point,
    verify_package,
)

if TYPE_CHECKING:  # `fedmi-server --help` starts without Flower or torch
    from flwr.app import ArrayRecord

    from fedmi.shared.normative import NormativeModel
    from fedmi.shared.ood import FeatureDescription

log = logging.getLogger(__name__)

KEY_FILE = "coordinator.key"
PUBLIC_FILE = "coordinator.pub"
PACKAGE_DIR = "model_package"


def load_signing_key(path: Path) -> PrivateKey:
    """A PEM private key (ECDSA or Ed25519), e.g. ``ca.key``.

    Raises
    ------
    ValueError
        The file is not an unencrypted PEM ECDSA/Ed25519 private key (message names it).
    """
    try:
        key = serialization.load_pem_private_key(Path(path).read_bytes(), password=None)
    except (OSError, ValueError, TypeError) as exc:
        raise ValueError(
            f"{path} is not a readable unencrypted PEM private key ({exc}): give the "
            "federation's ca.key (fedmi-server certs)"
        ) from None
    if not isinstance(key, (ec.EllipticCurvePrivateKey, ed25519.Ed25519PrivateKey)):
        raise ValueError(f"{path} holds a {type(key).__name__}; use an ECDSA or Ed25519 key")
    return key


def run_signing_key(out_dir: Path) -> PrivateKey:
    """The simulation's coordinator key in ``out_dir`` (generated on first use)."""
    path = Path(out_dir) / KEY_FILE
    if path.exists():
        return load_signing_key(path)
    from fedmi.server.deploy.certs import _write_private  # the CA key's writer (0600)

    key = ec.generate_private_key(ec.SECP256R1())
    _write_private(path, key)
    return key


def write_public_key(path: Path, key: PrivateKey) -> None:
    """The public half, PEM: what a site pins (``--coordinator``)."""
    path.write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )


def weights_bytes(arrays: ArrayRecord) -> bytes:
    """The federated weights as ``.npz`` bytes (name → array)."""
    buf = io.BytesIO()
    np.savez(buf, **{k: v.numpy() for k, v in arrays.items()})
    return buf.getvalue()


def ood_member(ood: FeatureDescription | None, report: dict) -> dict[str, bytes]:
    """The OOD reference member: the training data's feature description and the flagging
    distance of the report (``report["ood"]["threshold"]``); empty without either."""
    from fedmi.shared.ood import description_config

    threshold = ((report.get("ood") or {}).get("threshold") or {}).get("distance")
    if ood is None or threshold is None:
        return {}
    section = report["ood"]["threshold"]
    data = {
        **description_config(ood),
        "threshold_distance": float(threshold),
        "threshold_quantile": section.get("quantile"),
        "threshold_from": section.get("from"),
    }
    return {OOD: json.dumps(data).encode()}


def normative_member(model: NormativeModel | None) -> dict[str, bytes]:
    """The normative model member (``normative_model.json``); empty without a model."""
    return {} if model is None else {NORMATIVE: model.to_json().encode()}


def package_card(card: dict, extra: dict | None = None) -> dict:
    """The card as packaged: its operating point resolved (the default recorded as such)."""
    out = dict(card)
    threshold, source = operating_point(card)
    out["operating_point"] = {
        **(card.get("operating_point") or {}),
        "threshold": threshold,
        "source": source,
    }
    if extra:
        out.update(extra)
    return out


def write_model_package(
    out_dir: Path,
    card: dict,
    arrays: ArrayRecord,
    *,
    key: PrivateKey | None = None,
    extra_members: dict[str, bytes] | None = None,
) -> Path:
    """Write ``out_dir/model_package/<version>.fmp`` signed by ``key``.

    Parameters
    ----------
    out_dir
        The run folder.
    card
        The model card (:func:`fedmi.server.report.document.model_card`).
    arrays
        The final federated weights.
    key
        The signing key; by default the run folder's own (:func:`run_signing_key`).
    extra_members
        Further members (e.g. the OOD reference), name → bytes.

    Returns
    -------
    Path
        The package file; ``coordinator.pub`` is written beside the folder.
    """
    out_dir = Path(out_dir)
    key = run_signing_key(out_dir) if key is None else key
    write_public_key(out_dir / PUBLIC_FILE, key)
    card = package_card(card)
    members = {
        CARD: json.dumps(card, indent=2, sort_keys=True).encode(),
        WEIGHTS: weights_bytes(arrays),
        **(extra_members or {}),
    }
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    data, version = build_package(members, key, version_prefix=f"{card['task']}-{stamp}")
    folder = out_dir / PACKAGE_DIR
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{version}{SUFFIX}"
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)
    log.info("model package %s written (signed, key %s)", path.name, PUBLIC_FILE)
    return path


def sign_release(package: Path, run_dir: Path, key_file: Path) -> Path:
    """Re-sign a run's package with the coordinator's identity key (e.g. ``ca.key``).

    The package is first verified against the run folder's ``coordinator.pub``; its members
    are kept as they are and signed with ``key_file``. Writes
    ``RUN/model_package/release/<version>.fmp`` and ``RUN/model_package/release/coordinator.pub``.

    Raises
    ------
    PackageError
        The package does not verify against the run's key.
    ValueError
        ``key_file`` is not a usable private key.
    """
    run_dir = Path(run_dir)
    pub = load_public_key((run_dir / PUBLIC_FILE).read_bytes(), str(run_dir / PUBLIC_FILE))
    pkg = verify_package(Path(package).read_bytes(), pub)
    key = load_signing_key(key_file)
    prefix = pkg.version.rsplit("-", 1)[0]
    data, version = build_package(pkg.members, key, version_prefix=prefix)
    folder = run_dir / PACKAGE_DIR / "release"
    folder.mkdir(parents=True, exist_ok=True)
    write_public_key(folder / PUBLIC_FILE, key)
    path = folder / f"{version}{SUFFIX}"
    path.write_bytes(data)
    return path


def _cmd_package(args) -> int:
    import sys

    run_dir = Path(args.run_dir)
    found = sorted((run_dir / PACKAGE_DIR).glob(f"*{SUFFIX}"))
    if not found:
        print(f"fedmi-server package: no {SUFFIX} file in {run_dir / PACKAGE_DIR}", file=sys.stderr)
        return 2
    try:
        path = sign_release(found[-1], run_dir, args.key)
    except (PackageError, ValueError, OSError) as exc:
        print(f"fedmi-server package: {exc}", file=sys.stderr)
        return 2
    print(f"release {path} signed with {args.key}; the sites verify it with ca.crt")
    return 0


def add_package_command(sub) -> None:
    """``fedmi-server package --run-dir RUN --key CERTS/ca.key``."""
    p = sub.add_parser(
        "package", help="sign a run's model package with the federation's CA key for the sites"
    )
    p.add_argument("--run-dir", type=Path, required=True, help="the run's output folder")
    p.add_argument("--key", type=Path, required=True, help="the CA key (fedmi-server certs)")
    p.set_defaults(func=_cmd_package)
