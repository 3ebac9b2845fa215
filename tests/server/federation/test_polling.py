"""server/polling.py: replies are noticed promptly, timeouts kept, everything else delegated."""

from __future__ import annotations

import time
from collections.abc import Iterable

import pytest
from flwr.app import Message, RecordDict

from fedmi.server.federation.polling import LONGEST, SHORTEST, PromptGrid, poll_interval


class SlowGrid:
    """Each pushed message gets its reply ``delay`` seconds after the push (None: never)."""

    def __init__(self, delays: dict[int, float | None]):
        self.delays = delays
        self.due: dict[str, tuple[float, Message]] = {}
        self.counter = 0

    def get_node_ids(self) -> Iterable[int]:
        return list(self.delays)

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        ids = []
        for msg in messages:
            self.counter += 1
            mid = f"m{self.counter}"
            msg.metadata.__dict__["_message_id"] = mid
            delay = self.delays[msg.metadata.dst_node_id]
            if delay is not None:
                self.due[mid] = (time.monotonic() + delay, Message(RecordDict(), reply_to=msg))
            ids.append(mid)
        return ids

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        now = time.monotonic()
        ready = [mid for mid in message_ids if mid in self.due and self.due[mid][0] <= now]
        return [self.due.pop(mid)[1] for mid in ready]


def _msgs(nodes: Iterable[int]) -> list[Message]:
    return [Message(RecordDict(), dst_node_id=n, message_type="train") for n in nodes]


def test_poll_interval_grows_with_the_wait_within_bounds():
    assert poll_interval(0.0) == SHORTEST
    assert poll_interval(1.0) == pytest.approx(0.02)
    assert poll_interval(10_000.0) == LONGEST


def test_replies_are_returned_soon_after_they_arrive(flower_identity):
    grid = PromptGrid(SlowGrid({1: 0.05, 2: 0.3}))  # type: ignore[arg-type]
    t = time.monotonic()
    replies = list(grid.send_and_receive(_msgs([1, 2]), timeout=5.0))
    waited = time.monotonic() - t
    assert sorted(int(r.metadata.src_node_id) for r in replies) == [1, 2]
    # Flower's InMemoryGrid would notice the last reply up to 0.1 s late; here ≤ 2 % + 5 ms
    assert waited < 0.3 + 0.06
    assert grid.pulls < 100


def test_the_timeout_returns_what_arrived(flower_identity):
    grid = PromptGrid(SlowGrid({1: 0.0, 2: None}))  # type: ignore[arg-type]
    t = time.monotonic()
    replies = list(grid.send_and_receive(_msgs([1, 2]), timeout=0.2))
    assert 0.2 <= time.monotonic() - t < 0.5
    assert [int(r.metadata.src_node_id) for r in replies] == [1]


def test_other_calls_go_to_the_wrapped_grid():
    inner = SlowGrid({1: 0.0, 7: 0.0})
    assert list(PromptGrid(inner).get_node_ids()) == [1, 7]  # type: ignore[arg-type]
    assert PromptGrid(inner).delays is inner.delays  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        PromptGrid(inner, shortest=0.0)  # type: ignore[arg-type]
