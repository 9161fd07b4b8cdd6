"""Threat: a tenant's webhook used as a probe of the internal network (SSRF with read-back), a
rebinding DNS name, a huge answer, and one tenant's failing endpoint shutting webhooks off for all.

A real HTTP server on loopback plays the internal service; the real webhook adapter and guarded
transport send to it. Loopback is the only target of any request here.
"""

from __future__ import annotations

import random
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from ipaddress import ip_network
from typing import Any

import pytest
from aiohttp import web
from aiohttp.abc import AbstractResolver, ResolveResult

from services.sender.adapters import SendRequest, SendResult
from services.sender.adapters.guarded import GuardedTransport
from services.sender.adapters.transport import AiohttpTransport, HttpRequest
from services.sender.adapters.webhook import WebhookAdapter
from services.sender.circuits import CircuitBoard
from services.sender.ratelimit import RateLimiter
from services.sender.router import Router
from shared.core.circuit import CircuitPolicy
from shared.core.errors import DestinationRefused
from shared.core.models import DispatchMessage, OutcomeClass
from shared.core.routing import ChannelPolicy, ProviderSpec, Route, RoutingConfig, Strategy
from shared.net.outbound import resolve_and_check
from tests.unit.test_routing_router import NOW, DryStore, NoPacing
from tools.ports import free_port

SECRET_BODY = "root:x:0:0 internal-secret-body"
BIG = 8 * 1024 * 1024


@dataclass
class Internal:
    """An 'internal' service on loopback: what it was asked, and answers worth stealing."""

    port: int
    hits: list[str] = field(default_factory=list)


@pytest.fixture
async def internal() -> AsyncIterator[Internal]:
    server = Internal(free_port())

    async def secret(request: web.Request) -> web.Response:
        server.hits.append(request.path)
        return web.Response(status=500, text=SECRET_BODY)

    async def big(request: web.Request) -> web.StreamResponse:
        server.hits.append(request.path)
        response = web.StreamResponse(status=200)
        await response.prepare(request)
        chunk = b"x" * 65536
        try:
            for _ in range(BIG // len(chunk)):
                await response.write(chunk)
        except ConnectionError:
            pass  # the client stopped reading, as it should
        return response

    app = web.Application()
    app.router.add_route("*", "/big", big)
    app.router.add_route("*", "/{tail:.*}", secret)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", server.port).start()
    try:
        yield server
    finally:
        await runner.cleanup()


class Rebinding(AbstractResolver):
    """A DNS name that resolves where the test says (an attacker's name, re-pointed at loopback)."""

    def __init__(self, address: str) -> None:
        self.address = address

    async def resolve(self, host: str, port: int = 0, family: int = socket.AF_INET) -> list[ResolveResult]:
        return [
            ResolveResult(
                hostname=host, host=self.address, port=port, family=socket.AF_INET, proto=0, flags=0
            )
        ]

    async def close(self) -> None:
        return None


def request(url: str, tenant: str = "mallory", n: int = 1) -> SendRequest:
    return SendRequest("hooks", "webhook", url, {"event": "x"}, f"{n}-1", n, 1, tenant)


def loopback_urls(port: int) -> list[str]:
    return [
        f"http://127.0.0.1:{port}/api/users",
        f"http://localhost:{port}/",
        f"http://[::1]:{port}/",
        f"http://2130706433:{port}/",
        f"http://0x7f.1:{port}/",
        f"http://127.1:{port}/",
        f"http://[::ffff:127.0.0.1]:{port}/",
        f"http://guest:guest@127.0.0.1:{port}/api/whoami",
    ]


async def test_no_spelling_of_loopback_reaches_the_internal_service(internal: Internal) -> None:
    # Given the sender's webhook adapter and guarded transport, with no allowlist
    transport = GuardedTransport(5, 4)
    adapter = WebhookAdapter({}, transport, default_secret="k")
    try:
        # When a tenant's webhooks aim at the internal service in every spelling
        results = [await adapter.send(request(url)) for url in loopback_urls(internal.port)]
    finally:
        await transport.close()
    # Then each is a permanent refusal with a generic code, and the service saw nothing
    assert {r.outcome for r in results} == {OutcomeClass.PERMANENT}
    assert {r.error_code for r in results} <= {"ADDRESS_NOT_ALLOWED", "URL_CREDENTIALS"}
    assert internal.hits == []


async def test_the_guarded_transport_refuses_at_connect_time_whatever_the_adapter_let_through(
    internal: Internal,
) -> None:
    # Given the transport alone (no URL check before it), and numeric hosts the C resolver reads
    transport = GuardedTransport(5, 4)
    try:
        for url in [f"http://127.0.0.1:{internal.port}/", f"http://2130706433:{internal.port}/"]:
            # When it is asked to POST there / Then the connection is refused before any byte is sent
            with pytest.raises(DestinationRefused) as refused:
                await transport.request(HttpRequest("POST", url, {}, b"{}", tenant="mallory"))
            assert refused.value.code == "ADDRESS_NOT_ALLOWED"
    finally:
        await transport.close()
    assert internal.hits == []


async def test_dns_rebinding_is_caught_when_the_sender_connects(internal: Internal) -> None:
    # Given a name that resolved to a public address when the API checked it
    async def public(host: str, port: int) -> list[str]:
        return ["93.184.216.34"]

    url = f"http://rebind.attacker.test:{internal.port}/steal"
    assert (await resolve_and_check(url, resolve=public)).host == "rebind.attacker.test"
    # When it resolves to loopback by the time the sender connects
    transport = GuardedTransport(5, 4, resolver=Rebinding("127.0.0.1"))
    try:
        result = await WebhookAdapter({}, transport, default_secret="k").send(request(url))
    finally:
        await transport.close()
    # Then the connection is refused, permanently, and the internal service saw nothing
    assert (result.outcome, result.error_code) == (OutcomeClass.PERMANENT, "ADDRESS_NOT_ALLOWED")
    assert internal.hits == []


async def test_an_allowed_internal_target_answers_but_its_body_never_reaches_the_tenant(
    internal: Internal,
) -> None:
    # Given an operator allowing tenant acme (only) to reach loopback
    allow = {"acme": (ip_network("127.0.0.1/32"),)}
    transport = GuardedTransport(5, 4, allow)
    adapter = WebhookAdapter({}, transport, default_secret="k", allowlist=allow)
    closed = free_port()
    try:
        # When acme's webhook gets a 500 with a body, and another tenant tries the same URL,
        # and acme's next webhook aims at a closed port
        answered = await adapter.send(request(f"http://127.0.0.1:{internal.port}/hook", "acme"))
        other = await adapter.send(request(f"http://127.0.0.1:{internal.port}/hook", "mallory"))
        unreachable = await adapter.send(request(f"http://127.0.0.1:{closed}/hook", "acme"))
    finally:
        await transport.close()
    # Then acme sees the status class and a generic text only, never the body or a socket error
    assert (answered.outcome, answered.error_code, answered.error_message) == (
        OutcomeClass.TRANSIENT,
        "SERVER_ERROR",
        "HTTP 500",
    )
    assert (other.outcome, other.error_code) == (OutcomeClass.PERMANENT, "ADDRESS_NOT_ALLOWED")
    assert (unreachable.error_code, unreachable.error_message) == (
        "CONNECTION_ERROR",
        "the endpoint could not be reached",
    )
    assert internal.hits == ["/hook"]


async def test_a_huge_answer_is_read_only_up_to_64_kib(internal: Internal) -> None:
    # Given an endpoint answering 8 MiB
    transport = GuardedTransport(10, 4, {"*": (ip_network("127.0.0.1/32"),)})
    try:
        # When the webhook transport reads its answer
        response = await transport.request(
            HttpRequest("POST", f"http://127.0.0.1:{internal.port}/big", {}, b"{}")
        )
    finally:
        await transport.close()
    # Then it keeps 64 KiB and says it cut the rest
    assert (len(response.content), response.truncated) == (64 * 1024, True)


async def test_provider_answers_are_capped_too(internal: Internal) -> None:
    transport = AiohttpTransport(10, 4, max_response_bytes=100_000)
    try:
        response = await transport.request(
            HttpRequest("POST", f"http://127.0.0.1:{internal.port}/big", {}, b"")
        )
    finally:
        await transport.close()
    assert (len(response.content), response.truncated) == (100_000, True)


# ---- one tenant's failing endpoint must not open the webhooks circuit for everyone --------------


class FailingHosts:
    """The adapter seam: endpoints on ``bad.example`` time out, the others answer 200."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    def get(self, spec: ProviderSpec) -> FailingHosts:
        return self

    async def send(self, request: SendRequest) -> SendResult:
        self.calls.append(request.recipient)
        if "bad.example" in request.recipient:
            return SendResult(OutcomeClass.TRANSIENT, 1.0, error_code="TIMEOUT")
        return SendResult(OutcomeClass.SUCCESS, 1.0)


def hook(n: int, url: str, tenant: str) -> DispatchMessage:
    fields: dict[str, Any] = {"tenant": tenant, "channel": "webhook", "recipient": url}
    return DispatchMessage(
        log_id=n, attempt=1, payload={}, priority=1, created_at=NOW, claimed_at=NOW, **fields
    )


async def test_a_failing_endpoint_opens_the_circuit_of_its_host_only() -> None:
    # Given one webhook provider for every tenant
    config = RoutingConfig(
        1,
        {"hooks": ProviderSpec("hooks", "webhook")},
        {"webhook": (Route("hooks", 0, 1, 0.0),)},
        {"webhook": ChannelPolicy(Strategy.FALLBACK)},
        {},
    )
    board = CircuitBoard(CircuitPolicy(window=4, min_calls=4, open_s=60), "me")
    adapters = FailingHosts()
    router = Router(
        lambda: config,
        dict,
        board,
        RateLimiter(DryStore(), 0.02),
        NoPacing(),  # type: ignore[arg-type]
        adapters,  # type: ignore[arg-type]
        max_payload_bytes=10_000,
        max_wait_s=0.05,
        rng=random.Random(1),
    )
    # When mallory's endpoint fails until its circuit opens
    for n in range(1, 7):
        await router.attempt(hook(n, f"https://bad.example/h{n}", "mallory"))
    # Then mallory's later webhooks are refused locally, while acme's still go out
    refused = await router.attempt(hook(10, "https://bad.example/h10", "mallory"))
    delivered = await router.attempt(hook(11, "https://good.example/in", "acme"))
    assert refused.error_code == "ALL_PROVIDERS_UNAVAILABLE"
    assert delivered.outcome == OutcomeClass.SUCCESS
    assert adapters.calls[-1] == "https://good.example/in"
    assert "hooks" not in board.snapshot()
