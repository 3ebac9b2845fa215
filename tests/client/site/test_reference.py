"""docs/configuration.md is the schemas' own text, and its example is a valid site.toml."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

from fedmi.client.site.config import SITE_TOML
from fedmi.client.site.reference import configuration_reference, main
from fedmi.client.site.settings import NODE_CONFIG
from fedmi.shared.run_config import RUN_CONFIG

ROOT = Path(__file__).resolve().parents[3]
DOC = ROOT / "docs" / "configuration.md"


def test_committed_reference_equals_the_generated_text():
    assert DOC.read_text(encoding="utf-8") == configuration_reference(), (
        "regenerate: python -m fedmi.client.site.reference --write docs/configuration.md"
    )


def test_every_key_is_documented_once_in_its_configuration():
    text = configuration_reference()
    sections = dict(re.findall(r"^## (.+?)\n(.*?)(?=^## |\Z)", text, flags=re.M | re.S))
    site_keys = SITE_TOML.keys()
    expected = {
        "site.toml": site_keys,
        "node-config": [k for k in NODE_CONFIG.keys() if k not in site_keys],
        "run config": RUN_CONFIG.keys(),
    }
    for name, keys in expected.items():
        rows = re.findall(r"^\| `([a-z-]+)` \|", sections[name], flags=re.M)
        assert sorted(rows) == sorted(keys), name
    # node-config's site keys are named, not described again
    assert all(f"`{k}`" in sections["node-config"] for k in NODE_CONFIG.keys())


def test_the_example_site_toml_is_valid(tmp_path):
    example = re.search(r"```toml\n(.*?)```", configuration_reference(), flags=re.DOTALL)
    assert example is not None
    doc = tomllib.loads(example.group(1))
    assert SITE_TOML.validate(doc, "example")["site"]["site-id"] == "site-h07"


def test_the_entry_point_writes_the_file(tmp_path):
    assert main(["--write", str(tmp_path / "c.md")]) == 0
    assert (tmp_path / "c.md").read_text(encoding="utf-8") == configuration_reference()
