"""Secrets never reach a log line or a repr."""

from __future__ import annotations

import asyncio
import secrets

import pytest

from shared.ops.management import Management
from shared.runtime.settings import Settings
from tests.helpers import all_terminal, insert_logs, wait_until
from tests.integration.test_pipeline import start_pipeline
from tools.stack import Stack


def test_settings_repr_hides_passwords() -> None:
    settings = Settings(
        database_url="postgresql://app:db-hunter2@127.0.0.1:5432/x",
        rabbitmq_url="amqp://app:mq-hunter2@127.0.0.1:5672/x",
        rabbitmq_management_password="mgmt-hunter2",
    )
    text = repr(settings) + str(settings) + str(settings.model_dump())
    assert "hunter2" not in text


@pytest.mark.e2e
async def test_a_run_with_passwords_never_logs_them(stack: Stack, pool) -> None:
    # Given a RabbitMQ user and a database URL that both carry passwords
    env = stack.environment
    mq_password, db_password = f"mq-{secrets.token_hex(8)}", f"db-{secrets.token_hex(8)}"
    user = f"{env.name}-app"
    async with Management(env.settings) as management:
        await management.put_user(user, mq_password)
        await management.set_permissions(env.vhost, user, ".*", ".*", ".*")
    amqp_url = env.amqp_url.replace("guest:guest@", f"{user}:{mq_password}@")
    database_url = env.database_url.replace("postgres@", f"postgres:{db_password}@")
    try:
        start_pipeline(stack, senders=1, rabbitmq_url=amqp_url, database_url=database_url)
        # ... and a poller that cannot reach its broker at first (connection errors are logged)
        stack.add(
            "poller",
            "poller-unreachable",
            rabbitmq_url=amqp_url.replace(":5672/", ":5999/"),
            database_url=database_url,
        )
        stack.processes["poller-unreachable"].start()
        await stack.start("mock_provider", "poller", "sender-0", "responder")
        # When messages flow, including failures and retries
        await insert_logs(pool, [{"channel": "sms", "recipient": f"+1415222{i:04d}"} for i in range(200)])
        await wait_until(lambda: all_terminal(pool), timeout=60, what="every log terminal")
        await asyncio.sleep(1)
    finally:
        stack.stop()
        async with Management(env.settings) as management:
            await management.client.delete(f"/users/{user}")
    # Then no log line of any process contains either password
    logs = {name: p.log_path.read_text(errors="replace") for name, p in stack.processes.items()}
    assert "retrying" in logs["poller-unreachable"], "the unreachable poller should have logged its retries"
    for name, text in logs.items():
        assert mq_password not in text, f"{name} logged the RabbitMQ password"
        assert db_password not in text, f"{name} logged the database password"
