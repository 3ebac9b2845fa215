"""fedmi strategies: Flower's FedAvg / FedProx / FedAdam with inbound checks and per-site records.

The mixin only decides *who* gets each message (training sites only; holdout sites never
receive a train message) and *what* is aggregated (replies that pass
:mod:`fedmi.server.ingress`); the aggregation maths is Flower's.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
from flwr.serverapp import Grid
from flwr.serverapp.strategy import FedAdam, FedAvg, FedMedian, FedProx, FedTrimmedAvg, MultiKrum

from fedmi.server.history import RunHistory
from fedmi.server.ingress import Verdict, check_content, check_inbound
from fedmi.server.strategy.robust import RobustSettings, Update, screen_updates
from fedmi.shared import contract
from fedmi.shared.stats import pool_statistics

log = logging.getLogger(__name__)

#: Scalar train metrics passed on to Flower's (weighted-mean) aggregation.
_AGG_TRAIN_KEYS = ("num-examples", "train-loss", "train-accuracy")


class FedmiMixin:
    """Targets training sites, checks every reply, records metrics per site."""

    train_nodes: set[int]
    history: RunHistory
    expected_arrays: Mapping[str, tuple[tuple[int, ...], str]]
    max_examples: int
    min_train_replies: int
    robust: RobustSettings
    #: the weights sent for training this round: updates are measured against them
    _sent: dict[str, np.ndarray] | None = None

    def setup_fedmi(
        self,
        *,
        train_nodes: Iterable[int],
        history: RunHistory,
        expected_arrays: Mapping[str, tuple[tuple[int, ...], str]],
        max_examples: int,
        min_train_replies: int,
        robust: RobustSettings | None = None,
    ) -> None:
        self.train_nodes = set(train_nodes)
        self.history = history
        self.expected_arrays = dict(expected_arrays)
        self.max_examples = max_examples
        self.min_train_replies = min_train_replies
        self.robust = robust or RobustSettings()

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        self._sent = {k: v.numpy() for k, v in arrays.items()}
        msgs = super().configure_train(server_round, arrays, config, grid)  # type: ignore[misc]
        return [m for m in msgs if m.metadata.dst_node_id in self.train_nodes]

    def configure_evaluate(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        msgs = super().configure_evaluate(server_round, arrays, config, grid)  # type: ignore[misc]
        return [m for m in msgs if m.metadata.dst_node_id in self.train_nodes]

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        accepted: list[tuple[Update, dict]] = []
        for msg in list(replies):
            verdict = check_inbound(contract.TRAIN, msg, self.expected_arrays, self.max_examples)
            metrics = None if msg.has_error() else msg.content.get(contract.METRICS)
            self.history.record_train(
                server_round, verdict.node_id, verdict.status, dict(metrics) if metrics else None
            )
            if verdict.problems:
                log.warning(
                    "round %d: dropped the update of %s: %s",
                    server_round,
                    verdict.site_id,
                    "; ".join(verdict.problems),
                )
                self.history.record_drop(
                    server_round, verdict.node_id, "train", list(verdict.problems)
                )
                continue
            if verdict.status != "ok":
                log.warning(
                    "round %d: %s did not train (status %s)",
                    server_round,
                    verdict.site_id,
                    verdict.status,
                )
                continue
            arrays = {k: v.numpy() for k, v in msg.content[contract.ARRAYS].items()}
            name = self.history.site_name(verdict.node_id)
            update = Update(verdict.node_id, name, arrays, float(metrics["num-examples"]))
            accepted.append((update, {k: metrics[k] for k in _AGG_TRAIN_KEYS if k in metrics}))
        if len(accepted) < self.min_train_replies:
            log.warning(
                "round %d: %d valid update(s), fewer than the minimum %d: the model is kept unchanged",
                server_round,
                len(accepted),
                self.min_train_replies,
            )
            return None, None
        return super().aggregate_train(server_round, self._screened(server_round, accepted))  # type: ignore[misc]

    def _screened(self, server_round: int, accepted: list[tuple[Update, dict]]) -> list[Message]:
        """The accepted updates after robust aggregation's caps and clipping
        (:mod:`fedmi.server.strategy.robust`), as the messages Flower aggregates."""
        updates = [u for u, _ in accepted]
        if self._sent is not None:
            declared = {n: s.num_train for n, s in self.history.sites.items()}
            changes = screen_updates(updates, self._sent, declared, self.robust)
            for c in changes:
                # a count above the site's own declaration is suspicious; clipping to the
                # round's median is routine (half the sites, every round)
                level = logging.WARNING if c.reason == "count-capped" else logging.INFO
                log.log(
                    level,
                    "round %d: %s %s (%.4g → %.4g)",
                    server_round,
                    c.site_id,
                    c.reason,
                    c.before,
                    c.after,
                )
            self.history.record_screening(server_round, [c.as_dict(server_round) for c in changes])
        out = []
        for update, metrics in accepted:
            metrics["num-examples"] = update.num_examples
            clean = RecordDict(
                {
                    contract.ARRAYS: contract.array_record(update.arrays),
                    contract.METRICS: MetricRecord(metrics),
                }
            )
            out.append(Message(content=clean, dst_node_id=0, message_type=contract.TRAIN))
        return out

    def aggregate_evaluate(
        self, server_round: int, replies: Iterable[Message]
    ) -> MetricRecord | None:
        checked = [
            (
                check_inbound(contract.EVALUATE, msg, None, self.max_examples),
                None if msg.has_error() else msg.content,
            )
            for msg in list(replies)
        ]
        return self._record_evaluations(server_round, checked)

    def aggregate_received_evaluations(
        self, server_round: int, train_replies: Iterable[Message]
    ) -> MetricRecord | None:
        """Record the evaluations of round ``server_round``'s model that the sites made
        before training it further and sent with their round ``server_round + 1`` train
        replies (:data:`fedmi.shared.contract.EVALUATION`); checked as evaluate replies."""
        checked = []
        for msg in list(train_replies):
            if msg.has_error():  # recorded by aggregate_train
                continue
            content = contract.received_evaluation(msg.content)
            if content is None:
                continue
            node = int(msg.metadata.src_node_id)
            verdict = check_content(contract.EVALUATE, node, content, None, self.max_examples)  # type: ignore[arg-type]
            checked.append((verdict, content))
        return self._record_evaluations(server_round, checked)

    def _record_evaluations(
        self, server_round: int, checked: list[tuple[Verdict, RecordDict | None]]
    ) -> MetricRecord | None:
        good = []
        for verdict, content in checked:
            if verdict.problems or content is None:
                self.history.record_drop(
                    server_round, verdict.node_id, "evaluate", list(verdict.problems)
                )
                continue
            metrics = content.get(contract.METRICS)
            self.history.record_release(
                contract.EVALUATE,
                verdict.node_id,
                verdict.status,
                dict(metrics) if metrics is not None else None,
                server_round,
            )
            if verdict.status == "suppressed":  # counts only: shown, never pooled
                stats = dict(content[contract.METRICS])
                self.history.record_evaluate(server_round, verdict.node_id, stats)
            if verdict.status != "ok":
                continue
            stats = dict(content[contract.METRICS])
            self.history.record_evaluate(server_round, verdict.node_id, stats)
            good.append(stats)
        if not good:
            return None
        from fedmi.server.history import summarise_stats

        pooled = summarise_stats(pool_statistics(good))
        return MetricRecord(
            {
                k: float(v)
                for k, v in pooled.items()
                if isinstance(v, (int, float)) and v is not None
            }
        )


class FedmiFedAvg(FedmiMixin, FedAvg):
    """FedAvg (McMahan et al. 2017) with fedmi's checks."""


class FedmiFedProx(FedmiMixin, FedProx):
    """FedProx (Li et al. 2020): the sites add the proximal term ``mu/2·||w − w_g||²``."""


class FedmiFedAdam(FedmiMixin, FedAdam):
    """FedAdam (Reddi et al. 2021): server-side Adam on the averaged update."""


class FedmiFedTrimmedAvg(FedmiMixin, FedTrimmedAvg):
    """Flower's FedTrimmedAvg (Yin et al. 2018): coordinate-wise trimmed mean."""


class FedmiFedMedian(FedmiMixin, FedMedian):
    """Flower's FedMedian (Yin et al. 2018): coordinate-wise median."""


class FedmiMultiKrum(FedmiMixin, MultiKrum):
    """Flower's MultiKrum (Blanchard et al. 2017): the mean of the updates closest to the others."""
