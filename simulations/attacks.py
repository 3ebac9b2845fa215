"""A curious coordinator's attacks on one site, played through the site's real ClientApp.

For evaluating a site's defences (tests/client/privacy/test_attacks.py and
``python3 -m benchmarks.bench_privacy_attacks``), on a site folder that has been ingested.
Both attacks give the attacker more than a coordinator has (the scans' true features, the
splits' membership) so that a failure is the defences' doing, not the attacker's ignorance:

* :func:`ood_profile_attack` asks ``query.ood`` with many seeds and solves the per-class
  embedding sums for each patient's regional profile (least squares over the splits);
* :func:`crafted_label_attack` sends final weights crafted to score one target scan near 1
  and every other near 0, a new run each time, and reads the target's label off the top
  decile of the released histograms, counting a label only at 95 % posterior confidence
  given the mechanism's noise.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from flwr.app import Context, Message, RecordDict

from fedmi.client.data import site_data
from fedmi.client.evaluation.external import extra_mechanisms
from fedmi.client.evaluation.private import EVALUATION_MECHANISMS
from fedmi.client.privacy.release import release_multipliers
from fedmi.client.privacy.settings import PrivacySettings
from fedmi.client.site.settings import resolve_site
from fedmi.shared import contract
from fedmi.shared.instructions import ExternalInstruction, OodQuery
from fedmi.shared.model import ModelSpec, build_model, federated_state_dict

#: a profile counts as recovered within this relative L2 error
TOLERANCE = 0.05
App = Callable[[Message, Context], Message]


@dataclass(frozen=True)
class AttackResult:
    """How many replies the site released and what the attacker got out of them."""

    attempts: int
    released: int
    recovered: int
    correct: int = 0


def site_context(site_dir: Path, state: Path, run_id: int, node: Mapping[str, object]) -> Context:
    """The Flower context of the site's SuperNode (``node``: extra node-config)."""
    node_config = {"data-dir": str(site_dir), "state-dir": str(state), **node}
    return Context(
        run_id=run_id, node_id=7, node_config=node_config, state=RecordDict(), run_config={}
    )


def instruction_message(ins, weights) -> Message:
    content = RecordDict({contract.CONFIG: ins.to_record(), contract.ARRAYS: weights})
    return Message(content=content, dst_node_id=7, message_type=ins.message_type)


def _features(site_dir: Path, state: Path, task: str, seed: int):
    site = resolve_site({"data-dir": str(site_dir), "state-dir": str(state)}, {})
    data = site_data(site, task, seed)
    model = build_model(ModelSpec(task=task)).eval()
    with torch.no_grad():
        return site, data, model, model.features(data.x).double().numpy()


def ood_profile_attack(
    app: App, site_dir: Path, state: Path, seeds, node: Mapping[str, object], task: str = "fdg-ad"
) -> AttackResult:
    """Regional profiles solved from ``query.ood`` sums over seeded splits (module docstring)."""
    site, _, model, truth = _features(site_dir, state, task, 0)
    weights = contract.array_record(federated_state_dict(model))
    rows, sums, released = [], [], 0
    for seed in seeds:
        ins = OodQuery(task=task, seed=seed)
        reply = app(instruction_message(ins, weights), site_context(site_dir, state, 1, node))
        if reply.content[contract.SITE]["status"] != "ok":
            continue
        released += 1
        data = site_data(site, task, seed)
        class_sums = np.asarray(reply.content[contract.METRICS]["ood-feat-sum"])
        class_sums = class_sums.reshape(contract.OOD_CLASSES, -1)
        for c in range(contract.OOD_CLASSES):
            rows.append((~data.is_test) & (data.y.numpy() == c))
            sums.append(class_sums[c])
    recovered = 0
    if rows:
        solved, *_ = np.linalg.lstsq(np.asarray(rows, float), np.asarray(sums), rcond=None)
        errors = np.linalg.norm(solved - truth, axis=1) / np.linalg.norm(truth, axis=1)
        recovered = int((errors < TOLERANCE).sum())
    return AttackResult(len(list(seeds)), released, recovered)


def crafted_head(features: np.ndarray, target: int) -> np.ndarray:
    """Regional head weights (and bias, last) scoring the target near 1, the others near 0."""
    w = features[target]
    dots = features @ w
    others = np.delete(dots, target)
    bias = -(dots[target] + others.max()) / 2
    scale = 50.0 / max(dots[target] - others.max(), 1e-6)
    return np.concatenate([w * scale, [bias * scale]])


def histogram_sd(settings: PrivacySettings, role: str, task: str = "fdg-ad") -> float:
    """The noise sd of one cell of a validation's histogram at the site's policy."""
    ins = ExternalInstruction(task=task)
    mechanisms = EVALUATION_MECHANISMS | extra_mechanisms(ins, harmonized=False)
    return release_multipliers(settings, role, ins.message_type, mechanisms)["histogram"]


def crafted_label_attack(
    app: App,
    site_dir: Path,
    state: Path,
    attempts: int,
    node: Mapping[str, object],
    task: str = "fdg-ad",
) -> AttackResult:
    """Labels read off crafted validations, a new run each attempt (module docstring)."""
    site, data, model, feats = _features(site_dir, state, task, 0)
    dp = str(node.get("dp", "on")) != "off"
    sd = histogram_sd(PrivacySettings(), site.role, task) if dp else 0.0
    released = recovered = correct = 0
    for attempt in range(attempts):
        target = attempt % len(data)
        head = crafted_head(feats, target)
        weights = federated_state_dict(model)
        weights["backbone.head.weight"] = torch.tensor(head[None, :-1], dtype=torch.float32)
        # the head reads f − centre (the task template's pattern): the crafted bias adds it back
        bias = head[-1] + float(head[:-1] @ model.backbone.centre.double().numpy())
        weights["backbone.head.bias"] = torch.tensor([bias], dtype=torch.float32)
        ins = ExternalInstruction(task=task, mc_passes=2)
        ctx = site_context(site_dir, state, 100 + attempt, node)  # a new run each time
        reply = app(instruction_message(ins, contract.array_record(weights)), ctx)
        if reply.content[contract.SITE]["status"] != "ok":
            continue
        released += 1
        m = reply.content[contract.METRICS]
        top_pos, top_neg = sum(m["hist-pos"][90:]), sum(m["hist-neg"][90:])
        # log-likelihood ratio "positive" (one count in hist-pos) against "negative"
        llr = np.inf * np.sign(top_pos - top_neg) if sd == 0 else (top_pos - top_neg) / sd**2
        if abs(llr) >= np.log(19):
            recovered += 1
            correct += int(int(top_pos > top_neg) == int(data.y[target]))
    return AttackResult(attempts, released, recovered, correct)
