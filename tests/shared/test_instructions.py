"""The instruction schema: every field round-trips through a ConfigRecord, nothing is guessed."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from flwr.app import ArrayRecord, ConfigRecord

from fedmi.server.history import RunHistory
from fedmi.server.strategy import make_strategy
from fedmi.shared import contract
from fedmi.shared.harmonization import ClassMoments, FeatureMoments
from fedmi.shared.instructions import (
    INSTRUCTIONS,
    EvaluateInstruction,
    ExternalInstruction,
    FeaturesQuery,
    InstructionError,
    NormativeEvaluation,
    NormativeQuery,
    OodQuery,
    PretrainInstruction,
    QueryInstruction,
    TrainInstruction,
    replace,
    round_seed,
)
from fedmi.shared.ood import FeatureDescription
from fedmi.shared.run_config import RunConfig

COMMON = {"task": "amyloid", "model": "cnn", "method": "fedmi", "seed": 7}


def _moments(count: int, shift: float) -> FeatureMoments:
    return FeatureMoments(count, np.array([0.5, -1.0, 2.0]) + shift, np.array([1.0, 0.25, 4.0]))


def _every_field() -> list:
    """One instruction per message type, every field away from its default."""
    ood = FeatureDescription(
        means=np.array([[0.0, 1.0], [np.nan, np.nan]]),
        covariance=np.array([[2.0, 0.5], [0.5, 1.0]]),
        count=40,
    )
    return [
        QueryInstruction(**COMMON),
        TrainInstruction(
            **COMMON,
            local_epochs=4,
            batch_size=8,
            learning_rate=0.05,
            optimizer="adamw",
            augment=True,
            num_server_rounds=9,
            server_round=3,
            proximal_mu=0.1,
            evaluate_received=True,
        ),
        EvaluateInstruction(**COMMON, server_round=5),
        ExternalInstruction(
            **COMMON,
            mc_passes=7,
            reference=_moments(30, 0.0),
            classes=ClassMoments(_moments(20, -0.5), _moments(10, 1.0)),
            ood=ood,
        ),
        FeaturesQuery(**COMMON),
        OodQuery(**COMMON),
        NormativeQuery(**COMMON, clip=0.4, centre=(0.1, -0.2, 0.0)),
        NormativeEvaluation(
            **COMMON,
            normative_model=_normative_json(True),
            normative_reference=_normative_json(False),
            threshold=0.3,
        ),
        PretrainInstruction(
            **COMMON,
            local_epochs=2,
            batch_size=6,
            learning_rate=0.002,
            optimizer="sgd",
            augment=False,
            mask_ratio=0.75,
            num_pretrain_rounds=4,
            server_round=2,
        ),
    ]


def _normative_json(adjust_age: bool) -> str:
    from fedmi.shared.normative import NormativeModel

    r = 3
    return NormativeModel(
        region_names=("a_L", "a_R", "b"),
        centre=np.zeros(r),
        intercept=np.array([0.1, 0.0, -0.1]),
        slopes=np.array([[-0.02, -0.01, 0.0] if adjust_age else [0.0] * r, [0.01] * r]),
        sigma2=np.full(r, 0.001),
        tau2=np.zeros(r),
        n_sites=2,
        n_scans=40.0,
        adjust_age=adjust_age,
    ).to_json()


def _same(a, b) -> bool:
    if dataclasses.is_dataclass(a):
        return type(a) is type(b) and all(
            _same(getattr(a, f.name), getattr(b, f.name)) for f in dataclasses.fields(a)
        )
    if isinstance(a, np.ndarray):
        return np.array_equal(a, b, equal_nan=True)
    return a == b


@pytest.mark.parametrize("ins", _every_field(), ids=lambda i: i.message_type)
def test_every_field_round_trips_through_a_config_record(ins):
    record = ins.to_record()
    assert isinstance(record, ConfigRecord)
    back = type(ins).from_record(ConfigRecord(dict(record)))
    assert _same(back, ins)
    assert INSTRUCTIONS[ins.message_type] is type(ins)


def test_every_message_type_of_the_contract_has_an_instruction():
    assert set(INSTRUCTIONS) == set(contract.REPLY_RECORDS)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"local-epochz": 2}, "undeclared key"),
        ({"learning-rate": "fast"}, "learning-rate must be a finite number"),
        ({"local-epochs": 1.5}, "local-epochs must be a whole number"),
        ({"augment": 1}, "augment must be true or false"),
        ({"local-epochs": 0}, "local-epochs=0 must be at least 1"),
        ({"optimizer": "adam"}, "optimizer='adam' is not one of sgd, adamw"),
        ({"method": "pooled"}, "method='pooled' is not one of"),
        ({"task": "ct"}, "task='ct' is not one of"),
        ({"learning-rate": float("nan")}, "learning-rate must be a finite number"),
    ],
)
def test_a_bad_value_is_refused_with_its_key(change, message):
    record = dict(TrainInstruction().to_record())
    record.update(change)
    with pytest.raises(InstructionError, match=message):
        TrainInstruction.from_record(ConfigRecord(record))


def test_a_missing_key_or_record_is_refused():
    record = dict(TrainInstruction().to_record())
    del record["num-server-rounds"]
    with pytest.raises(InstructionError, match="missing key.*num-server-rounds"):
        TrainInstruction.from_record(ConfigRecord(record))
    with pytest.raises(InstructionError, match="no config record"):
        QueryInstruction.from_record(None)


def test_malformed_feature_moments_or_ood_description_are_refused():
    good = dict(_every_field()[3].to_record())
    for key in ("feat-var-pos", "ood-covariance"):
        record = {k: v for k, v in good.items() if k != key}
        with pytest.raises(InstructionError, match="malformed"):
            ExternalInstruction.from_record(ConfigRecord(record))
    with pytest.raises(InstructionError, match="undeclared key"):
        EvaluateInstruction.from_record(ConfigRecord({**good}))  # external keys on evaluate


def test_the_seed_rule():
    assert round_seed(0, 3) == 3 and round_seed(2, 1) == 200_007
    ins = TrainInstruction(seed=2, server_round=1)
    assert ins.round_seed == round_seed(2, 1)
    assert replace(ins, server_round=4).round_seed == round_seed(2, 4)


def test_the_run_config_decides_the_train_instruction():
    cfg = RunConfig(model="cnn", num_server_rounds=4, learning_rate=0.01, seed=3)
    ins = TrainInstruction.from_run_config(cfg)
    assert (ins.model, ins.num_server_rounds, ins.learning_rate, ins.seed) == ("cnn", 4, 0.01, 3)
    assert (ins.optimizer, ins.local_epochs, ins.augment) == ("adamw", 1, True)  # cnn defaults
    regional = TrainInstruction.from_run_config(RunConfig())
    assert (regional.optimizer, regional.batch_size, regional.local_epochs) == ("sgd", 0, 3)


@pytest.mark.parametrize("method", ["fedavg", "fedprox", "fedadam"])
def test_what_flowers_strategies_send_parses(method):
    """Flower writes ``server-round`` (and FedProx ``proximal-mu``) into the train config."""
    cfg = RunConfig(method=method, proximal_mu=0.3)
    strategy = make_strategy(cfg, train_nodes=[1], history=RunHistory(), expected_arrays={})
    sent = TrainInstruction.from_run_config(cfg).to_record()

    class OneNode:
        def get_node_ids(self):
            return [1]

    from flwr.supercore.task_identity import TaskIdentity

    saved = (TaskIdentity._run_id, TaskIdentity._node_id, TaskIdentity._task_id)
    TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 1, 0, 1
    try:
        msgs = list(strategy.configure_train(2, ArrayRecord(), sent, OneNode()))
    finally:
        TaskIdentity._run_id, TaskIdentity._node_id, TaskIdentity._task_id = saved
    ins = TrainInstruction.from_record(msgs[0].content[contract.CONFIG])
    assert ins.server_round == 2
    assert ins.proximal_mu == (0.3 if method == "fedprox" else 0.0)


@pytest.mark.parametrize(
    ("record", "message"),
    [
        ({"clip": 0.0}, "clip=0.0 must lie in"),
        ({"clip": "wide"}, "clip must be a finite number"),
        ({"normative-centre": [0.0]}, "normative-centre must be 2"),
        ({"normative-centre": [0.0, float("nan")]}, "normative-centre must be 2"),
        ({"normative-centre": "0,0"}, "normative-centre is a list"),
        ({"normative-centr": [0.0, 0.0]}, "undeclared key"),
    ],
)
def test_a_bad_normative_query_is_refused_with_its_key(record, message):
    good = dict(NormativeQuery().to_record())
    with pytest.raises(InstructionError, match=message):
        NormativeQuery.from_record(ConfigRecord({**good, **record}))


def test_a_malformed_normative_model_is_refused_before_any_scoring():
    good = dict(next(i for i in _every_field() if isinstance(i, NormativeEvaluation)).to_record())
    for key, value, message in (
        ("normative-model", "not json", "normative-model: normative model is not JSON"),
        ("normative-reference", "{}", "normative-reference: normative model keys"),
        ("threshold", 1.5, "threshold=1.5 must lie in"),
    ):
        with pytest.raises(InstructionError, match=message):
            NormativeEvaluation.from_record(ConfigRecord({**good, key: value}))


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"mask-ratio": 1.0}, "mask-ratio=1.0 must lie in"),
        ({"mask-ratio": "most"}, "mask-ratio must be a finite number"),
        ({"num-pretrain-rounds": 0}, "num-pretrain-rounds=0 must be at least 1"),
        ({"server-round": 0}, "server-round=0 must be at least 1"),
        ({"model": "regional"}, "pretraining needs 'cnn'"),
        ({"label-column": "dx"}, "undeclared key"),
    ],
)
def test_a_bad_pretrain_instruction_is_refused_with_its_key(change, message):
    record = dict(PretrainInstruction(model="cnn").to_record())
    record.update(change)
    with pytest.raises(InstructionError, match=message):
        PretrainInstruction.from_record(ConfigRecord(record))


def test_the_run_config_decides_the_pretrain_instruction():
    cfg = RunConfig(
        model="cnn", seed=3, pretrain_rounds=5, pretrain_epochs=2, pretrain_mask_ratio=0.5
    )
    ins = PretrainInstruction.from_run_config(cfg, server_round=4)
    assert (ins.local_epochs, ins.mask_ratio, ins.num_pretrain_rounds) == (2, 0.5, 5)
    assert (ins.batch_size, ins.optimizer, ins.server_round, ins.seed) == (16, "adamw", 4, 3)
    # its stream differs from every training round's
    train_seeds = {round_seed(3, r) for r in range(0, 1000)}
    assert ins.round_seed not in train_seeds
