"""The fedmi ClientApp: thin Flower handlers over plain functions, one per message type.

Each handler resolves the site (:func:`fedmi.client.site.settings.resolve_site`), parses
the server's typed instruction (:mod:`fedmi.shared.instructions`), calls the plain function
that does the work, and passes the reply through the egress check
(:mod:`fedmi.client.egress`). A site that has not ingested its DICOM answers ``no-data``;
a handler that fails replies with a declared, content-free ``error`` status instead of
crashing the SuperNode.

====================  ===============================================================
message type          plain function
====================  ===============================================================
``query``             :func:`fedmi.client.site.query.handle_query`
``train``             :func:`fedmi.client.training.handler.handle_train`
``train.pretrain``    :func:`fedmi.client.training.pretrain_handler.handle_pretrain`
``evaluate``          :func:`fedmi.client.evaluation.handler.handle_evaluate`
``evaluate.external`` :func:`fedmi.client.evaluation.handler.handle_evaluate`
``query.features``    :func:`fedmi.client.harmonization.features.handle_features`
``query.ood``         :func:`fedmi.client.evaluation.ood.handle_ood_statistics`
``query.normative``   :func:`fedmi.client.normative.handle_normative_statistics`
``evaluate.normative`` :func:`fedmi.client.normative.handle_normative_evaluation`
====================  ===============================================================
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping

import numpy as np
import torch
from flwr.app import ArrayRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from fedmi.client.data import NotIngested
from fedmi.client.egress import check_outbound
from fedmi.client.evaluation.handler import handle_evaluate
from fedmi.client.evaluation.ood import handle_ood_statistics
from fedmi.client.harmonization.features import handle_features
from fedmi.client.normative import handle_normative_evaluation, handle_normative_statistics
from fedmi.client.privacy.settings import PrivacySettings, resolve_privacy
from fedmi.client.replies import error_reply, expected_arrays, status_reply
from fedmi.client.site.query import handle_query
from fedmi.client.site.settings import SiteSettings, resolve_site
from fedmi.client.training.handler import handle_train
from fedmi.client.training.pretrain_handler import handle_pretrain
from fedmi.shared import contract
from fedmi.shared.harmonization import build_method_model
from fedmi.shared.instructions import INSTRUCTIONS, Instruction
from fedmi.shared.model import ModelSpec
from fedmi.shared.pretraining import PretrainNet

log = logging.getLogger(__name__)

#: replies that say how long the site worked on the instruction (``site-seconds``)
_TIMED = (contract.TRAIN, contract.PRETRAIN, contract.EVALUATE)
_EXPECTED: dict[tuple[str, str, str], dict[str, tuple[tuple[int, ...], str]]] = {}
#: message types whose replies carry federated weights
_WEIGHTED = (contract.TRAIN, contract.PRETRAIN)

#: what a handler gets: the site, the parsed instruction, the message content and context
Work = Callable[[SiteSettings, Instruction, RecordDict, Context], RecordDict]


def _expected(ins: Instruction) -> dict[str, tuple[tuple[int, ...], str]]:
    """Federated arrays a train (or ``train.pretrain``) reply may carry: those of the run's
    method and model (wrapped in the pretraining network for ``train.pretrain``)."""
    key = (ins.message_type, ins.method, ins.model)
    if key not in _EXPECTED:
        model = build_method_model(ins.method, ModelSpec(arch=ins.model, task=ins.task))
        if ins.message_type == contract.PRETRAIN:
            model = PretrainNet(model)
        _EXPECTED[key] = expected_arrays(model)
    return _EXPECTED[key]


def _arrays(content: RecordDict) -> ArrayRecord:
    """The received weights, refused unless every value is finite.

    What a site can check of the weights it is asked to evaluate: that they are the run's
    model (names and shapes, when loaded) and finite. It cannot check that they are the
    aggregate of the round's updates (that needs secure aggregation): a coordinator can
    craft them. The query policy (one validation per run, a daily cap) and the DP noise
    bound what crafted weights can learn (docs/threat-model.md).
    """
    arrays = content.get(contract.ARRAYS)
    if not isinstance(arrays, ArrayRecord):
        raise ValueError("instruction without model weights")
    for name, array in arrays.items():
        values = array.numpy()
        if values.dtype.kind == "f" and not np.isfinite(values).all():
            raise ValueError(f"received weights {name} hold non-finite values")
    return arrays


def _reply(
    msg: Message, context: Context, message_type: str, work: Work, defaults: Mapping[str, object]
) -> Message:
    # the one-machine runner's settings win: Flower may fill context.run_config with the
    # pyproject defaults (empty sim-* values) even in a simulation
    run_config = {**dict(context.run_config), **defaults}
    # several ClientApps share a few cores in simulation: one torch thread each by default
    torch.set_num_threads(int(run_config.get("client-threads", 1) or 1))
    config = msg.content.get(contract.CONFIG)
    task = str(dict(config or {}).get("task", "unknown"))
    site_id, role = "unknown", "train"
    started = time.perf_counter()
    try:
        site = resolve_site(dict(context.node_config), run_config)
        site_id, role = site.site_id, site.role
        ins = INSTRUCTIONS[message_type].from_record(config)
        task = ins.task
        try:
            content = work(site, ins, msg.content, context)
        except NotIngested as exc:
            log.warning("%s", exc)
            content = status_reply(site, ins.task, "no-data")
        metrics = content.get(contract.METRICS)
        if message_type in _TIMED and isinstance(metrics, MetricRecord):
            metrics["site-seconds"] = time.perf_counter() - started
        expected = _expected(ins) if message_type in _WEIGHTED else None
        content = check_outbound(message_type, content, expected)
    except Exception as exc:  # one bad site must not crash the run: report a status
        log.error("%s failed at this site: %s: %s", message_type, type(exc).__name__, exc)
        content = error_reply(site_id, role, task if len(task) <= 64 else "unknown")
    return Message(content, reply_to=msg)


def build_client_app(defaults: Mapping[str, object] | None = None) -> ClientApp:
    """Build the ClientApp; ``defaults`` are run-config keys set by the one-machine runner.

    They take precedence over ``context.run_config`` (empty in deployments that do not use
    the runner).
    """
    defaults = dict(defaults or {})
    app = ClientApp()

    def privacy(site: SiteSettings, ctx: Context) -> PrivacySettings:
        run_config = {**dict(ctx.run_config), **defaults}
        return resolve_privacy(site, dict(ctx.node_config), run_config)

    def with_weights(handle: Callable[..., RecordDict]) -> Work:
        """A handler of received weights, told the site's DP settings and the run."""

        def work(site: SiteSettings, ins: Instruction, content: RecordDict, ctx: Context):
            return handle(
                site, _arrays(content), ins, privacy=privacy(site, ctx), run_id=ctx.run_id
            )

        return work

    def query(site: SiteSettings, ins: Instruction, content: RecordDict, ctx: Context):
        return handle_query(site, ins, privacy=privacy(site, ctx), run_id=ctx.run_id)  # type: ignore[arg-type]

    work: dict[str, Work] = {
        contract.QUERY: query,
        contract.TRAIN: with_weights(handle_train),
        contract.PRETRAIN: with_weights(handle_pretrain),
        contract.EVALUATE: with_weights(handle_evaluate),
        contract.EXTERNAL: with_weights(handle_evaluate),
        contract.FEATURES: with_weights(handle_features),
        contract.OOD_STATS: with_weights(handle_ood_statistics),
        contract.NORMATIVE_STATS: with_weights(handle_normative_statistics),
        contract.NORMATIVE_EVAL: with_weights(handle_normative_evaluation),
    }

    def handler(message_type: str) -> Callable[[Message, Context], Message]:
        def handle(msg: Message, context: Context) -> Message:
            return _reply(msg, context, message_type, work[message_type], defaults)

        return handle

    # Flower routes by decorator: one registration per message type
    app.query()(handler(contract.QUERY))
    app.train()(handler(contract.TRAIN))
    app.train("pretrain")(handler(contract.PRETRAIN))
    app.evaluate()(handler(contract.EVALUATE))
    app.evaluate("external")(handler(contract.EXTERNAL))
    app.query("features")(handler(contract.FEATURES))
    app.query("ood")(handler(contract.OOD_STATS))
    app.query("normative")(handler(contract.NORMATIVE_STATS))
    app.evaluate("normative")(handler(contract.NORMATIVE_EVAL))
    return app


app = build_client_app()
