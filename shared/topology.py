"""Every exchange, queue, header and policy name, declared from this one place.

The same description drives :func:`declare` (idempotent, at service start) and
:func:`definitions` (``rabbitmq/definitions.json``), so the two cannot drift apart.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

DISPATCH_EXCHANGE = "dispatch"
RESPONSES_EXCHANGE = "responses"
DEAD_LETTER_EXCHANGE = "dlx"
DEAD_LETTER_QUEUE = "dlq"
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

MESSAGE_TYPE_DISPATCH = "switchboard.dispatch.v1"
MESSAGE_TYPE_OUTCOME = "switchboard.outcome.v1"
MESSAGE_TYPE_DEAD_LETTER = "switchboard.dead_letter.v1"
CONTENT_TYPE = "application/json"


def shard_queue(exchange: str, shard: int) -> str:
    return f"{exchange}.{shard}"


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

    def exchanges(self) -> list[ExchangeSpec]:
        return [
            ExchangeSpec(DISPATCH_EXCHANGE, CONSISTENT_HASH),
            ExchangeSpec(RESPONSES_EXCHANGE, CONSISTENT_HASH),
            ExchangeSpec(DEAD_LETTER_EXCHANGE, "fanout"),
        ]

    def shard_arguments(self) -> dict[str, Any]:
        # Safety-critical settings are arguments so that a queue is never without them; an
        # operator tunes the limits through the policies below (the lower value wins).
        return {
            "x-queue-type": "quorum",
            "x-single-active-consumer": True,
            "x-delivery-limit": self.delivery_limit,
            "x-dead-letter-exchange": DEAD_LETTER_EXCHANGE,
            "x-dead-letter-strategy": "at-least-once",
            "x-overflow": "reject-publish",
        }

    def queues(self) -> list[QueueSpec]:
        specs = [
            QueueSpec(shard_queue(exchange, n), self.shard_arguments(), exchange, "1")
            for exchange in (DISPATCH_EXCHANGE, RESPONSES_EXCHANGE)
            for n in range(self.shards)
        ]
        specs.append(QueueSpec(DEAD_LETTER_QUEUE, {"x-queue-type": "quorum"}, DEAD_LETTER_EXCHANGE, ""))
        return specs

    def policies(self) -> list[dict[str, Any]]:
        return [
            {
                "name": SHARD_POLICY,
                "pattern": rf"^({DISPATCH_EXCHANGE}|{RESPONSES_EXCHANGE})\.\d+$",
                "apply-to": "queues",
                "priority": 0,
                "definition": {
                    "delivery-limit": self.delivery_limit,
                    "max-length": self.shard_max_length,
                },
            },
            {
                "name": DLQ_POLICY,
                "pattern": rf"^{DEAD_LETTER_QUEUE}$",
                "apply-to": "queues",
                "priority": 0,
                "definition": {"max-length": 10_000_000},
            },
        ]

    def definitions(self, vhost: str = "/") -> dict[str, Any]:
        """The RabbitMQ definitions document for this topology (``rabbitmqctl import_definitions``)."""
        return {
            "rabbitmq_version": "3.10.8",
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
                {"name": q.name, "vhost": vhost, "durable": True, "auto_delete": False, "arguments": q.arguments}
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
