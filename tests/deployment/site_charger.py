"""One ClientApp process of a deployed site sending itself DP train rounds (the ledger race).

``python site_charger.py DATA_DIR STATE_DIR RUN_ID ROUNDS GO_FILE OUT_JSON`` builds fedmi's
real ClientApp with the site's node-config, waits until ``GO_FILE`` exists (so that two such
processes start charging together), sends ``ROUNDS`` train messages of run ``RUN_ID`` and
writes the reply statuses to ``OUT_JSON``. It is what two SuperNodes (or two runs) on one
state folder do to the site's ledger at the same moment.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path


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
    for r in range(1, int(rounds) + 1):
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
