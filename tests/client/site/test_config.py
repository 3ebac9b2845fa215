"""site.toml: only [site] is parsed; [truth] never is."""

from __future__ import annotations

from pathlib import Path

import pytest

from fedmi.client.site.config import SiteConfigError, load_site_config


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


@pytest.mark.parametrize(
    ("text", "node_config", "run_config", "want_k", "want_role"),
    [
        ("", {}, {}, 10, "train"),  # the default rule
        ("min-cell-count = 5\n", {}, {}, 5, "train"),  # the site's own site.toml
        ("min-cell-count = 5\n", {"min-cell-count": 20}, {}, 20, "train"),  # node-config wins
        # a deployed site ignores the simulation-only keys a coordinator could send
        ("", {}, {"sim-min-cell-count": 1, "sim-role-overrides": "s=holdout"}, 10, "train"),
    ],
)
def test_min_cell_count_is_the_sites_own_setting(
    tmp_path: Path, text, node_config, run_config, want_k, want_role
) -> None:
    from fedmi.client.site.settings import resolve_site

    (tmp_path / "s").mkdir()
    (tmp_path / "s" / "site.toml").write_text(f'[site]\nsite-id = "s"\n{text}')
    nc = {"data-dir": str(tmp_path / "s"), "state-dir": str(tmp_path / "st"), **node_config}
    site = resolve_site(nc, run_config)
    assert (site.min_cell_count, site.role) == (want_k, want_role)


def test_simulation_role_overrides_and_min_cell_count(tmp_path: Path) -> None:
    from fedmi.client.site.settings import resolve_site

    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "site.toml").write_text(f'[site]\nsite-id = "{name}"\nrole = "train"\n')
    run_config = {
        "sim-data-root": str(tmp_path),
        "sim-role-overrides": "b=holdout",
        "sim-min-cell-count": 3,
    }
    a = resolve_site({"partition-id": 0}, run_config)
    b = resolve_site({"partition-id": 1}, run_config)
    assert (a.role, b.role, a.min_cell_count) == ("train", "holdout", 3)
    assert 'role = "train"' in (tmp_path / "b" / "site.toml").read_text()  # not edited
    with pytest.raises(SiteConfigError, match="sim-role-overrides"):
        resolve_site({"partition-id": 0}, {**run_config, "sim-role-overrides": "a=boss"})


def test_bad_min_cell_count(tmp_path: Path) -> None:
    (tmp_path / "site.toml").write_text("[site]\nmin-cell-count = 0\n")
    with pytest.raises(SiteConfigError, match="min-cell-count"):
        load_site_config(tmp_path)


def test_ingest_without_a_dicom_folder_names_the_folder_and_writes_nothing(tmp_path):
    import pytest

    from fedmi.client.ingest.pipeline import ingest_site
    from fedmi.client.site.config import SiteConfigError

    site, state = tmp_path / "site", tmp_path / "state"
    site.mkdir()
    with pytest.raises(SiteConfigError, match="dicom"):
        ingest_site(site, "fdg-ad", state)
    assert not state.exists()
