"""A curious coordinator attacks a site through the real ClientApp, with DP off and on.

Each attack (fedmi.simulations.attacks) is first shown to work against a site with DP off,
so the test can fail, then played against the default site (DP on: query policy, budget,
Gaussian mechanisms).
"""

from __future__ import annotations

from fedmi.client.app import build_client_app
from fedmi.client.privacy import release as release_module
from fedmi.shared import contract
from fedmi.shared.instructions import ExternalInstruction
from fedmi.shared.model import build_model, federated_state_dict
from fedmi.simulations.attacks import (
    crafted_label_attack,
    instruction_message,
    ood_profile_attack,
    site_context,
)

K1 = {"min-cell-count": 1}  # the attacker's best case: a site that releases any cell


def test_ood_query_attack_recovers_no_patient(tiny_fdg, tmp_path, ingested, flower_identity):
    site = tiny_fdg / "site-a"
    ingested(site, tmp_path / "off")
    ingested(site, tmp_path / "on")
    app = build_client_app()
    seeds = range(60)
    off = ood_profile_attack(app, site, tmp_path / "off", seeds, {**K1, "dp": "off"})
    assert off.released == 60 and off.recovered >= 5  # the attack works on exact sums
    on = ood_profile_attack(app, site, tmp_path / "on", seeds, K1)
    assert on.released == 2  # the site's query policy: two query.ood replies per run
    assert on.recovered == 0


def test_crafted_weights_evaluation_attack_recovers_no_label(
    tiny_fdg, tmp_path, ingested, flower_identity, monkeypatch
):
    site = tiny_fdg / "site-c"
    ingested(site, tmp_path / "off")
    ingested(site, tmp_path / "on")
    app = build_client_app()
    off = crafted_label_attack(app, site, tmp_path / "off", 6, {**K1, "dp": "off"})
    assert off.released == 6 and off.recovered == off.correct == 6  # it works
    # DP on: reproducible noise for the test (the site draws it from the OS otherwise)
    seeds = iter(range(10_000))
    monkeypatch.setattr(release_module.secrets, "randbits", lambda bits: next(seeds))
    on = crafted_label_attack(app, site, tmp_path / "on", 397, K1)
    assert on.released == 1  # one validation per run, and the budget is then spent
    assert on.recovered == 0


def test_every_refusal_is_a_declared_reply(tiny_fdg, tmp_path, ingested, flower_identity):
    site = tiny_fdg / "site-c"
    ingested(site, tmp_path / "s")
    app = build_client_app()
    weights = contract.array_record(federated_state_dict(build_model()))
    statuses = []
    for _ in range(3):
        msg = instruction_message(ExternalInstruction(task="fdg-ad", mc_passes=2), weights)
        reply = app(msg, site_context(site, tmp_path / "s", 5, K1))
        assert contract.check_reply(contract.EXTERNAL, reply.content) == []
        statuses.append(reply.content[contract.SITE]["status"])
    # the first is released (counts only when a noisy class falls below k), then refused
    assert statuses[0] in ("ok", "suppressed") and statuses[1:] == ["refused", "refused"]
