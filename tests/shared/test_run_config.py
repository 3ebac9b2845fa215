import tomllib
from pathlib import Path

import pytest

from fedmi.shared.config_schema import ConfigError
from fedmi.shared.run_config import RUN_CONFIG, RunConfig, RunConfigError

ROOT = Path(__file__).resolve().parents[2]


def test_pyproject_run_config_matches_the_dataclass_defaults():
    table = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["flwr"]["app"]["config"]
    defaults = RunConfig().as_dict()
    for key, value in defaults.items():
        assert key in table, f"{key} missing from [tool.flwr.app.config]"
        assert table[key] == value, key
    assert RunConfig.from_mapping(table) == RunConfig()
    # every key of the table is declared (and nothing else): Flower passes them all
    assert sorted(table) == sorted(RUN_CONFIG.keys()) == sorted(defaults)


@pytest.mark.parametrize(
    ("values", "needle"),
    [
        ({"task": "fdg"}, "task"),
        ({"method": "fedsgd"}, "method"),
        ({"num-server-rounds": 0}, "num-server-rounds"),
        ({"learning-rate": "fast"}, "learning-rate"),
        ({"batch-size": -1}, "batch-size"),
        ({"local-epochs": -2}, "local-epochs"),
        ({"adaptation": "no"}, "adaptation"),
        ({"adaptation": False}, "adaptation"),
    ],
)
def test_bad_values_name_the_key(values, needle):
    with pytest.raises(RunConfigError, match=needle):
        RunConfig.from_mapping(values)


def test_model_defaults_fill_settings_left_at_zero():
    regional = RunConfig()  # the default model
    assert (regional.effective_batch_size, regional.effective_local_epochs) == (0, 3)
    assert (regional.effective_optimizer, regional.effective_learning_rate) == ("sgd", 3.0)
    cnn = RunConfig(model="cnn")
    assert (cnn.effective_batch_size, cnn.effective_local_epochs) == (16, 1)
    chosen = RunConfig.from_mapping({"batch-size": 8, "local-epochs": 2})
    assert (chosen.effective_batch_size, chosen.effective_local_epochs) == (8, 2)


@pytest.mark.parametrize(
    ("values", "message"),
    [
        (
            {"modle": "cnn"},
            r"^run config: `modle` is not a run config setting; did you mean `model`\?$",
        ),
        ({"num-server-rounds": "6"}, r"`num-server-rounds` must be a whole number .*, not '6'$"),
        ({"learning-rate": True}, r"`learning-rate` must be a number"),
        ({"round-timeout": 0}, r"`round-timeout` must be a number \(greater than 0\), not 0$"),
        ({"proximal-mu": -1.0}, r"`proximal-mu` must be a number \(at least 0\)"),
        ({"sim-default-dp": "false"}, r'`sim-default-dp` must be one of "", "on", "off"'),
        ({"sim-role-overrides": "site-b=boss"}, r"`sim-role-overrides` must list site-id=role"),
        ({"report-prevalences": "0.05,2"}, r"`report-prevalences` must list numbers between 0"),
        ({"epsilon-budget": 3}, r"`epsilon-budget` is not a run config setting$"),
    ],
)
def test_strict_run_config_names_the_key_and_the_close_match(values, message):
    with pytest.raises(RunConfigError, match=message):
        RunConfig.from_mapping(values)


def test_the_source_is_named_and_the_error_is_a_config_error():
    with pytest.raises(ConfigError, match=r"^--run-config: `min-node` .*did you mean `min-nodes`"):
        RunConfig.from_mapping({"min-node": 3}, source="--run-config")
    assert issubclass(RunConfigError, ValueError)


def test_simulation_keys_are_typed_settings_and_ints_stand_for_floats():
    cfg = RunConfig.from_mapping(
        {"sim-default-epsilon": 3, "sim-min-cell-count": 2, "client-threads": 2, "node-wait": 5}
    )
    assert (cfg.sim_default_epsilon, cfg.sim_min_cell_count, cfg.client_threads) == (3.0, 2, 2)
    assert isinstance(cfg.node_wait, float) and cfg.as_dict()["sim-default-epsilon"] == 3.0
    with pytest.raises(RunConfigError, match="report-prevalences"):
        RunConfig(report_prevalences="half").validate()


@pytest.mark.parametrize(
    ("values", "key"),
    [
        ({"normative-model": "yes"}, "normative-model"),
        ({"normative-clip": 0.0}, "normative-clip"),
        ({"normative-clip": "wide"}, "normative-clip"),
        ({"normative-modle": "on"}, "normative-model"),  # a typo names the close match
    ],
)
def test_a_bad_normative_setting_stops_with_its_key(values, key):
    from fedmi.shared.run_config import RunConfig, RunConfigError

    with pytest.raises(RunConfigError, match=key):
        RunConfig.from_mapping(values)


@pytest.mark.parametrize(
    ("values", "key"),
    [
        ({"pretrain-round": 2, "model": "cnn"}, "did you mean `pretrain-rounds`"),  # a typo
        ({"pretrain-rounds": "2", "model": "cnn"}, "`pretrain-rounds` must be a whole number"),
        ({"pretrain-rounds": -1, "model": "cnn"}, "`pretrain-rounds` must be a whole number"),
        ({"pretrain-epochs": 0, "model": "cnn"}, "`pretrain-epochs`"),
        ({"pretrain-mask-ratio": 1.0, "model": "cnn"}, "`pretrain-mask-ratio`"),
        ({"pretrain-mask-ratio": "high", "model": "cnn"}, "`pretrain-mask-ratio`"),
        ({"pretrain-holdouts": 1, "model": "cnn"}, "`pretrain-holdouts` must be"),
        # combinations: the regional model has no encoder; fedmi's local layers need groups
        ({"pretrain-rounds": 2}, r"`pretrain-rounds` = 2 needs `model` = \"cnn\""),
        ({"pretrain-rounds": 1, "model": "regional"}, "`pretrain-rounds` = 1 needs `model`"),
        (
            {"pretrain-rounds": 1, "model": "cnn", "method": "fedmi"},
            "`pretrain-rounds` = 1 is not available with `method` = 'fedmi'",
        ),
        # the linear probe: typed, only after pretraining, at most every training round
        ({"linear-probe-round": 2}, "did you mean `linear-probe-rounds`"),
        ({"linear-probe-rounds": -1}, "`linear-probe-rounds` must be a whole number"),
        ({"linear-probe-rounds": 1.0}, "`linear-probe-rounds` must be a whole number"),
        ({"linear-probe-rounds": 2, "model": "cnn"}, "`linear-probe-rounds` = 2 needs `pretrain"),
        (
            {"linear-probe-rounds": 7, "model": "cnn", "pretrain-rounds": 1},
            "`linear-probe-rounds` = 7 exceeds `num-server-rounds` = 6",
        ),
    ],
)
def test_a_bad_pretraining_setting_stops_with_its_key(values, key):
    with pytest.raises(RunConfigError, match=key):
        RunConfig.from_mapping(values, source="--config")


def test_pretraining_settings_parse_and_default_off():
    assert RunConfig().pretrain_rounds == 0 and not RunConfig().pretrains
    cfg = RunConfig.from_mapping(
        {"model": "cnn", "pretrain-rounds": 3, "pretrain-holdouts": "off", "pretrain-epochs": 2}
    )
    assert cfg.pretrains and cfg.pretrain_rounds == 3 and cfg.pretrain_holdouts is False
    with pytest.raises(RunConfigError, match="pretrain-rounds"):
        RunConfig(pretrain_rounds=1).validate()  # the dataclass door checks it too


def test_the_linear_probe_reaches_the_train_instruction():
    from fedmi.shared.instructions import TrainInstruction

    cfg = RunConfig.from_mapping(
        {"model": "cnn", "pretrain-rounds": 2, "linear-probe-rounds": 6, "num-server-rounds": 6}
    )
    assert cfg.linear_probe_rounds == 6 and RunConfig().linear_probe_rounds == 0
    ins = TrainInstruction.from_run_config(cfg, server_round=6)
    assert ins.linear_probe_rounds == 6 and ins.linear_probe
    assert not TrainInstruction.from_run_config(RunConfig(), server_round=1).linear_probe
