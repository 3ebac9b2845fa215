"""``fedmi-site model export``: the federation's verified network as TorchScript or ONNX.

The network is taken from the site's *verified* package exactly as ``fedmi-site predict``
takes it (:func:`fedmi.client.model.load_verified`, :func:`fedmi.client.predict.load_model`):
nothing is exported from an unverified package. It is exported in evaluation mode (dropout
off, identity site-local layers): the deterministic network whose ``sigmoid(logit)`` is the
probability predict reports (predict's MC-dropout interval is not part of the export).

* ``torchscript``: :func:`torch.jit.trace` on an input of the task's template-grid shape
  ``(1, 1, X, Y, Z)`` (:func:`torch.jit.script` if tracing fails), saved with
  :func:`torch.jit.save`; any batch size runs.
* ``onnx``: :func:`torch.onnx.export` with the ``torch.export`` based exporter
  (``dynamo=True``; needs the ``onnx`` and ``onnxscript`` packages: ``pip install
  "fedmi[export]"``), a dynamic batch axis and the default opset of the installed torch. The
  legacy TorchScript-based ONNX exporter is not used: it writes the regional model's
  ``index_add`` (atlas pooling) as a ScatterElements that overwrites instead of adding, which
  gives wrong logits.

Every exported file is loaded back and checked against the package's network on random
volumes at batch sizes 1 and 3 before it is kept (ONNX needs ``onnxruntime`` for that); a
file that does not reproduce the logits to :data:`PARITY_ATOL` is removed and the export
fails. Next to the file, ``FILE.json`` says what the file is: release version, content hash,
device UID, input and output, operating point, and that it is for research use only.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import sys
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from fedmi.shared.package import ModelPackage, PackageError

if TYPE_CHECKING:  # torch is imported where it is used: `fedmi-site --help` stays fast
    import torch

FORMATS = ("torchscript", "onnx")
#: Largest |logit| difference between the exported file and the package's network.
PARITY_ATOL = 1e-5
#: Batch sizes the exported file is checked at.
PARITY_BATCHES = (1, 3)
SIDECAR_SCHEMA_VERSION = 1
INPUT_NAME = "volume"
OUTPUT_NAME = "logit"
INSTALL_HINT = 'pip install "fedmi[export]" (onnx, onnxscript, onnxruntime)'


class ExportError(RuntimeError):
    """The network could not be exported, or the exported file does not match it."""


def sidecar_path(out: Path) -> Path:
    """``FILE.json`` beside the exported ``FILE``."""
    out = Path(out)
    return out.with_name(out.name + ".json")


def input_shape(pkg: ModelPackage) -> tuple[int, int, int, int, int]:
    """``(1, 1, *grid.shape)``: one volume on the task's template grid."""
    from fedmi.shared.tasks import get_task

    grid = get_task(str(pkg.card["task"])).grid
    return (1, 1, *(int(s) for s in grid.shape))


def _example(shape: tuple[int, ...], batch: int, seed: int) -> torch.Tensor:
    """Reference-normalised-looking random input (positive, around 1)."""
    import torch

    g = torch.Generator().manual_seed(seed)
    return 0.2 + 1.5 * torch.rand((batch, *shape[1:]), generator=g)


def _torchscript(model: torch.nn.Module, example: torch.Tensor, out: Path) -> str:
    import torch

    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        try:
            module = torch.jit.trace(model, example, check_trace=False)
            how = "torch.jit.trace"
        except Exception:  # noqa: BLE001 - any tracing failure: try scripting instead
            module = torch.jit.script(model)
            how = "torch.jit.script"
    torch.jit.save(module, str(out))
    return how


@contextlib.contextmanager
def _quiet_exporter():
    """The ONNX exporter's INFO/WARNING chatter (optimizer passes, missing torchvision) off."""
    names = ("torch.onnx", "onnxscript", "onnx_ir")
    levels = {n: logging.getLogger(n).level for n in names}
    for n in names:
        logging.getLogger(n).setLevel(logging.ERROR)
    try:
        yield
    finally:
        for n, level in levels.items():
            logging.getLogger(n).setLevel(level)


def _onnx(model: torch.nn.Module, example: torch.Tensor, out: Path) -> str:
    import torch

    try:
        import onnx  # noqa: F401 - the exporter needs both
        import onnxscript  # noqa: F401
    except ImportError as exc:
        raise ExportError(
            f"ONNX export needs the {exc.name} package: {INSTALL_HINT}; TorchScript "
            "(--format torchscript) needs nothing more"
        ) from None
    batch = torch.export.Dim("batch", min=1, max=4096)
    try:
        with warnings.catch_warnings(), _quiet_exporter():
            warnings.simplefilter("ignore")
            program = torch.onnx.export(
                model,
                (example,),
                dynamo=True,
                input_names=[INPUT_NAME],
                output_names=[OUTPUT_NAME],
                dynamic_shapes=({0: batch},),
                external_data=False,
                verbose=False,
            )
    except Exception as exc:  # noqa: BLE001 - the exporter's own failures vary by operator
        raise ExportError(
            f"the network cannot be exported to ONNX by this torch {torch.__version__} "
            f"({type(exc).__name__}: {str(exc)[:300]}); export it with --format torchscript"
        ) from None
    program.save(str(out))
    import onnx

    opsets = {o.domain or "ai.onnx": int(o.version) for o in onnx.load(str(out)).opset_import}
    return f"torch.onnx.export (dynamo), opset {opsets.get('ai.onnx', '?')}"


def _run_exported(fmt: str, path: Path, x: np.ndarray) -> np.ndarray:
    """The exported file's logits for ``x`` (loaded back from disk)."""
    if fmt == "torchscript":
        import torch

        module = torch.jit.load(str(path), map_location="cpu")
        module.eval()
        with torch.no_grad():
            return module(torch.from_numpy(x)).numpy()
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return np.asarray(session.run([OUTPUT_NAME], {INPUT_NAME: x})[0])


def check_parity(fmt: str, path: Path, model: torch.nn.Module, shape: tuple[int, ...]) -> float:
    """Largest |logit| difference of the exported file from ``model`` on random volumes."""
    import torch

    if fmt == "onnx":
        try:
            import onnxruntime  # noqa: F401
        except ImportError:
            raise ExportError(
                f"the ONNX file cannot be checked without onnxruntime: {INSTALL_HINT}"
            ) from None
    worst = 0.0
    for i, b in enumerate(PARITY_BATCHES):
        x = _example(shape, b, seed=i + 1)
        with torch.no_grad():
            expected = model(x).numpy()
        got = _run_exported(fmt, path, x.numpy())
        if got.shape != expected.shape:
            raise ExportError(
                f"the exported {fmt} file gives output shape {got.shape} for batch {b}, the "
                f"network {expected.shape}"
            )
        worst = max(worst, float(np.max(np.abs(got - expected))))
    return worst


def sidecar(pkg: ModelPackage, fmt: str, out: Path, shape: tuple[int, ...], **extra: Any) -> dict:
    """What ``FILE.json`` says about the exported file."""
    from fedmi.client.research_use import RESEARCH_USE
    from fedmi.shared.tasks import get_task

    card = pkg.card
    grid = get_task(str(card["task"])).grid
    threshold, source = pkg.threshold
    return {
        "schema_version": SIDECAR_SCHEMA_VERSION,
        "research_use": RESEARCH_USE,
        "file": Path(out).name,
        "format": fmt,
        "model": {
            "version": pkg.version,
            "content_sha256": pkg.content_sha256,
            "device_uid": pkg.device_uid,
            "key_id": pkg.header.get("key_id"),
            "task": card.get("task"),
            "architecture": card.get("architecture", {}).get("arch"),
            "classes": card.get("classes"),
        },
        "input": {
            "name": INPUT_NAME,
            "shape": ["batch", *shape[1:]],
            "example_shape": list(shape),
            "dtype": "float32",
            "meaning": (
                "one reference-normalised volume per scan on the task's template grid, as "
                "`fedmi-site ingest` caches it (PET: SUV divided by the reference region's "
                "mean; SPECT: counts divided by the reference region's mean), channel 1"
            ),
            "axes": "batch, channel, x, y, z (voxel (i, j, k) is at MNI RAS mm origin + (i, j, k) * spacing)",
            "grid": {
                "shape": list(grid.shape),
                "spacing_mm": list(grid.spacing),
                "origin_mm": list(grid.origin),
                "orientation": "RAS (MNI152); origin = centre of voxel (0, 0, 0)",
            },
        },
        "output": {
            "name": OUTPUT_NAME,
            "shape": ["batch"],
            "meaning": (
                "the logit of the positive class; sigmoid(logit) is the probability "
                "`fedmi-site predict` reports (without its MC-dropout interval)"
            ),
        },
        "operating_point": {"threshold": threshold, "source": source},
        "mode": "evaluation (dropout off, identity site-local harmonization layers)",
        **extra,
    }


def export_model(pkg: ModelPackage, fmt: str, out: Path) -> dict:
    """Export the verified package's network to ``out`` (and ``out.json``); the sidecar.

    Raises
    ------
    ExportError
        Unknown format, a missing optional package, an exporter failure, or an exported
        file that does not reproduce the network's logits (it is removed).
    PackageError
        The package's members are malformed (:func:`fedmi.client.predict.load_model`).
    """
    import torch

    from fedmi.client.predict import load_model

    if fmt not in FORMATS:
        raise ExportError(f"unknown export format {fmt!r}; choose one of {', '.join(FORMATS)}")
    model = load_model(pkg).model.to("cpu").eval()
    shape = input_shape(pkg)
    example = _example(shape, 1, seed=0)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    try:
        how = (
            _torchscript(model, example, tmp)
            if fmt == "torchscript"
            else _onnx(model, example, tmp)
        )
        diff = check_parity(fmt, tmp, model, shape)
        if not diff <= PARITY_ATOL:
            raise ExportError(
                f"the exported {fmt} file's logits differ from the package's network by "
                f"{diff:.3g} (> {PARITY_ATOL:g}): not written"
            )
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    os.replace(tmp, out)
    meta = sidecar(
        pkg,
        fmt,
        out,
        shape,
        exporter=how,
        torch_version=torch.__version__,
        parity={
            "batches": list(PARITY_BATCHES),
            "max_abs_logit_difference": diff,
            "tolerance": PARITY_ATOL,
        },
    )
    sidecar_path(out).write_text(json.dumps(meta, indent=1) + "\n")
    return meta


def _cmd_export(args: argparse.Namespace) -> int:
    from fedmi.client.model import latest, load_verified

    try:
        path = args.package or latest(args.state_dir)
        pkg = load_verified(path, args.state_dir)
        meta = export_model(pkg, args.format, args.out)
    except (PackageError, ExportError) as exc:
        print(f"fedmi-site model export: {exc}", file=sys.stderr)
        return 2
    print(
        f"exported model {meta['model']['version']} ({args.format}, {meta['exporter']}; "
        f"logits within {meta['parity']['max_abs_logit_difference']:.2g} of the package's "
        f"network) to {args.out}; description in {sidecar_path(args.out)}"
    )
    return 0


def add_export(msub: argparse._SubParsersAction) -> None:
    """``fedmi-site model export``."""
    p = msub.add_parser(
        "export",
        help="export the verified package's network to TorchScript or ONNX (research use)",
        description=(
            "Verify the model package against the pinned coordinator key (as predict does), "
            "then write its network in evaluation mode as TorchScript or ONNX to --out, with "
            "FILE.json describing input (reference-normalised volume on the task's template "
            "grid), output (logit; sigmoid = probability), the operating point and the release. "
            "The file is checked against the network before it is kept. ONNX needs "
            f"{INSTALL_HINT}."
        ),
    )
    p.add_argument("--state-dir", type=Path, required=True, help="the site's state folder")
    p.add_argument("--format", required=True, choices=FORMATS, help="export format")
    p.add_argument("--out", type=Path, required=True, help="the file to write")
    p.add_argument("--package", type=Path, help="a package file (default: newest kept)")
    p.set_defaults(handler=_cmd_export)
