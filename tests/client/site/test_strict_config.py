"""site.toml and node-config are strict: a typo stops the site with the file, key and close match."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from fedmi.client import cli as site_cli
from fedmi.client.privacy.settings import PrivacyConfigError, resolve_privacy
from fedmi.client.site.config import SiteConfigError, load_site_config, read_site_toml
from fedmi.client.site.settings import NODE_CONFIG, resolve_site
from fedmi.shared.config_schema import ConfigError

GOOD_SITE = '[site]\nsite-id = "h1"\nrole = "train"\n'


def _site(tmp_path: Path, text: str) -> Path:
    site = tmp_path / "site"
    site.mkdir(exist_ok=True)
    (site / "site.toml").write_text(text)
    return site


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            GOOD_SITE + "[privacy]\nepsilom = 1\n",
            r"`epsilom` is not a setting of \[privacy\]; did you mean `epsilon`\?$",
        ),
        (
            GOOD_SITE + "[privacy]\nepsilon_budget = 1\n",
            r"`epsilon_budget` is not a setting of \[privacy\]; did you mean `epsilon`\?$",
        ),
        (
            GOOD_SITE + "[privacy]\nepsilon-budget = 1\n",
            r"`epsilon-budget` is not a setting of \[privacy\]; did you mean `epsilon`\?$",
        ),
        (
            '[Site]\nrole = "holdout"\n',
            r"\[Site\] is not a table of site\.toml \(its tables: \[site\], \[privacy\]\); "
            r"did you mean \[site\]\?$",
        ),
        ('role = "holdout"\n', r"`role` belongs in \[site\], not at the top level$"),
        (
            GOOD_SITE + '[privacy]\nepsilon = "high"\n',
            r"\[privacy\] `epsilon` must be a number \(greater than 0\), not 'high'$",
        ),
        (
            GOOD_SITE + "[privacy]\ndelta = 2\n",
            r"\[privacy\] `delta` must be a number \(greater than 0 and less than 1\), not 2$",
        ),
        (
            '[site]\nsite_id = "h1"\n',
            r"`site_id` is not a setting of \[site\]; did you mean `site-id`\?$",
        ),
        ("[site]\nepsilon = 3\n", r"`epsilon` belongs in \[privacy\], not in \[site\]$"),
        (
            '[privacy]\naccountant = "gdp"\n',
            r'\[privacy\] `accountant` must be one of "rdp", "prv"',
        ),
        ('[privacy]\ndp = "maybe"\n', r'\[privacy\] `dp` must be "on" or "off"'),
        (
            GOOD_SITE + "[privacy]\npretrain-share = 0\n",
            r"\[privacy\] `pretrain-share` must be a number \(greater than 0 and at most 1\), "
            r"not 0$",
        ),
        (
            GOOD_SITE + "[privacy]\npretrain_share = 0.5\n",
            r"`pretrain_share` is not a setting of \[privacy\]; did you mean `pretrain-share`\?$",
        ),
        ('[site]\ntask = "fdg"\n', r'\[site\] `task` must be one of "fdg-ad"'),
        ("[site\nrole = 1\n", r"not valid TOML"),
    ],
)
def test_site_toml_mistakes_name_the_file_the_key_and_the_close_match(tmp_path, text, message):
    site = _site(tmp_path, text)
    path = re.escape(str(site / "site.toml"))
    with pytest.raises(SiteConfigError, match=f"^{path}: {message}"):
        load_site_config(site)
    # every reader of site.toml sees the same error (the privacy part too)
    with pytest.raises(ConfigError, match=message):
        resolve_site({"data-dir": str(site), "state-dir": str(tmp_path / "state")}, {})


def test_truth_tables_are_cut_before_parsing_and_privacy_is_typed(tmp_path):
    site = _site(
        tmp_path,
        GOOD_SITE
        + '[truth]\nbroken = [ "never parsed\n[truth.group-probs]\nCN = 0.2\n'
        + '[privacy]\ndp = "off"\nepsilon = 3\naccountant = "prv"\n',
    )
    got = read_site_toml(site)
    assert got == {
        "site": {"site-id": "h1", "role": "train"},
        "privacy": {"dp": False, "epsilon": 3.0, "accountant": "prv"},
    }
    assert isinstance(got["privacy"]["epsilon"], float)


@pytest.mark.parametrize(
    ("node", "message"),
    [
        (
            {"epsilon-budget": 3.0},
            r"^node-config: `epsilon-budget` is not a node-config setting; did you mean `epsilon`\?$",
        ),
        (
            {"dp-accountant": "prv"},
            r"^node-config: `dp-accountant` is not a node-config setting; "
            r"did you mean `accountant`\?$",
        ),
        (
            {"state_dir": "/x"},
            r"`state_dir` is not a node-config setting; did you mean `state-dir`\?$",
        ),
        ({"colour": "blue"}, r"^node-config: `colour` is not a node-config setting$"),
        ({"min-cell-count": "5"}, r"`min-cell-count` must be a whole number \(at least 1\)"),
        ({"role": "boss"}, r'`role` must be one of "train", "holdout"'),
    ],
)
def test_node_config_is_strict_with_site_toml_names(tmp_path, node, message):
    site = _site(tmp_path, GOOD_SITE)
    nc = {"data-dir": str(site), "state-dir": str(tmp_path / "state"), **node}
    with pytest.raises(SiteConfigError, match=message):
        resolve_site(nc, {})


def test_node_config_takes_site_toml_keys_and_flower_simulation_keys(tmp_path):
    site = _site(tmp_path, GOOD_SITE + "[privacy]\nepsilon = 5.0\n")
    nc = {"data-dir": str(site), "state-dir": str(tmp_path / "st")}
    node = {**nc, "epsilon": 2, "accountant": "prv", "max-grad-norm": 0.5, "site-id": "x"}
    settings = resolve_site(node, {})
    privacy = resolve_privacy(settings, node, {})
    assert settings.site_id == "x"
    assert (privacy.epsilon, privacy.accountant, privacy.max_grad_norm) == (2.0, "prv", 0.5)
    assert resolve_privacy(settings, nc, {}).epsilon == 5.0  # else the site.toml value
    with pytest.raises(PrivacyConfigError, match="did you mean `epsilon`"):
        resolve_privacy(settings, {**nc, "epsilon-budget": 2}, {})
    assert NODE_CONFIG.validate({"partition-id": 0, "num-partitions": 3}, "node-config") == {
        "partition-id": 0,
        "num-partitions": 3,
    }
    sim = {"sim-data-root": str(tmp_path), "sim-min-cell-count": "2"}
    with pytest.raises(SiteConfigError, match=r"^run config: `sim-min-cell-count` must be"):
        resolve_site({"partition-id": 0, "num-partitions": 1}, sim)


def test_site_check_reports_a_config_problem_in_one_line(tmp_path, capsys):
    site = _site(tmp_path, GOOD_SITE + "[privacy]\nepsilom = 1\n")
    (site / "dicom").mkdir()
    state = tmp_path / "state"
    code = site_cli.main(
        ["check", "--site-dir", str(site), "--task", "fdg-ad", "--state-dir", str(state)]
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1, err
    assert re.fullmatch(
        rf"fedmi-site check: {re.escape(str(site / 'site.toml'))}: `epsilom` is not a "
        r"setting of \[privacy\]; did you mean `epsilon`\?",
        err[0],
    )
    assert not state.exists()  # nothing ingested


def test_the_client_app_replies_error_and_logs_a_bad_config(flower_identity, tmp_path, caplog):
    from flwr.app import ConfigRecord, Context, Message, RecordDict

    from fedmi.client.app import build_client_app
    from fedmi.shared import contract

    site = _site(tmp_path, GOOD_SITE + "[privacy]\nepsilom = 1\n")
    node_config = {"data-dir": str(site), "state-dir": str(tmp_path / "state")}
    context = Context(
        run_id=1, node_id=7, node_config=node_config, state=RecordDict(), run_config={}
    )
    content = RecordDict({contract.CONFIG: ConfigRecord({"task": "fdg-ad", "seed": 0})})
    query = Message(content=content, dst_node_id=7, message_type=contract.QUERY)
    with caplog.at_level("ERROR"):
        reply = build_client_app()(query, context)
    assert contract.check_reply(contract.QUERY, reply.content) == []
    assert reply.content[contract.SITE]["status"] == "error"
    assert "`epsilom` is not a setting of [privacy]; did you mean `epsilon`?" in caplog.text
    assert "epsilom" not in str(dict(reply.content[contract.SITE]))  # the reason stays here
    assert not (tmp_path / "state").exists()
