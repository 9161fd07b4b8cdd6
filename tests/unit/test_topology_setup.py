"""shared/ops/setup.py: argument conflicts, effective policies, password hashes of the service users."""

from __future__ import annotations

import base64
import hashlib

import orjson
from hypothesis import given
from hypothesis import strategies as st

from shared.bus.topology import DEAD_LETTER_QUEUE, ServiceRole, Topology
from shared.ops.setup import (
    argument_conflicts,
    definitions_json,
    dev_password,
    dev_password_hashes,
    effective_policy,
    policy_problems,
    rabbit_password_hash,
)
from shared.runtime.settings import Settings

OLD_SHARD_ARGUMENTS = {
    "x-queue-type": "quorum",
    "x-single-active-consumer": True,
    "x-delivery-limit": 10,
    "x-dead-letter-exchange": "dlx",
    "x-dead-letter-strategy": "at-least-once",
    "x-overflow": "reject-publish",
}


def test_queues_declared_with_the_old_arguments_are_named_with_each_difference() -> None:
    topology = Topology(shards=1)
    conflicts = argument_conflicts(
        {"dispatch.bulk.0": OLD_SHARD_ARGUMENTS, "dlq": {"x-queue-type": "quorum"}}, topology.queues()
    )
    assert {(c.queue, c.argument) for c in conflicts} == {
        ("dispatch.bulk.0", key)
        for key in ("x-delivery-limit", "x-dead-letter-exchange", "x-dead-letter-strategy", "x-overflow")
    }
    explained = next(c for c in conflicts if c.argument == "x-delivery-limit").explain()
    assert explained == (
        "queue 'dispatch.bulk.0': argument x-delivery-limit is 10 on the broker, the code declares absent"
    )


def test_queues_as_the_code_declares_them_do_not_conflict() -> None:
    topology = Topology(shards=3)
    existing = {q.name: dict(q.arguments) for q in topology.queues()}
    assert argument_conflicts(existing, topology.queues()) == []
    assert argument_conflicts({}, topology.queues()) == []


def test_the_code_policies_give_every_queue_what_it_needs() -> None:
    topology = Topology(shards=2, delivery_limit=7)
    assert policy_problems(topology, topology.policies()) == []
    shard, dlq = (
        effective_policy("dispatch.urgent.1", topology.policies()),
        effective_policy(DEAD_LETTER_QUEUE, topology.policies()),
    )
    assert shard is not None and shard["name"] == "switchboard-shards"
    assert dlq is not None and dlq["name"] == "switchboard-dlq"
    assert effective_policy("other", topology.policies()) is None


def test_a_stronger_policy_without_dead_lettering_is_reported() -> None:
    topology = Topology(shards=1)
    greedy = {
        "name": "ops-max-length",
        "pattern": ".*",
        "apply-to": "queues",
        "priority": 10,
        "definition": {"max-length": 5, "delivery-limit": 3},
    }
    problems = policy_problems(topology, [*topology.policies(), greedy])
    assert any("dispatch.bulk.0" in p and "dead-letter-exchange=None" in p for p in problems)
    assert any("'dlq' gets delivery-limit=3" in p for p in problems)


def test_no_policy_means_no_delivery_limit_reported() -> None:
    problems = policy_problems(Topology(shards=1), [])
    assert any("no delivery-limit" in p for p in problems)


@given(password=st.text(min_size=1, max_size=40), salt=st.binary(min_size=4, max_size=4))
def test_password_hashes_are_rabbitmq_sha256(password: str, salt: bytes) -> None:
    raw = base64.b64decode(rabbit_password_hash(password, salt))
    assert raw[:4] == salt
    assert raw[4:] == hashlib.sha256(salt + password.encode()).digest()


def test_dev_hashes_are_stable_and_differ_per_user() -> None:
    first, second = dev_password_hashes(), dev_password_hashes()
    assert first == second and len(set(first.values())) == len(ServiceRole)
    salt = base64.b64decode(first[ServiceRole.SENDER])[:4]
    assert first[ServiceRole.SENDER] == rabbit_password_hash(dev_password(ServiceRole.SENDER), salt)
    assert dev_password_hashes("other")[ServiceRole.SENDER] != first[ServiceRole.SENDER]


def test_the_definitions_file_has_no_password_in_clear() -> None:
    document = definitions_json(Settings(), users=None)
    assert all(dev_password(role).encode() not in document for role in ServiceRole)
    assert {u["hashing_algorithm"] for u in orjson.loads(document)["users"]} == {
        "rabbit_password_hashing_sha256"
    }
