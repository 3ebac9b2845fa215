"""fedmi installs as one namespace: ``fedmi.server`` etc., never a bare ``server``."""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FOLDERS = ("client", "server", "shared", "simulations")


def _pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def test_every_package_folder_is_listed_in_pyproject():
    listed = set(_pyproject()["tool"]["setuptools"]["packages"])
    on_disk = {
        "fedmi." + ".".join(p.parent.relative_to(ROOT).parts)
        for top in FOLDERS
        for p in (ROOT / top).rglob("__init__.py")
    }
    assert listed == on_disk


def test_package_dir_maps_each_folder_under_fedmi():
    mapping = _pyproject()["tool"]["setuptools"]["package-dir"]
    assert mapping == {f"fedmi.{f}": f for f in FOLDERS}


def test_entry_points_and_flower_components_use_the_namespace():
    doc = _pyproject()
    targets = [
        *doc["project"]["scripts"].values(),
        *doc["tool"]["flwr"]["app"]["components"].values(),
    ]
    assert targets and all(t.startswith("fedmi.") for t in targets)


def test_installed_fedmi_has_no_bare_top_level_packages(tmp_path):
    """Outside the checkout, ``import server`` fails and ``import fedmi.server`` works."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    code = (
        "import importlib.util as u, sys\n"
        "bare = [n for n in ('server', 'client', 'shared', 'simulations') if u.find_spec(n)]\n"
        "import fedmi.server, fedmi.client, fedmi.shared, fedmi.simulations\n"
        "print(bare)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
    failed = subprocess.run(
        [sys.executable, "-c", "import server"], cwd=tmp_path, env=env, capture_output=True
    )
    assert failed.returncode != 0


def test_the_command_lines_start_without_torch_or_flower(tmp_path):
    """``fedmi-site --help``, ``keygen`` and the config checks stay fast: the heavy libraries
    are imported by the commands that need them, not by the command-line modules."""
    code = (
        "import sys\n"
        "import fedmi.client.cli, fedmi.server.cli, fedmi.simulations.cli\n"
        "import fedmi.shared.run_config, fedmi.shared.methods\n"
        "print(sorted(m for m in ('torch', 'flwr', 'monai', 'opacus') if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
