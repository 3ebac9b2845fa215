"""``fedmi-site model export``: TorchScript / ONNX files that reproduce predict's probabilities."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from fedmi.client.cli import main
from fedmi.client.model import latest, load_verified, pull
from fedmi.client.predict import load_model
from fedmi.client.research_use import RESEARCH_USE
from fedmi.client.training.loop import predict
from fedmi.server.package import PUBLIC_FILE, write_model_package
from fedmi.shared.contract import array_record
from fedmi.shared.model import ARCHITECTURES, ModelSpec, build_model, federated_state_dict
from fedmi.shared.tasks import get_task
from tests.client.packages import test_card

# torch 2.13 deprecates torch.jit (trace, save, load) in favour of torch.export; it still works
pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit:DeprecationWarning")

TASK = "fdg-ad"
GRID = get_task(TASK).grid

try:
    import onnxruntime as ort
except ImportError:  # the `export` extra is not installed
    ort = None


def _site(root, arch: str):
    """A site that pulled a signed package of a ``arch`` network with non-trivial weights."""
    torch.manual_seed(7)
    model = build_model(ModelSpec(arch=arch))
    with torch.no_grad():
        for p in model.backbone.parameters():
            p.add_(0.05 * torch.randn_like(p))
    card = test_card(model, 0.37)
    run = root / f"run-{arch}"
    run.mkdir()
    path = write_model_package(run, card, array_record(federated_state_dict(model)))
    state = root / f"state-{arch}"
    pull(path, state, run / PUBLIC_FILE)
    return path, state


def _volumes(n: int, seed: int, tissue: dict[str, np.ndarray] | None) -> np.ndarray:
    """Random positive volumes, or brain-like ones (GM/WM/CSF with regional changes, noise)."""
    rng = np.random.default_rng(seed)
    shape = (n, 1, *GRID.shape)
    if tissue is None:
        return rng.uniform(0.1, 2.5, shape).astype(np.float32)
    base = 1.3 * tissue["gm"] + 0.45 * tissue["wm"] + 0.1 * tissue["csf"] + 0.05
    x = GRID.world_coordinates()
    out = []
    for _ in range(n):
        # a smooth regional change (e.g. a parietal / asymmetric hypometabolism) and noise
        field = 1.0 + 0.15 * rng.standard_normal() * np.tanh(x[0] / 30.0)
        field = field - 0.2 * rng.uniform() * np.exp(-((x[1] + 60.0) ** 2) / 800.0)
        v = base * field * (1.0 + 0.05 * rng.standard_normal(GRID.shape))
        out.append(v / np.mean(v[tissue["gm"] > 0.5]))
    return np.stack(out)[:, None].astype(np.float32)


@pytest.fixture(scope="module")
def tissue():
    from fedmi.simulations.phantom.basis import tissue

    return tissue(GRID)


@pytest.fixture(scope="module", params=ARCHITECTURES)
def exported(request, tmp_path_factory):
    """Both formats exported by the command line from one arch's verified package."""
    root = tmp_path_factory.mktemp(f"export-{request.param}")
    _, state = _site(root, request.param)
    files = {}
    for fmt in ("torchscript", "onnx"):
        if fmt == "onnx" and ort is None:
            continue
        out = root / f"model.{'pt' if fmt == 'torchscript' else 'onnx'}"
        assert (
            main(["model", "export", "--state-dir", str(state), "--format", fmt, "--out", str(out)])
            == 0
        )
        files[fmt] = out
    pkg = load_verified(latest(state), state)
    return request.param, pkg, load_model(pkg).model, files


def _run(fmt: str, path, x: np.ndarray) -> np.ndarray:
    if fmt == "torchscript":
        with torch.no_grad():
            return torch.jit.load(str(path)).eval()(torch.from_numpy(x)).numpy()
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: x})[0]


@pytest.mark.parametrize("fmt", ["torchscript", "onnx"])
def test_exported_file_gives_predicts_probabilities(exported, fmt, tissue):
    arch, _, model, files = exported
    if fmt not in files:
        pytest.skip("onnxruntime cannot be imported: install the `export` extra to check ONNX")
    for seed, batch in enumerate((1, 3)):
        for kind in (None, tissue):
            x = _volumes(batch, seed, kind)
            expected = predict(model, torch.from_numpy(x), device=torch.device("cpu"))
            logits = _run(fmt, files[fmt], x)
            assert logits.shape == (batch,) and logits.dtype == np.float32
            got = 1.0 / (1.0 + np.exp(-logits.astype(np.float64)))
            np.testing.assert_allclose(got, expected, rtol=0, atol=1e-5, err_msg=f"{arch} {fmt}")
    # the probabilities are not all the same (the check means something)
    assert np.ptp(predict(model, torch.from_numpy(_volumes(3, 9, tissue)))) > 1e-3


def test_sidecar_describes_the_release(exported):
    _, pkg, _, files = exported
    for fmt, path in files.items():
        meta = json.loads(path.with_name(path.name + ".json").read_text())
        assert meta["format"] == fmt and meta["research_use"] == RESEARCH_USE
        assert "research use only" in meta["research_use"].lower()
        assert meta["model"]["version"] == pkg.version
        assert meta["model"]["content_sha256"] == pkg.content_sha256
        assert meta["model"]["device_uid"] == pkg.device_uid
        assert meta["input"]["example_shape"] == [1, 1, *GRID.shape]
        assert "reference-normalised" in meta["input"]["meaning"]
        assert "sigmoid" in meta["output"]["meaning"]
        assert meta["operating_point"] == {"threshold": 0.37, "source": "model card"}
        assert meta["parity"]["max_abs_logit_difference"] <= 1e-5


def test_unverified_package_is_not_exported(tmp_path, capsys):
    path, state = _site(tmp_path, "regional")
    bad = tmp_path / "tampered.fmp"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 1
    bad.write_bytes(bytes(data))
    out = tmp_path / "model.pt"
    argv = ["model", "export", "--state-dir", str(state), "--format", "torchscript"]
    assert main([*argv, "--out", str(out), "--package", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "tampered.fmp" in err and "signature does not verify" in err
    assert not out.exists() and not (tmp_path / "model.pt.json").exists()


def test_unknown_format_is_refused(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["model", "export", "--state-dir", str(tmp_path), "--format", "tflite", "--out", "x"])
    assert exc.value.code == 2
    assert "invalid choice: 'tflite'" in capsys.readouterr().err


def test_onnx_without_its_packages_and_a_mismatch_write_nothing(tmp_path, monkeypatch, capsys):
    import sys

    import fedmi.client.export as export

    _, state = _site(tmp_path, "cnn")
    pkg = load_verified(latest(state), state)
    monkeypatch.setitem(sys.modules, "onnxscript", None)  # import fails
    argv = ["model", "export", "--state-dir", str(state), "--format", "onnx"]
    assert main([*argv, "--out", str(tmp_path / "m.onnx")]) == 2
    err = capsys.readouterr().err
    assert "onnxscript" in err and "fedmi[export]" in err and "torchscript" in err
    assert not list(tmp_path.glob("m.onnx*"))
    # a file that does not reproduce the network is removed
    monkeypatch.setattr(export, "check_parity", lambda *a: 0.5)
    with pytest.raises(export.ExportError, match="differ from the package's network by 0.5"):
        export.export_model(pkg, "torchscript", tmp_path / "m.pt")
    assert not list(tmp_path.glob("m.pt*"))
