"""Every exchange, queue, header and policy name, declared from this one place.

The same description drives :func:`declare` (idempotent, at service start) and
:func:`definitions` (``rabbitmq/definitions.json``), so the two cannot drift apart.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

# Two stages, each split into priority lanes: ``dispatch.urgent``, ``dispatch.bulk``, ``responses.urgent``,
# ``responses.bulk`` are x-consistent-hash exchanges, each with its own shard queues (``dispatch.urgent.0``).
DISPATCH = "dispatch"
RESPONSES = "responses"
STAGES = (DISPATCH, RESPONSES)
DEAD_LETTER_EXCHANGE = "dlx"
DEAD_LETTER_QUEUE = "dlq"
# Circuit-breaker state changes, fanned out to every sender replica (each binds its own
# exclusive, auto-delete queue ``circuit-events.<replica>``; nothing durable to lose there).
CIRCUIT_EVENTS_EXCHANGE = "circuit-events"
CONSISTENT_HASH = "x-consistent-hash"
SHARD_POLICY = "switchboard-shards"
DLQ_POLICY = "switchboard-dlq"

# Headers carried by dead letters (plain words, readable in the management UI).
HEADER_REASON = "x-switchboard-reason"
HEADER_ERROR_CLASS = "x-switchboard-error-class"
HEADER_ERROR_CODE = "x-switchboard-error-code"
HEADER_LOG_ID = "x-switchboard-log-id"
HEADER_ATTEMPT = "x-switchboard-attempt"
HEADER_PROVIDER = "x-switchboard-provider"
HEADER_SOURCE = "x-switchboard-source"
# ... and by poison copies: why the message was unusable, and the queue it was taken from.
HEADER_ERROR = "x-switchboard-error"
HEADER_SOURCE_QUEUE = "x-switchboard-source-queue"


class Lane(StrEnum):
    """A priority class with queues of its own, so that urgent work never waits behind bulk work.

    Quorum queues have no priorities in RabbitMQ 3.10; separate queues per class, consumed urgent
    first with their own prefetch, are how the broker keeps an OTP out of a campaign's backlog.
    """

    URGENT = "urgent"  # priority 0
    BULK = "bulk"  # priorities 1 and 2 (the poller's claim order and starvation guard rank them)


LANES = (Lane.URGENT, Lane.BULK)  # in the order a consumer serves them


def lane_of(priority: int) -> Lane:
    return Lane.URGENT if priority == 0 else Lane.BULK


def lane_exchange(stage: str, lane: Lane) -> str:
    return f"{stage}.{lane.value}"


def shard_queue(exchange: str, shard: int) -> str:
    return f"{exchange}.{shard}"


def lane_queue(stage: str, lane: Lane, shard: int) -> str:
    return shard_queue(lane_exchange(stage, lane), shard)


LANE_EXCHANGES = [lane_exchange(stage, lane) for stage in STAGES for lane in LANES]


# Before the priority lanes each stage was one exchange named after it, with shard queues ``dispatch.0``.
PRE_LANE_EXCHANGES = STAGES
_PRE_LANE_QUEUE = re.compile(rf"^(?:{'|'.join(map(re.escape, STAGES))})\.[0-9]+$")


def pre_lane_queues(names: list[str]) -> list[str]:
    """The queues among ``names`` that the topology before the priority lanes declared (an upgraded
    vhost still has them: nothing consumes them any more)."""
    return sorted(
        (n for n in names if _PRE_LANE_QUEUE.match(n)), key=lambda n: (n.split(".")[0], int(n.split(".")[1]))
    )


def shard_queues(shards: int, stages: tuple[str, ...] = STAGES) -> list[str]:
    """Every lane's shard queues of ``stages`` (``dispatch.urgent.0`` ... ``responses.bulk.<shards-1>``)."""
    return [lane_queue(stage, lane, n) for stage in stages for lane in LANES for n in range(shards)]


def circuit_queue(replica: str) -> str:
    return f"{CIRCUIT_EVENTS_EXCHANGE}.{replica}"


class ServiceRole(StrEnum):
    """A process that connects to RabbitMQ, and so has a user of its own."""

    POLLER = "poller"
    SENDER = "sender"
    RESPONDER = "responder"
    RECEIPTS = "receipts"
    DLQ = "dlq"
    # Reads the management API only (dashboard, KEDA, queue depths): tag `monitoring`, no vhost rights.
    MONITOR = "monitor"


# Management UI/API tags per role; the others have none and cannot log in to the UI.
ROLE_TAGS: dict[ServiceRole, list[str]] = {ServiceRole.MONITOR: ["monitoring"]}


USER_PREFIX = "switchboard"
_LANE_NAMES = "|".join(lane.value for lane in LANES)
SHARD_QUEUE_NAME = rf"({DISPATCH}|{RESPONSES})\.({_LANE_NAMES})\.\d+"


def service_user(role: ServiceRole, prefix: str = USER_PREFIX) -> str:
    return f"{prefix}-{role.value}"


@dataclass(frozen=True, slots=True)
class Permission:
    """One user's configure / write / read regular expressions in one vhost."""

    configure: str
    write: str
    read: str


def _literal(name: str) -> str:
    """``name`` as a regex matching itself (``-`` left as is, for readable definitions)."""
    return re.sub(r"([.^$*+?{}\[\]\\|()])", r"\\\1", name)


def _any_of(names: list[str]) -> str:
    return "^(" + "|".join(names) + ")$"


@dataclass(frozen=True, slots=True)
class QueueSpec:
    name: str
    arguments: dict[str, Any]
    bound_to: str | None = None
    binding_key: str = ""


@dataclass(frozen=True, slots=True)
class ExchangeSpec:
    name: str
    type: str


@dataclass(frozen=True, slots=True)
class Topology:
    shards: int = 4
    delivery_limit: int = 5
    shard_max_length: int = 1_000_000
    dlq_max_length: int = 10_000_000

    def exchanges(self) -> list[ExchangeSpec]:
        return [
            *(ExchangeSpec(name, CONSISTENT_HASH) for name in LANE_EXCHANGES),
            ExchangeSpec(DEAD_LETTER_EXCHANGE, "fanout"),
            ExchangeSpec(CIRCUIT_EVENTS_EXCHANGE, "fanout"),
        ]

    def shard_arguments(self) -> dict[str, Any]:
        # Only what RabbitMQ 3.10 cannot take from a policy. Everything an operator may tune (delivery
        # limit, dead-lettering, overflow, length) is in :meth:`policies`, so that the arguments the
        # services declare never depend on settings and always equal the exported definitions
        # (a declaration whose arguments differ from the existing queue fails with PRECONDITION_FAILED).
        return {"x-queue-type": "quorum", "x-single-active-consumer": True}

    def dlq_arguments(self) -> dict[str, Any]:
        return {"x-queue-type": "quorum"}

    def queues(self) -> list[QueueSpec]:
        specs = [
            QueueSpec(shard_queue(exchange, n), self.shard_arguments(), exchange, "1")
            for exchange in LANE_EXCHANGES
            for n in range(self.shards)
        ]
        specs.append(QueueSpec(DEAD_LETTER_QUEUE, self.dlq_arguments(), DEAD_LETTER_EXCHANGE, ""))
        return specs

    def shard_policy_definition(self) -> dict[str, Any]:
        """What every shard queue needs: without it a poison message would loop or be dropped."""
        return {
            "delivery-limit": self.delivery_limit,
            "dead-letter-exchange": DEAD_LETTER_EXCHANGE,
            # at-least-once: a dead letter leaves its queue only once the DLQ has confirmed it
            # (it needs overflow reject-publish; with drop-head RabbitMQ falls back to at-most-once).
            "dead-letter-strategy": "at-least-once",
            "overflow": "reject-publish",
            "max-length": self.shard_max_length,
        }

    def dlq_policy_definition(self) -> dict[str, Any]:
        # No delivery-limit and no message-ttl: a dead letter stays until it is requeued or purged,
        # and the dlq admin reads the queue by taking messages and giving them back (each read
        # counts as a delivery). reject-publish: a full DLQ refuses, it never drops the oldest.
        return {"max-length": self.dlq_max_length, "overflow": "reject-publish"}

    def policies(self) -> list[dict[str, Any]]:
        return [
            {
                "name": SHARD_POLICY,
                "pattern": f"^{SHARD_QUEUE_NAME}$",
                "apply-to": "queues",
                "priority": 0,
                "definition": self.shard_policy_definition(),
            },
            {
                "name": DLQ_POLICY,
                "pattern": rf"^{DEAD_LETTER_QUEUE}$",
                "apply-to": "queues",
                "priority": 0,
                "definition": self.dlq_policy_definition(),
            },
        ]

    def permissions(self) -> dict[ServiceRole, Permission]:
        """Least privilege per service, as RabbitMQ regexes over exchange and queue names.

        The admin's set-up declares the topology; services only check it (passive declares, which need
        no permission), so no service may configure a shared exchange or queue: none can delete the
        DLQ, re-bind a queue or declare one of its own (the sender's private circuit-event queues are
        the one exception, and only under their own names). *write* on an exchange is publishing to it
        (each role only where it publishes: receipts only to ``responses``, only the responder to
        ``dlx``), *read* on a queue is consuming from it; binding a private queue needs *write* on
        the queue and *read* on the exchange.
        """
        circuit_queues = _literal(CIRCUIT_EVENTS_EXCHANGE) + r"\..+"

        def exchanges_of(stage: str) -> str:
            return _literal(stage) + rf"\.({_LANE_NAMES})"

        def shards_of(stage: str) -> str:
            return exchanges_of(stage) + r"\.\d+"

        return {
            ServiceRole.POLLER: Permission(
                configure="^$", write=_any_of([exchanges_of(DISPATCH)]), read="^$"
            ),
            # No dlx: a poison dispatch is rejected into the shard queue's dead-letter policy.
            ServiceRole.SENDER: Permission(
                configure=_any_of([circuit_queues]),
                write=_any_of([exchanges_of(RESPONSES), _literal(CIRCUIT_EVENTS_EXCHANGE), circuit_queues]),
                read=_any_of([_literal(CIRCUIT_EVENTS_EXCHANGE), shards_of(DISPATCH), circuit_queues]),
            ),
            # dlq (read): after a crash mid-relay the responder looks there for the letters it may
            # have published already (services/responder/relay.py); it gives every message back.
            ServiceRole.RESPONDER: Permission(
                configure="^$",
                write=_any_of([_literal(DEAD_LETTER_EXCHANGE)]),
                read=_any_of([shards_of(RESPONSES), _literal(DEAD_LETTER_QUEUE)]),
            ),
            # Delivery reports go to the bulk lane only (services/receipts).
            ServiceRole.RECEIPTS: Permission(
                configure="^$", write=_any_of([_literal(lane_exchange(RESPONSES, Lane.BULK))]), read="^$"
            ),
            # The dlq admin publishes nothing (a requeue resets the log in PostgreSQL, checked there;
            # the poller sends it) and consumes only the DLQ.
            ServiceRole.DLQ: Permission(
                configure="^$", write="^$", read=_any_of([_literal(DEAD_LETTER_QUEUE)])
            ),
            ServiceRole.MONITOR: Permission(configure="^$", write="^$", read="^$"),
        }

    def definitions(
        self, vhost: str = "/", users: Mapping[ServiceRole, str] | None = None, user_prefix: str = USER_PREFIX
    ) -> dict[str, Any]:
        """The RabbitMQ definitions document for this topology (``rabbitmqctl import_definitions``).

        ``users`` maps each service to a ``rabbit_password_hashing_sha256`` hash; those services get a
        user ``<user_prefix>-<service>`` with the permissions of :meth:`permissions` on ``vhost``.
        """
        users = users or {}
        permissions = self.permissions()
        return {
            "rabbitmq_version": "3.10.8",
            "users": [
                {
                    "name": service_user(role, user_prefix),
                    "password_hash": password_hash,
                    "hashing_algorithm": "rabbit_password_hashing_sha256",
                    "tags": ROLE_TAGS.get(role, []),
                    "limits": {},
                }
                for role, password_hash in users.items()
            ],
            "permissions": [
                {
                    "user": service_user(role, user_prefix),
                    "vhost": vhost,
                    "configure": permissions[role].configure,
                    "write": permissions[role].write,
                    "read": permissions[role].read,
                }
                for role in users
            ],
            "vhosts": [{"name": vhost}],
            "exchanges": [
                {
                    "name": e.name,
                    "vhost": vhost,
                    "type": e.type,
                    "durable": True,
                    "auto_delete": False,
                    "internal": False,
                    "arguments": {},
                }
                for e in self.exchanges()
            ],
            "queues": [
                {
                    "name": q.name,
                    "vhost": vhost,
                    "durable": True,
                    "auto_delete": False,
                    "arguments": q.arguments,
                }
                for q in self.queues()
            ],
            "bindings": [
                {
                    "source": q.bound_to,
                    "vhost": vhost,
                    "destination": q.name,
                    "destination_type": "queue",
                    "routing_key": q.binding_key,
                    "arguments": {},
                }
                for q in self.queues()
                if q.bound_to
            ],
            "policies": [{"vhost": vhost, **p} for p in self.policies()],
        }
