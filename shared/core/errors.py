"""Switchboard's exception tree.

SwitchboardError
 ├── ConfigurationError
 │    ├── BackendUnusable
 │    ├── TopologyConflict                   shared/ops/setup.py
 │    └── InsecureConfiguration              shared/runtime/hardening.py
 ├── MessageError
 │    ├── MalformedMessage
 │    ├── PayloadTooLarge
 │    └── MessageRefused
 ├── ReceiptError(status, result)           services/receipts/parse.py
 ├── ProviderError(code, message)
 │    ├── TransientProviderError
 │    │    └── TransportError                services/sender/adapters/transport.py
 │    └── PermanentProviderError
 │         ├── InvalidRecipient
 │         │    └── DestinationRefused
 │         └── InvalidPayload
 ├── BatchRefused
 └── BusError
      ├── PublishError
      │    ├── PublishRefused
      │    └── PublishUnconfirmed
      ├── ChannelGone
      └── InDoubtUnresolved

Classes beside the module that raises them are drawn with its path. Provider answers (HTTP statuses,
provider error codes) are classified by tables (services/sender/classification.py) into outcome values, not
raised; what is raised is what has no answer to classify.
"""

from __future__ import annotations


class SwitchboardError(Exception):
    """Base of every error Switchboard raises on purpose."""


class ConfigurationError(SwitchboardError):
    """Settings or routing configuration that cannot work."""


class BackendUnusable(ConfigurationError):
    """PostgreSQL or RabbitMQ refuses us for a reason retrying cannot fix (missing database or vhost,
    refused login); the message is one line that names the command that fixes it."""


class MessageError(SwitchboardError):
    """A message on the wire that cannot be used; it goes to the DLQ, never back to the queue."""


class MalformedMessage(MessageError):
    """Bytes that are not JSON, or JSON that does not fit the message schema."""


class PayloadTooLarge(MessageError):
    """A message larger than the configured limit."""


class MessageRefused(MessageError):
    """A message the database refuses on its own (not an outage): dead-lettered, never retried."""


class BatchRefused(SwitchboardError):
    """The database refused a batch as a whole: its messages are applied one at a time."""


class ProviderError(SwitchboardError):
    """A provider refused or failed a send."""

    def __init__(self, code: str, message: str = "") -> None:
        super().__init__(f"{code}: {message}" if message else code)
        self.code = code
        self.message = message


class TransientProviderError(ProviderError):
    """No answer (timeout, connection reset): retry the same provider after a backoff."""


class PermanentProviderError(ProviderError):
    """Invalid address, blocked, spam, hard bounce: never retry."""


class InvalidRecipient(PermanentProviderError):
    """A recipient that no provider could deliver to (checked before any provider call)."""


class DestinationRefused(InvalidRecipient):
    """A URL the outbound HTTP policy will not call: an internal address, credentials in it."""


class InvalidPayload(PermanentProviderError):
    """A payload that an adapter cannot turn into a request (e.g. an email header with CR/LF)."""

    def __init__(self, message: str) -> None:
        super().__init__("INVALID_PAYLOAD", message)


class BusError(SwitchboardError):
    """RabbitMQ did not do what was asked of it."""


class PublishError(BusError):
    """RabbitMQ did not confirm a publish (nack, return, or lost channel)."""


class PublishRefused(PublishError):
    """The broker answered no (a nack, or a return of an unroutable message): it holds no copy."""


class PublishUnconfirmed(PublishError):
    """No answer (timeout, lost channel or connection): the broker may or may not hold the message."""


class ChannelGone(BusError):
    """The channel a delivery came on is closed: it cannot be settled, and the broker redelivers it."""


class InDoubtUnresolved(BusError):
    """The DLQ could not be read whole: in-doubt dead-letter rows stay marked and are tried again later."""
