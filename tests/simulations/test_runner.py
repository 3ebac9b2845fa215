"""The one-machine runner's checks before Flower starts."""

from __future__ import annotations

import numpy as np
import pytest

from fedmi.server.federation import resume
from fedmi.server.federation.run import array_shapes, model_arrays
from fedmi.server.history import RunHistory
from fedmi.server.report.document import save_arrays
from fedmi.server.strategy import make_strategy
from fedmi.shared import contract
from fedmi.shared.run_config import RunConfig
from fedmi.simulations import federated


def test_a_run_folder_of_another_model_fails_before_flower_starts(tmp_path, monkeypatch):
    """A run folder whose checkpoint holds other weights (an older fedmi, another atlas) is
    refused with the fix, before any simulation process starts, and is left as it was."""

    def no_simulation(*_a, **_k):
        raise AssertionError("the simulation must not start")

    monkeypatch.setattr(federated, "run_isolated", no_simulation)
    cfg = RunConfig()
    old = contract.array_record({"backbone.head.weight": np.zeros((1, 151), np.float32)})
    history = RunHistory()
    strategy = make_strategy(cfg, train_nodes={}, history=history, expected_arrays={})
    save_arrays(resume.checkpoint_path(tmp_path, 2), old)
    resume.save_resume_point(tmp_path, cfg, 2, strategy, history)
    before = sorted(p.name for p in tmp_path.rglob("*"))
    with pytest.raises(ValueError, match="another model.*backbone.head.weight.*new out-dir"):
        federated.run_federated(cfg, [], tmp_path / "data", tmp_path)
    assert sorted(p.name for p in tmp_path.rglob("*")) == before
    # the current model's own checkpoint is accepted
    save_arrays(resume.checkpoint_path(tmp_path, 2), model_arrays(cfg))
    point = resume.load_resume_point(tmp_path, cfg, array_shapes(model_arrays(cfg)))
    assert point is not None and point.last_round == 2
