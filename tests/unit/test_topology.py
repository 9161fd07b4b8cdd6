"""shared/bus/topology.py: shard queue arguments, the definitions document, the checked-in export."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from shared.bus.topology import (
    CIRCUIT_EVENTS_EXCHANGE,
    CONSISTENT_HASH,
    DEAD_LETTER_EXCHANGE,
    DEAD_LETTER_QUEUE,
    DISPATCH,
    LANE_EXCHANGES,
    LANES,
    RESPONSES,
    Lane,
    QueueSpec,
    ServiceRole,
    Topology,
    lane_exchange,
    lane_of,
    lane_queue,
    pre_lane_queues,
    shard_queue,
)
from shared.ops.setup import definitions_json
from shared.runtime.settings import Settings

DEFINITIONS = Path(__file__).resolve().parents[2] / "rabbitmq" / "definitions.json"
SHARD_NAME = re.compile(rf"({DISPATCH}|{RESPONSES})\.(urgent|bulk)\.\d+")
SAFE_SHARD = {
    "queue-type": "quorum",
    "single-active-consumer": True,
    "dead-letter-exchange": DEAD_LETTER_EXCHANGE,
    "dead-letter-strategy": "at-least-once",
    "overflow": "reject-publish",
}
topologies = st.builds(Topology, shards=st.integers(1, 32), delivery_limit=st.integers(1, 100))


def effective(topology: Topology, queue: QueueSpec) -> dict[str, Any]:
    """A queue's settings as RabbitMQ applies them: its arguments plus the one policy that matches it."""
    policies = [p for p in topology.policies() if re.search(p["pattern"], queue.name)]
    assert len(policies) == 1, f"{queue.name} must match exactly one policy, not {len(policies)}"
    settings = {name.removeprefix("x-"): value for name, value in queue.arguments.items()}
    return {**policies[0]["definition"], **settings}


@given(topology=topologies)
def test_every_shard_queue_is_a_safe_quorum_queue(topology: Topology) -> None:
    shards = [q for q in topology.queues() if SHARD_NAME.fullmatch(q.name)]
    assert len(shards) == 2 * len(LANES) * topology.shards
    for queue in shards:
        # queue type and single-active-consumer cannot come from a policy: they must be arguments
        assert queue.arguments["x-queue-type"] == "quorum"
        assert queue.arguments["x-single-active-consumer"] is True
        assert effective(topology, queue) | SAFE_SHARD == effective(topology, queue)
        assert effective(topology, queue)["delivery-limit"] == topology.delivery_limit


@given(topology=topologies)
def test_shard_queues_are_named_and_bound_per_lane_exchange(topology: Topology) -> None:
    by_name = {q.name: q for q in topology.queues()}
    for exchange in LANE_EXCHANGES:
        for n in range(topology.shards):
            queue = by_name[shard_queue(exchange, n)]
            assert queue.bound_to == exchange
            assert queue.binding_key == "1"  # a consistent-hash weight
    assert lane_queue(DISPATCH, Lane.URGENT, 3) == "dispatch.urgent.3"
    assert lane_queue(RESPONSES, Lane.BULK, 0) == "responses.bulk.0"


def test_every_priority_has_a_lane_and_only_priority_zero_is_urgent() -> None:
    assert [lane_of(p) for p in (0, 1, 2)] == [Lane.URGENT, Lane.BULK, Lane.BULK]
    assert LANES[0] is Lane.URGENT  # consumers subscribe to (and serve) the urgent lane first
    assert set(LANE_EXCHANGES) == {lane_exchange(s, lane) for s in (DISPATCH, RESPONSES) for lane in LANES}


def test_dead_letter_queue_is_a_quorum_queue_bound_to_dlx() -> None:
    (dlq,) = [q for q in Topology().queues() if q.name == DEAD_LETTER_QUEUE]
    assert dlq.arguments["x-queue-type"] == "quorum"
    assert dlq.bound_to == DEAD_LETTER_EXCHANGE
    settings = effective(Topology(), dlq)
    assert "dead-letter-exchange" not in settings  # a dead letter never bounces onwards
    assert "delivery-limit" not in settings and "message-ttl" not in settings  # nothing expires a dead letter
    assert settings.get("overflow") != "drop-head"  # a full DLQ refuses, it never drops the oldest


def test_exchanges_are_consistent_hash_and_dlx() -> None:
    exchanges = {e.name: e.type for e in Topology().exchanges()}
    assert all(exchanges[name] == CONSISTENT_HASH for name in LANE_EXCHANGES)
    assert exchanges[DEAD_LETTER_EXCHANGE] in ("fanout", "direct")
    assert exchanges[CIRCUIT_EVENTS_EXCHANGE] == "fanout"  # every sender replica hears every change


@given(topology=topologies, vhost=st.sampled_from(["/", "switchboard", "test-1"]))
def test_definitions_contain_every_exchange_queue_and_binding(topology: Topology, vhost: str) -> None:
    document = topology.definitions(vhost)
    assert document["vhosts"] == [{"name": vhost}]
    exchanges = {e["name"]: e for e in document["exchanges"]}
    queues = {q["name"]: q for q in document["queues"]}
    bindings = {(b["source"], b["destination"], b["routing_key"]) for b in document["bindings"]}
    assert {e.name: e.type for e in topology.exchanges()} == {n: e["type"] for n, e in exchanges.items()}
    assert {q.name: q.arguments for q in topology.queues()} == {n: q["arguments"] for n, q in queues.items()}
    assert bindings == {(q.bound_to, q.name, q.binding_key) for q in topology.queues() if q.bound_to}
    for entity in [*exchanges.values(), *queues.values(), *document["bindings"], *document["policies"]]:
        assert entity["vhost"] == vhost
    assert all(e["durable"] and not e["auto_delete"] for e in [*exchanges.values(), *queues.values()])
    assert all(b["destination_type"] == "queue" for b in document["bindings"])
    assert {b["source"] for b in document["bindings"]} <= set(exchanges)


@given(topology=topologies)
def test_policies_cover_shard_queues_and_dlq_only(topology: Topology) -> None:
    policies = {p["name"]: p for p in topology.policies()}
    shard_policy, dlq_policy = policies["switchboard-shards"], policies["switchboard-dlq"]
    for queue in topology.queues():
        matches_shard = re.search(shard_policy["pattern"], queue.name) is not None
        matches_dlq = re.search(dlq_policy["pattern"], queue.name) is not None
        assert matches_shard == bool(SHARD_NAME.fullmatch(queue.name))
        assert matches_dlq == (queue.name == DEAD_LETTER_QUEUE)
    assert shard_policy["definition"]["delivery-limit"] == topology.delivery_limit
    assert re.search(shard_policy["pattern"], "dispatch.bulk.0.backup") is None
    assert re.search(shard_policy["pattern"], "dispatch.0") is None


def test_checked_in_definitions_are_generated_from_code(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.upper().startswith("SWITCHBOARD_"):
            monkeypatch.delenv(name)
    assert DEFINITIONS.read_bytes() == definitions_json(Settings())


def test_checked_in_definitions_use_the_default_settings() -> None:
    document = orjson.loads(DEFINITIONS.read_bytes())
    defaults = Settings.model_fields
    shards = [q for q in document["queues"] if SHARD_NAME.fullmatch(q["name"])]
    assert len(shards) == 2 * len(LANES) * defaults["shards"].default
    # the delivery limit is tunable, so it lives in the shard policy, not in the queue arguments
    (shard_policy,) = [p for p in document["policies"] if p["name"] == "switchboard-shards"]
    assert all("x-delivery-limit" not in q["arguments"] for q in shards)
    assert shard_policy["definition"]["delivery-limit"] == defaults["delivery_limit"].default


def test_definitions_carry_one_user_and_permission_per_service() -> None:
    hashes = {role: f"hash-{role.value}" for role in ServiceRole}
    document = Topology().definitions("sb", users=hashes)
    users = {u["name"]: u for u in document["users"]}
    permissions = {p["user"]: p for p in document["permissions"]}
    assert set(users) == set(permissions) == {f"switchboard-{role.value}" for role in ServiceRole}
    for name, user in users.items():
        # no management or administrator rights; the monitor may only read the management API
        assert user["tags"] == (["monitoring"] if name == "switchboard-monitor" else [])
        assert permissions[name]["vhost"] == "sb"
        for kind in ("configure", "write", "read"):
            re.compile(permissions[name][kind])
    assert Topology().definitions("sb")["users"] == []


@pytest.mark.parametrize(
    ("role", "kind", "allowed", "denied"),
    [
        (
            ServiceRole.POLLER,
            "write",
            ["dispatch.urgent", "dispatch.bulk"],
            ["responses.bulk", "dlx", "dispatch"],
        ),
        (
            ServiceRole.SENDER,
            "read",
            ["dispatch.urgent.0", "dispatch.bulk.12"],
            ["responses.bulk.0", "dlq", "dispatch.other.0"],
        ),
        (
            ServiceRole.SENDER,
            "write",
            ["responses.urgent", "responses.bulk", "circuit-events"],
            ["dispatch.bulk", "dlx", "dlq"],
        ),
        (
            ServiceRole.SENDER,
            "configure",
            ["circuit-events.r1"],
            ["dlq", "dispatch.bulk.0", "dispatch.urgent", "dlx"],
        ),
        (
            ServiceRole.RECEIPTS,
            "write",
            ["responses.bulk"],
            ["responses.urgent", "dispatch.bulk", "dlx", "responses.bulk.0", "dlq"],
        ),
        (ServiceRole.RECEIPTS, "configure", [], ["dlq", "responses.bulk", "responses.bulk.0"]),
        (ServiceRole.POLLER, "configure", [], ["dlq", "dispatch.urgent", "dispatch.bulk.0"]),
        (ServiceRole.RESPONDER, "configure", [], ["dlq", "dlx", "responses.urgent.0"]),
        # dlq: to look for letters a relay that died may have published (services/responder/relay.py)
        (
            ServiceRole.RESPONDER,
            "read",
            ["responses.urgent.3", "responses.bulk.3", "dlq"],
            ["dispatch.bulk.3", "dlq2"],
        ),
        (ServiceRole.RESPONDER, "write", ["dlx"], ["dispatch.bulk", "responses.urgent"]),
        (ServiceRole.RECEIPTS, "write", ["responses.bulk"], ["dispatch.urgent", "dlx"]),
        (ServiceRole.DLQ, "read", ["dlq"], ["dispatch.bulk.0", "responses.urgent.0", "dlq2"]),
        (ServiceRole.DLQ, "configure", [], ["dlq", "dispatch.bulk", "anything"]),
        (ServiceRole.MONITOR, "read", [], ["dlq", "dispatch.urgent.0", "responses.bulk.0"]),
        (ServiceRole.MONITOR, "write", [], ["dispatch.urgent", "responses.bulk", "dlx"]),
    ],
)
def test_service_permissions_are_least_privilege(
    role: ServiceRole, kind: str, allowed: list[str], denied: list[str]
) -> None:
    pattern = getattr(Topology().permissions()[role], kind)
    assert all(re.search(pattern, name) for name in allowed)
    assert not any(re.search(pattern, name) for name in denied)


def test_the_queues_from_before_the_lanes_are_told_from_todays() -> None:
    names = [
        *(q.name for q in Topology(shards=4).queues()),
        "dispatch.10",
        "responses.0",
        "dispatch.2",
        "dispatch.x",
        "dlq",
    ]
    assert pre_lane_queues(names) == ["dispatch.2", "dispatch.10", "responses.0"]
