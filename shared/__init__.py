"""Switchboard's common package: core (pure decisions, models), bus (RabbitMQ), db (PostgreSQL), net (outbound
policy), runtime (process plumbing) and ops (operator tooling)."""
