"""A curious coordinator attacks a site through the real ClientApp, with DP off and on.

Each attack is first shown to work against a site with DP off (so the test can fail), then
run against the default site (DP on: query policy, budget, Gaussian mechanisms).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from flwr.app import Context, Message, RecordDict

from fedmi.client.app import build_client_app
from fedmi.client.data import site_data
from fedmi.client.privacy import release as release_module
from fedmi.client.site.settings import resolve_site
from fedmi.shared import contract
from fedmi.shared.instructions import ExternalInstruction, OodQuery
from fedmi.shared.model import build_model, federated_state_dict

TOLERANCE = 0.05  # a profile counts as recovered within 5 % relative L2 error


def _context(tiny_fdg, state, site: str, run_id: int, **node) -> Context:
    node_config = {"data-dir": str(tiny_fdg / site), "state-dir": str(state), "min-cell-count": 1}
    return Context(
        run_id=run_id,
        node_id=7,
        node_config={**node_config, **node},
        state=RecordDict(),
        run_config={},
    )


def _message(ins, weights) -> Message:
    content = RecordDict({contract.CONFIG: ins.to_record(), contract.ARRAYS: weights})
    return Message(content=content, dst_node_id=7, message_type=ins.message_type)


def _ood_attack(app, tiny_fdg, state, seeds, **node) -> tuple[int, int]:
    """Solve per-patient regional profiles from per-class sums over seeded train splits.

    The attacker is given every split's membership (more than a coordinator knows). Returns
    (replies released, patients whose profile was recovered).
    """
    site = resolve_site({"data-dir": str(tiny_fdg / "site-a"), "state-dir": str(state)}, {})
    model = build_model()
    weights = contract.array_record(federated_state_dict(model))
    with torch.no_grad():
        truth = model.eval().features(site_data(site, "fdg-ad", 0).x).double().numpy()
    rows, sums, released = [], [], 0
    for seed in seeds:
        reply = app(
            _message(OodQuery(task="fdg-ad", seed=seed), weights),
            _context(tiny_fdg, state, "site-a", 1, **node),
        )
        if reply.content[contract.SITE]["status"] != "ok":
            continue
        released += 1
        m = reply.content[contract.METRICS]
        data = site_data(site, "fdg-ad", seed)
        class_sums = np.asarray(m["ood-feat-sum"]).reshape(contract.OOD_CLASSES, -1)
        for c in range(contract.OOD_CLASSES):
            rows.append((~data.is_test) & (data.y.numpy() == c))
            sums.append(class_sums[c])
    if not rows:
        return released, 0
    solved, *_ = np.linalg.lstsq(np.asarray(rows, float), np.asarray(sums), rcond=None)
    errors = np.linalg.norm(solved - truth, axis=1) / np.linalg.norm(truth, axis=1)
    return released, int((errors < TOLERANCE).sum())


def test_ood_query_attack_recovers_no_patient(tiny_fdg, tmp_path, ingested, flower_identity):
    state_off, state_on = tmp_path / "off", tmp_path / "on"
    ingested(tiny_fdg / "site-a", state_off)
    ingested(tiny_fdg / "site-a", state_on)
    app = build_client_app()
    seeds = list(range(60))
    released, recovered = _ood_attack(app, tiny_fdg, state_off, seeds, dp="off")
    assert released == 60 and recovered >= 5  # the attack works on exact sums
    released, recovered = _ood_attack(app, tiny_fdg, state_on, seeds)
    assert released == 2  # the site's query policy: two query.ood replies per run
    assert recovered == 0


def _crafted_head(features: np.ndarray, target: int) -> np.ndarray:
    """Head weights that score the target scan near 1 and every other scan near 0."""
    w = features[target]
    dots = features @ w
    others = np.delete(dots, target)
    bias = -(dots[target] + others.max()) / 2
    scale = 50.0 / max(dots[target] - others.max(), 1e-6)
    return np.concatenate([w * scale, [bias * scale]])


def _label_attack(app, tiny_fdg, state, attempts: int, **node) -> tuple[int, list[tuple[int, int]]]:
    """Crafted final weights at the holdout; the label read off the top decile.

    Returns the releases obtained and, per release, (guessed label, true label) where the
    attacker's posterior (it knows the mechanism's noise) reached 0.95.
    """
    site = resolve_site({"data-dir": str(tiny_fdg / "site-c"), "state-dir": str(state)}, {})
    data = site_data(site, "fdg-ad", 0)
    model = build_model().eval()
    with torch.no_grad():
        feats = model.features(data.x).double().numpy()
    confident, released = [], 0
    for attempt in range(attempts):
        target = attempt % len(data)
        head = _crafted_head(feats, target)
        state_dict = federated_state_dict(model)
        state_dict["backbone.head.weight"] = torch.tensor(head[None, :-1], dtype=torch.float32)
        state_dict["backbone.head.bias"] = torch.tensor(head[-1:], dtype=torch.float32)
        ins = ExternalInstruction(task="fdg-ad", mc_passes=2)
        ctx = _context(tiny_fdg, state, "site-c", 100 + attempt, **node)  # a new run each time
        reply = app(_message(ins, contract.array_record(state_dict)), ctx)
        if reply.content[contract.SITE]["status"] != "ok":
            continue
        released += 1
        m = reply.content[contract.METRICS]
        top_pos, top_neg = sum(m["hist-pos"][90:]), sum(m["hist-neg"][90:])
        sd = 0.0 if node.get("dp") == "off" else _histogram_sd(node)
        guess = int(top_pos > top_neg)
        if sd == 0.0:
            confident.append((guess, int(data.y[target])))
            continue
        # log-likelihood ratio of "positive" (1 in hist-pos) against "negative" (1 in hist-neg)
        llr = ((top_pos - top_neg) * 2) / (2 * sd**2)
        if abs(llr) >= np.log(19):
            confident.append((guess, int(data.y[target])))
    return released, confident


def _histogram_sd(node: dict) -> float:
    """The histogram mechanism's noise sd at the holdout's default policy."""
    from fedmi.client.evaluation.external import extra_mechanisms
    from fedmi.client.evaluation.private import EVALUATION_MECHANISMS
    from fedmi.client.privacy.settings import PrivacySettings

    ins = ExternalInstruction(task="fdg-ad")
    mechanisms = EVALUATION_MECHANISMS | extra_mechanisms(ins, harmonized=False)
    multipliers = release_module.release_multipliers(
        PrivacySettings(), "holdout", ins.message_type, mechanisms
    )
    return multipliers["histogram"]


def test_crafted_weights_evaluation_attack_recovers_no_label(
    tiny_fdg, tmp_path, ingested, flower_identity, monkeypatch
):
    ingested(tiny_fdg / "site-c", tmp_path / "off")
    ingested(tiny_fdg / "site-c", tmp_path / "on")
    app = build_client_app()
    released, confident = _label_attack(app, tiny_fdg, tmp_path / "off", 6, dp="off")
    assert released == 6 and confident and all(g == t for g, t in confident)  # it works
    # DP on: reproducible noise for the test (the site draws it from the OS otherwise)
    seeds = iter(range(10_000))
    monkeypatch.setattr(release_module.secrets, "randbits", lambda bits: next(seeds))
    released, confident = _label_attack(app, tiny_fdg, tmp_path / "on", 397)
    assert released == 1  # one validation per run, and the budget is then spent
    assert confident == []


@pytest.mark.parametrize("attempts", [3])
def test_every_refusal_is_a_declared_reply(tiny_fdg, tmp_path, ingested, flower_identity, attempts):
    ingested(tiny_fdg / "site-c", tmp_path / "s")
    app = build_client_app()
    weights = contract.array_record(federated_state_dict(build_model()))
    statuses = []
    for _ in range(attempts):
        reply = app(
            _message(ExternalInstruction(task="fdg-ad", mc_passes=2), weights),
            _context(tiny_fdg, tmp_path / "s", "site-c", 5),
        )
        assert contract.check_reply(contract.EXTERNAL, reply.content) == []
        statuses.append(reply.content[contract.SITE]["status"])
    # the first is released (counts only when a noisy class falls below k), then refused
    assert statuses[0] in ("ok", "suppressed") and statuses[1:] == ["refused", "refused"]
