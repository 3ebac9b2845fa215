"""One malicious training site in a whole federation, for robust-aggregation tests and benchmarks.

:func:`run_attacked` runs the real ServerApp flow (:func:`fedmi.server.federation.run.run_federation`,
the real strategy) against :class:`LocalGrid`, which hands every message to the real
ClientApp of each site in this process, one after another (no Ray, no SuperLink: a
federation of small sites takes seconds). One site's train replies are then changed as a
dishonest hospital would (:data:`ATTACKS`):

* ``sign-flip``: the update ``reply − global`` sent as ``−1000 ×`` itself;
* ``count-lie``: ``num-examples`` claimed as 100000 (the server's plausible maximum);
* ``noise``: the weights replaced by ``global + N(0, 1)`` per coordinate;
* ``label-flip``: the site trains (through its real train handler) on its labels flipped.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
from collections.abc import Iterable, Iterator
from pathlib import Path
from unittest import mock

import numpy as np
from flwr.app import Context, Message, RecordDict

from fedmi.shared import contract
from fedmi.shared.run_config import RunConfig

ATTACKS = ("sign-flip", "count-lie", "noise", "label-flip")
#: the count a lying site claims
LIE = 100_000


@contextlib.contextmanager
def flower_identity() -> Iterator[None]:
    """Let this process build Flower Messages outside a SuperLink/SuperNode (as the tests'
    ``flower_identity`` fixture; Flower 1.42 internal API)."""
    from flwr.supercore.task_identity import TaskIdentity

    saved = (TaskIdentity._run_id, TaskIdentity._node_id, TaskIdentity._task_id)
    TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 1, 0, 1
    try:
        yield
    finally:
        TaskIdentity._run_id, TaskIdentity._node_id, TaskIdentity._task_id = saved


def _flipped_site_data(real):
    """``site_data`` with every label flipped (for the label-flip attack)."""

    def site_data(*args, **kwargs):
        data = real(*args, **kwargs)  # may be the site's cached object: never changed
        return dataclasses.replace(data, y=1.0 - data.y)

    return site_data


def tamper(attack: str, reply: RecordDict, sent: RecordDict, seed: int = 0) -> RecordDict:
    """``reply`` (a train reply to the weights ``sent``) as the attacker sends it."""
    if attack == "count-lie":
        reply[contract.METRICS]["num-examples"] = LIE
        return reply
    if attack not in ("sign-flip", "noise"):
        return reply
    rng = np.random.default_rng(seed)
    out = {}
    for name, arr in reply[contract.ARRAYS].items():
        value, ref = arr.numpy(), sent[contract.ARRAYS][name].numpy()
        if value.dtype.kind == "f":
            if attack == "sign-flip":
                value = ref - 1000.0 * (value - ref)
            else:
                value = ref + rng.normal(size=ref.shape)
            value = value.astype(ref.dtype)
        out[name] = value
    reply[contract.ARRAYS] = contract.array_record(out)
    return reply


class LocalGrid:
    """A Grid whose nodes are the sites' real ClientApps in this process.

    Node ``i + 1`` is partition ``i`` (the ``i``-th site folder); ``attacker`` (a node id)
    answers train messages as ``attack`` says.
    """

    def __init__(
        self,
        n_sites: int,
        client_defaults: dict[str, object],
        *,
        attacker: int | None = None,
        attack: str | None = None,
    ) -> None:
        from fedmi.client.app import build_client_app

        if attack is not None and attack not in ATTACKS:
            raise ValueError(f"unknown attack {attack!r}; choose one of {', '.join(ATTACKS)}")
        self.app = build_client_app(client_defaults)
        self.contexts = {
            i + 1: Context(
                run_id=1,
                node_id=i + 1,
                node_config={"partition-id": i, "num-partitions": n_sites},
                state=RecordDict(),
                run_config={},
            )
            for i in range(n_sites)
        }
        self.attacker, self.attack = attacker, attack
        self.rounds = 0

    def get_node_ids(self) -> Iterable[int]:
        return list(self.contexts)

    def send_and_receive(self, messages: Iterable[Message], *, timeout: float | None = None):
        return [self._answer(msg) for msg in messages]

    def _answer(self, msg: Message) -> Message:
        node, mtype = msg.metadata.dst_node_id, msg.metadata.message_type
        evil = node == self.attacker and mtype == contract.TRAIN
        patch = contextlib.nullcontext()
        if evil and self.attack == "label-flip":
            import fedmi.client.training.handler as handler

            patch = mock.patch.object(handler, "site_data", _flipped_site_data(handler.site_data))
        with patch:
            reply = self.app(msg, self.contexts[node])
        if evil and not reply.has_error():
            self.rounds += 1
            reply = Message(
                tamper(str(self.attack), reply.content, msg.content, self.rounds), reply_to=msg
            )
        return reply


def run_attacked(
    cfg: RunConfig,
    data_root: Path,
    out_dir: Path,
    *,
    attack: str | None = None,
    attacker: str | None = None,
    site_keys: dict[str, object] | None = None,
) -> dict:
    """The whole run with site ``attacker`` (a site id) attacking; the report document.

    ``data_root``'s sites must have been ingested
    (:func:`fedmi.simulations.runner.ingest_all`).
    """
    from fedmi.client.site.settings import list_site_dirs
    from fedmi.server.federation.run import run_federation
    from fedmi.simulations.federated import quiet_environment, sim_paths

    quiet_environment()
    names = [p.name for p in list_site_dirs(data_root)]
    node = None if attacker is None else names.index(attacker) + 1
    defaults = {**sim_paths(data_root, out_dir), "client-threads": 1, **(site_keys or {})}
    grid = LocalGrid(len(names), defaults, attacker=node, attack=attack)
    with flower_identity():
        run_federation(grid, cfg, out_dir)  # type: ignore[arg-type]
    return json.loads((out_dir / "report.json").read_text())


def holdout_auc(report: dict) -> float:
    """The holdout site's own (Mann–Whitney) AUC in a report with exactly one holdout site."""
    rows = [r for r in report["final"]["per_site"] if r["role"] == "holdout"]
    if len(rows) != 1 or rows[0].get("auc") is None:
        raise ValueError(f"expected one holdout site with an AUC, got {len(rows)}")
    return float(rows[0]["auc"])
