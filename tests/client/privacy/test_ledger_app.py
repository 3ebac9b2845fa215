"""The ledger's integrity and the site's private files, through the real ClientApp.

A deployed site (node-config data-dir/state-dir) and a simulated one (partition-id and the
runner's sim-* keys) ingest, train one DP round with local harmonization layers, and then:
every folder fedmi created is 0700 and every file 0600; a ledger edited with a recomputed
plain checksum, or opened by a site whose id differs, refuses the round untrained.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import torch
from flwr.app import Context, Message, RecordDict

from fedmi.client.app import build_client_app
from fedmi.client.cli import main as site_cli
from fedmi.client.ingest.pipeline import ingest_site
from fedmi.client.privacy.ledger import LEDGER_FILE
from fedmi.client.privacy.seal import SECRET_FILE
from fedmi.client.replies import expected_arrays
from fedmi.client.site.settings import resolve_site
from fedmi.shared import contract
from fedmi.shared.harmonization import build_method_model
from fedmi.shared.instructions import TrainInstruction
from fedmi.shared.model import federated_state_dict

METHOD = "fedmi"  # trains site-local layers too: the harmonization state is written
EXPECTED = expected_arrays(build_method_model(METHOD))


def _train(server_round: int) -> Message:
    torch.manual_seed(0)
    ins = TrainInstruction(
        task="fdg-ad",
        method=METHOD,
        local_epochs=1,
        batch_size=4,
        server_round=server_round,
        num_server_rounds=3,
    )
    content = RecordDict(
        {
            contract.CONFIG: ins.to_record(),
            contract.ARRAYS: contract.array_record(
                federated_state_dict(build_method_model(METHOD))
            ),
        }
    )
    return Message(content=content, dst_node_id=7, message_type=contract.TRAIN)


def _context(node_config: dict) -> Context:
    return Context(run_id=11, node_id=7, node_config=node_config, state=RecordDict(), run_config={})


def _status(reply: Message) -> str:
    assert contract.check_reply(contract.TRAIN, reply.content, EXPECTED) == []
    return reply.content[contract.SITE]["status"]


def _assert_private(*roots: Path) -> None:
    """Every folder under (and including) ``roots`` is 0700, every file 0600."""
    seen = set()
    for root in roots:
        assert root.stat().st_mode & 0o777 == 0o700, root
        for folder, dirs, files in os.walk(root):
            for name in dirs:
                assert (Path(folder) / name).stat().st_mode & 0o777 == 0o700, name
            for name in files:
                assert (Path(folder) / name).stat().st_mode & 0o777 == 0o600, name
                seen.add(name)
    assert {LEDGER_FILE, SECRET_FILE, "ingest_report.json", "fdg-ad-fedmi.pt"} <= seen


def test_deployed_site_files_are_private_and_a_tampered_ledger_refuses(
    flower_identity, tiny_fdg, tmp_path, ingested, capsys
):
    state = tmp_path / "state"
    ingested(tiny_fdg / "site-a", state)
    node = {"data-dir": str(tiny_fdg / "site-a"), "state-dir": str(state)}
    app = build_client_app()
    assert _status(app(_train(1), _context(node))) == "ok"
    _assert_private(state)
    # the same ledger opened by a site with another id (a copied folder, a wrong state-dir)
    other = app(_train(2), _context({**node, "site-id": "hospital-x"}))
    assert _status(other) == "ledger-error" and contract.ARRAYS not in other.content
    # ε spent edited to 0 and the old plain SHA-256 checksum recomputed by hand
    path = state / LEDGER_FILE
    doc = json.loads(path.read_text())
    for charge in doc["body"]["charges"]:
        charge["epsilon"], charge["steps"] = 0.0, 0
    canonical = json.dumps(doc["body"], sort_keys=True, separators=(",", ":")).encode()
    doc["sha256"] = doc["hmac_sha256"] = hashlib.sha256(canonical).hexdigest()
    path.write_text(json.dumps(doc))
    tampered = path.read_bytes()
    reply = app(_train(2), _context(node))
    assert _status(reply) == "ledger-error" and contract.ARRAYS not in reply.content
    assert path.read_bytes() == tampered  # left for a person: never reset, never re-sealed
    assert site_cli(["ledger", "--state-dir", str(state)]) == 3
    assert "fails its seal" in capsys.readouterr().out


def test_simulated_site_files_are_private(flower_identity, tiny_fdg, tmp_path):
    sim = {
        "sim-data-root": str(tiny_fdg),
        "sim-state-root": str(tmp_path / "run" / "site-state"),
        "sim-cache-root": str(tmp_path / "cache"),
    }
    node = {"partition-id": 0, "num-partitions": 3}
    site = resolve_site(node, sim)
    ingest_site(site.data_dir, "fdg-ad", site.cache_dir)  # as the runner does
    reply = build_client_app(sim)(_train(1), _context(node))
    assert _status(reply) == "ok"
    assert (site.cache_dir / LEDGER_FILE).exists()  # simulation: the ledger beside the cache
    _assert_private(tmp_path / "cache", tmp_path / "run" / "site-state")
