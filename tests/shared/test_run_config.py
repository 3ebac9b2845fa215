import tomllib
from pathlib import Path

import pytest

from fedmi.shared.run_config import RunConfig, RunConfigError

ROOT = Path(__file__).resolve().parents[2]


def test_pyproject_run_config_matches_the_dataclass_defaults():
    table = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["flwr"]["app"]["config"]
    defaults = RunConfig().as_dict()
    for key, value in defaults.items():
        assert key in table, f"{key} missing from [tool.flwr.app.config]"
        assert table[key] == value, key
    assert RunConfig.from_mapping(table) == RunConfig()


@pytest.mark.parametrize(
    ("values", "needle"),
    [
        ({"task": "fdg"}, "task"),
        ({"method": "fedsgd"}, "method"),
        ({"num-server-rounds": 0}, "num-server-rounds"),
        ({"learning-rate": "fast"}, "learning-rate"),
        ({"batch-size": -1}, "batch-size"),
        ({"local-epochs": -2}, "local-epochs"),
    ],
)
def test_bad_values_name_the_key(values, needle):
    with pytest.raises(RunConfigError, match=needle):
        RunConfig.from_mapping(values)


def test_model_defaults_fill_settings_left_at_zero():
    regional = RunConfig()  # the default model
    assert (regional.effective_batch_size, regional.effective_local_epochs) == (0, 3)
    assert (regional.effective_optimizer, regional.effective_learning_rate) == ("sgd", 0.6)
    cnn = RunConfig(model="cnn")
    assert (cnn.effective_batch_size, cnn.effective_local_epochs) == (16, 1)
    chosen = RunConfig.from_mapping({"batch-size": 8, "local-epochs": 2})
    assert (chosen.effective_batch_size, chosen.effective_local_epochs) == (8, 2)
