"""Preparing an environment: database, migrations, vhost, policies, topology and users (idempotent).

Queue arguments are fixed by code; everything tunable lives in policies (see ``rabbitmq/README.md``).
Because the shard queues get their dead-lettering from a policy, the policies are applied *before*
any queue is declared, and :func:`policy_problems` checks afterwards that each queue really gets
what it needs (a stronger policy written by hand would otherwise silently replace ours).
"""

from __future__ import annotations

import base64
import hashlib
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from shared.bus.amqp import PlainChannel, connect, declare
from shared.bus.topology import (
    DEAD_LETTER_QUEUE,
    PRE_LANE_EXCHANGES,
    RESPONSES,
    ROLE_TAGS,
    USER_PREFIX,
    QueueSpec,
    ServiceRole,
    Topology,
    pre_lane_queues,
    service_user,
)
from shared.core.errors import ConfigurationError
from shared.db.migrate import ensure_database, migrate
from shared.db.roles import ensure_database_roles
from shared.ops.management import Management
from shared.runtime.settings import Settings


class TopologyConflict(ConfigurationError):
    """The broker holds queues or policies that the code's topology cannot work with."""


def topology_for(settings: Settings) -> Topology:
    return Topology(shards=settings.shards, delivery_limit=settings.delivery_limit)


async def prepare_database(settings: Settings) -> list[str]:
    """Create the database, apply migrations, and grant each service's role its tables."""
    await ensure_database(settings.database_dsn())
    applied = await migrate(settings.database_dsn())
    await ensure_database_roles(settings.database_dsn())
    return applied


# --- queue arguments: what the code declares vs what the broker has -------------------------------


@dataclass(frozen=True, slots=True)
class ArgumentConflict:
    queue: str
    argument: str
    existing: Any  # None: the queue on the broker does not have the argument
    expected: Any  # None: the code does not declare it

    def explain(self) -> str:
        def show(value: Any) -> str:
            return "absent" if value is None else repr(value)

        return (
            f"queue {self.queue!r}: argument {self.argument} is {show(self.existing)} on the broker, "
            f"the code declares {show(self.expected)}"
        )


def argument_conflicts(
    existing: Mapping[str, Mapping[str, Any]], specs: Sequence[QueueSpec]
) -> list[ArgumentConflict]:
    """Each ``x-`` argument on which an existing queue differs from its spec (pure).

    Declaring such a queue fails with PRECONDITION_FAILED ("inequivalent arg"), so every service
    would fail to start: this names the queue and the argument instead.
    """
    conflicts = []
    for spec in specs:
        if spec.name not in existing:
            continue
        have = {k: v for k, v in existing[spec.name].items() if k.startswith("x-")}
        want = {k: v for k, v in spec.arguments.items() if k.startswith("x-")}
        for key in sorted(have.keys() | want.keys()):
            if have.get(key) != want.get(key):
                conflicts.append(ArgumentConflict(spec.name, key, have.get(key), want.get(key)))
    return conflicts


# --- policies: what each queue gets --------------------------------------------------------------

SHARD_SAFETY_KEYS = ("dead-letter-exchange", "dead-letter-strategy", "overflow")
# Keys that would make the dlq admin's reads (take, then give back) lose dead letters.
DLQ_FORBIDDEN_KEYS = ("delivery-limit", "message-ttl", "expires")


def effective_policy(queue: str, policies: Sequence[Mapping[str, Any]]) -> Mapping[str, Any] | None:
    """The policy RabbitMQ applies to ``queue``: the highest priority among those matching (pure)."""
    matching = [
        p
        for p in policies
        if p.get("apply-to", "all") in ("queues", "all") and re.search(p["pattern"], queue)
    ]
    return max(matching, key=lambda p: int(p.get("priority", 0))) if matching else None


def policy_problems(topology: Topology, policies: Sequence[Mapping[str, Any]]) -> list[str]:
    """What is missing from, or dangerous in, the policy each queue of ``topology`` gets (pure)."""
    problems = []
    shard_needs = topology.shard_policy_definition()
    for spec in topology.queues():
        policy = effective_policy(spec.name, policies)
        definition: Mapping[str, Any] = policy["definition"] if policy else {}
        by = f"policy {policy['name']!r}" if policy else "no policy"
        if spec.name == DEAD_LETTER_QUEUE:
            for key in DLQ_FORBIDDEN_KEYS:
                if key in definition:
                    problems.append(
                        f"queue {spec.name!r} gets {key}={definition[key]!r} from {by}: "
                        "dead letters would be dropped; remove it"
                    )
            continue
        for key in SHARD_SAFETY_KEYS:
            if definition.get(key) != shard_needs[key]:
                problems.append(
                    f"queue {spec.name!r} gets {key}={definition.get(key)!r} from {by}, "
                    f"needs {shard_needs[key]!r}"
                )
        if not isinstance(definition.get("delivery-limit"), int):
            problems.append(
                f"queue {spec.name!r} gets no delivery-limit from {by}: a message that crashes "
                "its consumer would be redelivered forever"
            )
    return problems


# --- the broker -----------------------------------------------------------------------------------


async def _queue_arguments(management: Management, vhost: str) -> dict[str, dict[str, Any]]:
    return {q["name"]: q.get("arguments", {}) for q in await management.queues(vhost)}


async def _in_use(channel: PlainChannel, names: Sequence[str]) -> dict[str, tuple[int, int]]:
    """The queues among ``names`` that hold messages or have consumers, with (messages, consumers) as the
    broker itself counts them (a passive declare; the management API's counts lag by seconds)."""
    busy: dict[str, tuple[int, int]] = {}
    for name in names:
        result = (await channel.declare_queue(name, passive=True)).declaration_result
        if result.message_count or result.consumer_count:
            busy[name] = (result.message_count or 0, result.consumer_count or 0)
    return busy


async def recreate_empty(settings: Settings, conflicts: Sequence[ArgumentConflict]) -> list[str]:
    """Delete the conflicting queues so that :func:`prepare_broker` declares them anew.

    Only queues with no message and no consumer, counted by the broker itself (a passive declare;
    the management API's counts lag by seconds); stop the services first. RabbitMQ 3.10 cannot
    delete a quorum queue "if empty" atomically, so a message published between the count and the
    delete would go with the queue: that is why the services must be stopped.
    """
    names = sorted({c.queue for c in conflicts})
    connection = await connect(settings.amqp_url(), "setup")
    try:
        channel = await connection.channel()
        busy = await _in_use(channel, names)
        if busy:
            raise TopologyConflict(
                "not recreating queues that are in use: "
                + ", ".join(f"{name} ({m} messages, {c} consumers)" for name, (m, c) in busy.items())
                + ". Stop the services and let the queues drain (or move their messages with a shovel) first."
            )
        for name in names:
            await channel.queue_delete(name)
    finally:
        await connection.close()
    return names


async def prepare_broker(
    settings: Settings, user_for_vhost: str = "guest", *, recreate_conflicting: bool = False
) -> list[str]:
    """Create the vhost, grant the set-up user, apply policies, check and declare the topology.

    Returns the queues that were recreated (only with ``recreate_conflicting``). Raises
    :class:`TopologyConflict` naming each queue and argument that differs from the code, and each
    queue whose effective policy lacks what it needs.
    """
    vhost = settings.vhost()
    topology = topology_for(settings)
    recreated: list[str] = []
    async with Management(settings) as management:
        await management.create_vhost(vhost)
        await management.set_permissions(vhost, user_for_vhost, ".*", ".*", ".*")
        for policy in topology.policies():
            await management.put_policy(vhost, policy)
        conflicts = argument_conflicts(await _queue_arguments(management, vhost), topology.queues())
        if conflicts and recreate_conflicting:
            recreated = await recreate_empty(settings, conflicts)
        elif conflicts:
            raise TopologyConflict(
                f"queues in vhost {vhost!r} were declared with other arguments than the code's:\n  "
                + "\n  ".join(c.explain() for c in conflicts)
                + "\nThe services would fail to start (PRECONDITION_FAILED). If these queues are empty, run "
                "`python -m services.admin topology --recreate-empty` with the services stopped."
            )
        problems = policy_problems(topology, await management.policies(vhost))
    if problems:
        raise TopologyConflict(
            "policies in vhost " + repr(vhost) + " do not fit:\n  " + "\n  ".join(problems)
        )
    connection = await connect(settings.amqp_url(), "setup")
    try:
        channel = await connection.channel()
        await declare(channel, topology)
    finally:
        await connection.close()
    return recreated


@dataclass(frozen=True, slots=True)
class Retirement:
    """What :func:`retire_pre_lane_topology` did: queues deleted, and queues kept because they hold
    messages or have consumers (with the broker's counts)."""

    deleted: list[str]
    kept: dict[str, tuple[int, int]]  # queue -> (messages, consumers)
    exchanges_deleted: list[str]

    def explain(self) -> list[str]:
        before = "from before the priority lanes"
        lines = [f"deleted exchange {name!r} ({before})" for name in self.exchanges_deleted]
        lines += [f"deleted queue {name!r} ({before}, empty)" for name in self.deleted]
        for name, (messages, consumers) in self.kept.items():
            if name.startswith(RESPONSES):
                then = (
                    "they are provider outcomes not applied yet: run the responder of the previous release"
                    " on it until it is empty (or shovel it into responses.bulk), then run this again"
                )
            else:
                then = (
                    "they are dispatches not sent yet: the poller publishes their logs again into the"
                    " lanes when their leases expire, so purge it once no old sender consumes it, then run"
                    " this again"
                )
            lines.append(f"kept queue {name!r} {before}: {messages} messages, {consumers} consumers; {then}")
        return lines


async def retire_pre_lane_topology(settings: Settings) -> Retirement:
    """Delete the exchanges and shard queues of the topology before the priority lanes (an upgraded
    vhost keeps them, and nothing consumes them any more). The exchanges go first, so that nothing can
    route into the old queues between the count and the delete; then each queue, only when the broker
    itself counts no message and no consumer in it."""
    vhost = settings.vhost()
    async with Management(settings) as management:
        names = pre_lane_queues([q["name"] for q in await management.queues(vhost)])
        exchanges = {e["name"] for e in await management.exchanges(vhost)}
    old_exchanges = [name for name in PRE_LANE_EXCHANGES if name in exchanges]
    if not names and not old_exchanges:
        return Retirement([], {}, [])
    connection = await connect(settings.amqp_url(), "setup")
    try:
        channel = await connection.channel()
        for name in old_exchanges:
            await channel.exchange_delete(name)
        kept = await _in_use(channel, names)
        deleted = [name for name in names if name not in kept]
        for name in deleted:
            await channel.queue_delete(name)
    finally:
        await connection.close()
    return Retirement(deleted, kept, old_exchanges)


# --- users ------------------------------------------------------------------------------------------


def dev_password(role: ServiceRole) -> str:
    """The documented development password of a service user: never use it in production."""
    return f"switchboard-dev-{role.value}"


def rabbit_password_hash(password: str, salt: bytes | None = None) -> str:
    """A ``rabbit_password_hashing_sha256`` hash: base64(salt + sha256(salt + password)), 4-byte salt."""
    salt = os.urandom(4) if salt is None else salt
    if len(salt) != 4:
        raise ValueError("RabbitMQ password hashes use a 4-byte salt")
    return base64.b64encode(salt + hashlib.sha256(salt + password.encode()).digest()).decode()


def dev_password_hashes(prefix: str = USER_PREFIX) -> dict[ServiceRole, str]:
    """Hashes of the dev passwords, salted per user name so that regenerating the file changes nothing."""
    return {
        role: rabbit_password_hash(
            dev_password(role),
            hashlib.sha256(f"switchboard-dev-salt:{service_user(role, prefix)}".encode()).digest()[:4],
        )
        for role in ServiceRole
    }


@dataclass(frozen=True, slots=True)
class UserOutcome:
    user: str
    password: str  # where its password came from: "environment", "dev-only default" or "unchanged"


async def ensure_service_users(
    settings: Settings, passwords: Mapping[ServiceRole, str | None], prefix: str = USER_PREFIX
) -> list[UserOutcome]:
    """One user per service with its least-privilege permissions on the settings' vhost.

    A password given in ``passwords`` is set; without one an existing user keeps its password and a
    missing user is created with :func:`dev_password` (reported, so that it is never a surprise).
    """
    vhost = settings.vhost()
    outcomes = []
    async with Management(settings) as management:
        for role, permission in topology_for(settings).permissions().items():
            user = service_user(role, prefix)
            password = passwords.get(role)
            tags = ",".join(ROLE_TAGS.get(role, []))
            if password:
                await management.put_user(user, password, tags)
                source = "environment"
            elif await management.user(user) is None:
                await management.put_user(user, dev_password(role), tags)
                source = "dev-only default"
            else:
                source = "unchanged"
            await management.set_permissions(
                vhost, user, permission.configure, permission.write, permission.read
            )
            outcomes.append(UserOutcome(user, source))
    return outcomes


def definitions_json(
    settings: Settings, vhost: str = "switchboard", users: Mapping[ServiceRole, str] | None = None
) -> bytes:
    """``rabbitmq/definitions.json``: the topology, its policies, and a user per service.

    ``users`` maps services to password hashes; by default the hashes of the dev-only passwords.
    """
    hashes = dev_password_hashes() if users is None else users
    document = topology_for(settings).definitions(vhost, users=hashes)
    return orjson.dumps(document, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS) + b"\n"
