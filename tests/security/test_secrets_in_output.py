"""Threat: a password in a URL setting leaks through what a command or the dashboard prints (a traceback
with local variables, an error message, a log line). Every command-line tool is run against ports where
nothing listens, with a password in every URL; its output must name the problem without the password
and without a traceback. The dashboard refuses to listen beyond loopback without a token."""

from __future__ import annotations

import base64
import os
import subprocess
import sys

import pytest
from aiohttp.test_utils import TestClient, TestServer

from services.dashboard.app import build_app
from services.dashboard.auth import exposure_problem
from services.dashboard.collect import _describe
from shared.core.redact import mask_event, mask_url_credentials
from tools.ports import free_port
from tools.stack import ROOT

PASSWORD = "Pa55-w0rd-LEAK"
COMMANDS = [
    ["admin", "check"],
    ["admin", "migrate"],
    ["admin", "setup"],
    ["admin", "users"],
    ["api-keys", "list"],
    ["api-keys", "create", "--tenant", "acme"],
    ["dlq", "list"],
    ["dlq", "stats"],
    ["dlq", "requeue", "--all", "--yes"],
]


def nowhere_env() -> dict[str, str]:
    closed = free_port()
    return {
        **{k: v for k, v in os.environ.items() if not k.startswith("SWITCHBOARD_")},
        "SWITCHBOARD_DATABASE_URL": f"postgresql://owner:{PASSWORD}@127.0.0.1:{closed}/switchboard",
        "SWITCHBOARD_RABBITMQ_URL": f"amqp://admin:{PASSWORD}@127.0.0.1:{closed}/switchboard",
        "SWITCHBOARD_RABBITMQ_MANAGEMENT_URL": f"http://admin:{PASSWORD}@127.0.0.1:{closed}",
        "SWITCHBOARD_RABBITMQ_MANAGEMENT_PASSWORD": PASSWORD,
        "SWITCHBOARD_API_KEY_PEPPER": PASSWORD,
        "SWITCHBOARD_LOG_FORMAT": "json",
    }


@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
def test_no_command_prints_a_password_or_a_traceback(command: list[str]) -> None:
    # Given every URL pointing at a closed loopback port, with a password in it
    # When the command runs
    done = subprocess.run(
        [sys.executable, "-m", "services.cli", *command],
        env=nowhere_env(),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
    )
    output = done.stdout + done.stderr
    # Then it fails, saying why, without the password and without a traceback
    assert done.returncode != 0, output
    assert PASSWORD not in output, output
    assert "Traceback" not in output and "locals" not in output.lower(), output


def test_urls_lose_their_credentials_in_logs_and_messages() -> None:
    assert mask_url_credentials("amqp://guest:guest@127.0.0.1:5672/x") == "amqp://guest:***@127.0.0.1:5672/x"
    event = mask_event(
        None, "warning", {"error": f"ConnectError('http://monitor:{PASSWORD}@rabbit:15672/api')"}
    )
    assert PASSWORD not in str(event)
    described = _describe(
        RuntimeError(f"Client error '401' for url 'http://monitor:{PASSWORD}@rabbit:15672/api'")
    )
    assert PASSWORD not in described and "monitor:***@" in described


def test_the_dashboard_needs_a_token_beyond_loopback() -> None:
    assert exposure_problem("127.0.0.1", "") is None
    assert exposure_problem("::1", "") is None
    assert "SWITCHBOARD_DASHBOARD_TOKEN" in (exposure_problem("0.0.0.0", "") or "")
    assert exposure_problem("0.0.0.0", "t0ken") is None


def test_the_dashboard_refuses_to_start_exposed_without_a_token() -> None:
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("SWITCHBOARD_")},
        "SWITCHBOARD_DASHBOARD_HOST": "0.0.0.0",
        "SWITCHBOARD_DASHBOARD_PORT": str(free_port()),
    }
    done = subprocess.run(
        [sys.executable, "-m", "services.dashboard"],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 78
    assert "SWITCHBOARD_DASHBOARD_TOKEN" in done.stdout + done.stderr


async def test_with_a_token_every_request_must_carry_it() -> None:
    app = build_app(None, "t0ken-123")  # type: ignore[arg-type]  # the page itself needs no collector
    async with TestClient(TestServer(app, host="127.0.0.1")) as client:
        anonymous = await client.get("/")
        wrong = await client.get("/", headers={"Authorization": "Bearer nope"})
        bearer = await client.get("/", headers={"Authorization": "Bearer t0ken-123"})
        basic = base64.b64encode(b"ops:t0ken-123").decode()
        browser = await client.get("/", headers={"Authorization": f"Basic {basic}"})
        api = await client.get("/api/snapshot")
    assert (anonymous.status, wrong.status, api.status) == (401, 401, 401)
    assert anonymous.headers["WWW-Authenticate"].startswith("Basic")
    assert (bearer.status, browser.status) == (200, 200)
