"""One ClientApp process of a deployed site sending itself DP train rounds (the ledger race).

``python site_charger.py DATA_DIR STATE_DIR RUN_ID ROUNDS GO_FILE OUT_JSON`` builds fedmi's
real ClientApp with the site's node-config, waits until ``GO_FILE`` exists (so that two such
processes start charging together), sends ``ROUNDS`` train messages of run ``RUN_ID`` and
writes the reply statuses to ``OUT_JSON``. It is what two SuperNodes (or two runs) on one
state folder do to the site's ledger at the same moment. With ``CHARGER_PEERS=N`` the N
processes meet after their first round (marker files ``round1-<run>`` beside ``GO_FILE``), so
that every run plans and charges its first round while the others do, however the machine
schedules them: without it a loaded machine could let one run finish before another starts,
and the second would find the budget spent (the test's race would then not be tested).
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path


def _barrier(mine: Path, peers: int, timeout: float = 300.0) -> None:
    """Mark this process past round 1 and wait until ``peers`` processes are."""
    mine.touch()
    deadline = time.monotonic() + timeout
    while len(list(mine.parent.glob("round1-*"))) < peers and time.monotonic() < deadline:
        time.sleep(0.05)


def main(argv: list[str]) -> int:
    data_dir, state_dir, run_id, rounds, go_file, out = argv
    import torch
    from flwr.app import Context, Message, RecordDict
    from flwr.supercore.task_identity import TaskIdentity

    from fedmi.client.app import build_client_app
    from fedmi.shared import contract
    from fedmi.shared.instructions import TrainInstruction
    from fedmi.shared.model import build_model, federated_state_dict

    TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 1, 0, 1
    app = build_client_app()
    node = {"data-dir": data_dir, "state-dir": state_dir}
    weights = contract.array_record(federated_state_dict(build_model()))
    while not Path(go_file).exists():
        time.sleep(0.05)
    statuses = []
    peers = int(os.environ.get("CHARGER_PEERS", "1"))
    for r in range(1, int(rounds) + 1):
        if r == 2:  # every process charges its first round before any goes on (see docstring)
            _barrier(Path(go_file).with_name(f"round1-{run_id}"), peers)
        torch.manual_seed(r)
        ins = TrainInstruction(task="fdg-ad", server_round=r, num_server_rounds=int(rounds))
        msg = Message(
            content=RecordDict({contract.CONFIG: ins.to_record(), contract.ARRAYS: weights}),
            dst_node_id=7,
            message_type=contract.TRAIN,
        )
        ctx = Context(
            run_id=int(run_id), node_id=7, node_config=node, state=RecordDict(), run_config={}
        )
        statuses.append(app(msg, ctx).content[contract.SITE]["status"])
    Path(out).write_text(json.dumps(statuses))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
