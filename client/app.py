"""The fedmi ClientApp: thin Flower handlers over :mod:`fedmi.client.runtime`.

Every reply passes the egress check (:mod:`fedmi.client.egress`) before it is returned; a
handler that fails replies with a declared, content-free ``error`` status instead of
crashing the SuperNode.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping

import torch
from flwr.app import ArrayRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from fedmi.client import runtime
from fedmi.client.egress import check_outbound
from fedmi.client.evaluation.ood import handle_ood_statistics
from fedmi.client.harmonization.adaptation import arrays_to_state, handle_features
from fedmi.client.harmonization.state import method_of
from fedmi.client.privacy.settings import resolve_privacy
from fedmi.client.site.settings import resolve_site
from fedmi.shared import contract
from fedmi.shared.methods import build_method_model
from fedmi.shared.model import ModelSpec

log = logging.getLogger(__name__)

#: replies that say how long the site worked on the instruction (``site-seconds``)
_TIMED = (contract.TRAIN, contract.EVALUATE)
_EXPECTED: dict[tuple[str, str], dict[str, tuple[tuple[int, ...], str]]] = {}


def _expected(config: object) -> dict[str, tuple[tuple[int, ...], str]]:
    """Federated arrays a train reply may carry: those of the run's method and model."""
    values = dict(config or {})  # type: ignore[call-overload]
    method, arch = method_of(values), str(values.get("model", "regional"))
    if (method, arch) not in _EXPECTED:
        model = build_method_model(method, ModelSpec(arch=arch))
        _EXPECTED[(method, arch)] = runtime.expected_arrays(model)
    return _EXPECTED[(method, arch)]


def _reply(
    msg: Message,
    context: Context,
    message_type: str,
    work: Callable[..., RecordDict],
    defaults: Mapping[str, object],
) -> Message:
    # the one-machine runner's settings win: Flower may fill context.run_config with the
    # pyproject defaults (empty sim-* values) even in a simulation
    run_config = {**dict(context.run_config), **defaults}
    # several ClientApps share a few cores in simulation: one torch thread each by default
    torch.set_num_threads(int(run_config.get("client-threads", 1) or 1))
    config = msg.content.get(contract.CONFIG)
    task = str(dict(config or {}).get("task", "fdg-ad"))
    site_id, role = "unknown", "train"
    started = time.perf_counter()
    try:
        site = resolve_site(dict(context.node_config), run_config)
        site_id, role = site.site_id, site.role
        content = work(site, msg.content, config)
        metrics = content.get(contract.METRICS)
        if message_type in _TIMED and isinstance(metrics, MetricRecord):
            metrics["site-seconds"] = time.perf_counter() - started
        expected = _expected(config) if message_type == contract.TRAIN else None
        content = check_outbound(message_type, content, expected)
    except Exception as exc:  # one bad site must not crash the run: report a status
        log.error("%s failed at this site: %s: %s", message_type, type(exc).__name__, exc)
        content = runtime.error_reply(site_id if site_id else "unknown", role, task)
    return Message(content, reply_to=msg)


def build_client_app(defaults: Mapping[str, object] | None = None) -> ClientApp:
    """Build the ClientApp; ``defaults`` are run-config keys set by the one-machine runner.

    They take precedence over ``context.run_config`` (empty in deployments that do not use
    the runner).
    """
    defaults = dict(defaults or {})
    app = ClientApp()

    @app.query()
    def query(msg: Message, context: Context) -> Message:
        return _reply(
            msg, context, contract.QUERY, lambda s, c, cfg: runtime.handle_query(s, cfg), defaults
        )

    @app.train()
    def train(msg: Message, context: Context) -> Message:
        return _reply(
            msg,
            context,
            contract.TRAIN,
            lambda s, c, cfg: runtime.handle_train(
                s,
                _arrays(c),
                cfg,
                run_id=context.run_id,
                privacy=resolve_privacy(
                    s, dict(context.node_config), {**dict(context.run_config), **defaults}
                ),
            ),
            defaults,
        )

    @app.evaluate()
    def evaluate(msg: Message, context: Context) -> Message:
        return _reply(
            msg,
            context,
            contract.EVALUATE,
            lambda s, c, cfg: runtime.handle_evaluate(s, _arrays(c), cfg, contract.EVALUATE),
            defaults,
        )

    @app.query("features")
    def features(msg: Message, context: Context) -> Message:
        return _reply(
            msg,
            context,
            contract.FEATURES,
            lambda s, c, cfg: handle_features(s, arrays_to_state(_arrays(c)), cfg),
            defaults,
        )

    @app.query("ood")
    def ood_statistics(msg: Message, context: Context) -> Message:
        return _reply(
            msg,
            context,
            contract.OOD_STATS,
            lambda s, c, cfg: handle_ood_statistics(s, arrays_to_state(_arrays(c)), cfg),
            defaults,
        )

    @app.evaluate("external")
    def external(msg: Message, context: Context) -> Message:
        return _reply(
            msg,
            context,
            contract.EXTERNAL,
            lambda s, c, cfg: runtime.handle_evaluate(s, _arrays(c), cfg, contract.EXTERNAL),
            defaults,
        )

    return app


def _arrays(content: RecordDict) -> ArrayRecord:
    arrays = content.get(contract.ARRAYS)
    if not isinstance(arrays, ArrayRecord):
        raise ValueError("instruction without model weights")
    return arrays


app = build_client_app()
