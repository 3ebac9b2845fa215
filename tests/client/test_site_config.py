"""site.toml: only [site] is parsed; [truth] never is."""

from __future__ import annotations

from pathlib import Path

import pytest

from client.site_config import SiteConfigError, load_site_config


def test_reads_site_table_only(tmp_path: Path) -> None:
    (tmp_path / "site.toml").write_text(
        '# comment\n[site]\nsite-id = "site-b"\nrole = "holdout"\ntask = "amyloid"\n\n'
        "[truth]\nthis is = not [valid toml at all\n[truth.group-probs]\nCN = 0.2\n"
    )
    cfg = load_site_config(tmp_path)
    assert (cfg.site_id, cfg.role, cfg.task) == ("site-b", "holdout", "amyloid")


def test_defaults_without_file(tmp_path: Path) -> None:
    cfg = load_site_config(tmp_path)
    assert cfg.site_id == tmp_path.name and cfg.role == "train" and cfg.task is None


def test_bad_role(tmp_path: Path) -> None:
    (tmp_path / "site.toml").write_text('[site]\nrole = "boss"\n')
    with pytest.raises(SiteConfigError):
        load_site_config(tmp_path)
