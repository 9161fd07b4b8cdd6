"""tools/bench_pipeline.add_pollers and add_senders: which poller and sender processes a bench or
demo stack runs, on which lanes."""

from __future__ import annotations

from typing import Any, cast

import orjson
import pytest

from tools.bench_pipeline import add_pollers, add_senders
from tools.stack import Stack


class RecordingStack:
    def __init__(self) -> None:
        self.added: dict[str, dict[str, str]] = {}

    def add(self, service: str, name: str | None = None, **overrides: str) -> None:
        assert service == "sender"
        self.added[name or service] = overrides


def senders(bulk: int, urgent: int, shards: int = 4) -> dict[str, dict[str, Any]]:
    stack = RecordingStack()
    add_senders(cast(Stack, stack), {"shards": str(shards)}, list(range(shards)), bulk, urgent)
    return {
        name: {
            "lanes": orjson.loads(o["lanes"]) if "lanes" in o else None,
            "shards": orjson.loads(o["consume_shards"]),
        }
        for name, o in stack.added.items()
    }


def test_without_urgent_senders_every_sender_serves_both_lanes_and_the_shards_are_split() -> None:
    assert senders(2, 0) == {
        "sender-0": {"lanes": None, "shards": [0, 1]},
        "sender-1": {"lanes": None, "shards": [2, 3]},
    }


@pytest.mark.parametrize(("bulk", "urgent"), [(1, 1), (2, 1), (3, 2), (4, 4)])
def test_with_urgent_senders_each_lane_has_its_own_senders_covering_every_shard(
    bulk: int, urgent: int
) -> None:
    added = senders(bulk, urgent)
    for lane, count in (("bulk", bulk), ("urgent", urgent)):
        mine = {n: s for n, s in added.items() if s["lanes"] == [lane]}
        assert len(mine) == count
        assert sorted(shard for s in mine.values() for shard in s["shards"]) == [0, 1, 2, 3]
    assert len(added) == bulk + urgent


class RecordingPollers(RecordingStack):
    def add(self, service: str, name: str | None = None, **overrides: str) -> None:
        assert service == "poller"
        self.added[name or service] = overrides


@pytest.mark.parametrize("urgent", [False, True])
def test_an_urgent_lane_poller_runs_beside_the_bulk_ones_only_with_urgent_senders(urgent: bool) -> None:
    stack = RecordingPollers()
    add_pollers(cast(Stack, stack), {}, 2, urgent=urgent)
    lanes = {name: o.get("lanes") for name, o in stack.added.items()}
    if urgent:
        assert lanes == {"poller-0": '["bulk"]', "poller-1": '["bulk"]', "poller-urgent": '["urgent"]'}
    else:
        assert lanes == {"poller-0": None, "poller-1": None}
