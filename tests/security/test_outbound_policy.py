"""Threat: a tenant aims a webhook at an internal address (SSRF). The outbound policy's decisions, pure:
every spelling of an internal address is refused, credentials in URLs are refused, an operator's
per-tenant allowlist opens exactly what it names, and a name is judged by what it resolves to."""

from __future__ import annotations

import asyncio
import socket
from concurrent.futures import ThreadPoolExecutor
from ipaddress import ip_network
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shared.core.errors import DestinationRefused
from shared.core.recipients import normalise
from shared.net.outbound import (
    Resolve,
    allowed_for,
    check_url,
    connect_refusal,
    resolve_and_check,
    system_resolve,
)
from shared.runtime.settings import OutboundPolicy

INTERNAL_URLS = [
    "http://127.0.0.1/",
    "http://127.0.0.1:15672/api/users",
    "http://localhost:15672/",
    "http://LOCALHOST./",
    "http://admin.localhost/",
    "http://[::1]:8080/",
    "http://2130706433/",  # decimal 127.0.0.1
    "http://0x7f000001/",  # hexadecimal
    "http://0x7f.1/",  # mixed short form
    "http://0177.0.0.1/",  # octal
    "http://127.1/",  # short form
    "http://017700000001/",
    "http://[::ffff:127.0.0.1]/",  # IPv4-mapped
    "http://[::ffff:7f00:1]/",
    "http://[::127.0.0.1]/",  # IPv4-compatible
    "http://[2002:7f00:1::]/",  # 6to4 around 127.0.0.1
    "http://[64:ff9b::a9fe:a9fe]/",  # NAT64 around 169.254.169.254
    "http://169.254.169.254/latest/meta-data/",  # cloud metadata
    "http://[fe80::1]/",
    "http://[fe80::1%25eth0]/",
    "http://10.0.0.1/",
    "http://172.16.5.4/",
    "http://192.168.1.1/",
    "http://100.64.0.1/",  # shared address space
    "http://0.0.0.0/",
    "http://0/",
    "http://[::]/",
    "http://224.0.0.1/",
    "http://[ff02::1]/",
    "http://240.0.0.1/",
    "http://255.255.255.255/",
    "http://[fc00::1]/",
    "http://192.0.2.1/",  # documentation
]


@pytest.mark.parametrize("url", INTERNAL_URLS)
def test_every_spelling_of_an_internal_address_is_refused(url: str) -> None:
    with pytest.raises(DestinationRefused) as refused:
        check_url(url)
    assert refused.value.code == "ADDRESS_NOT_ALLOWED"


@pytest.mark.parametrize(
    "url",
    [
        "http://user:pass@example.com/",
        "http://guest:guest@127.0.0.1:15672/api/users",
        "https://token@hooks.example.com/in",
        "http://example.com@127.0.0.1/",
    ],
)
def test_credentials_in_a_url_are_refused_at_validation_and_by_the_policy(url: str) -> None:
    with pytest.raises(DestinationRefused):
        check_url(url)
    with pytest.raises(Exception, match="credentials"):
        normalise("webhook", url)


@pytest.mark.parametrize(
    "url",
    [
        "https://hooks.example.com/in",
        "http://93.184.216.34/x",
        "https://[2606:2800:220:1::]/",
        "http://[::ffff:8.8.8.8]/",
    ],
)
def test_public_destinations_pass(url: str) -> None:
    assert check_url(url).port in (80, 443)


@pytest.mark.parametrize(
    "url", ["ftp://example.com/", "file:///etc/passwd", "gopher://127.0.0.1/", "http:///x"]
)
def test_other_schemes_and_hostless_urls_are_refused(url: str) -> None:
    with pytest.raises(DestinationRefused):
        check_url(url)


def test_the_allowlist_opens_only_what_it_names_and_only_for_its_tenant() -> None:
    settings = OutboundPolicy(outbound_allowlist={"acme": ["10.1.2.0/24"], "*": ["127.0.0.1/32"]})
    networks = settings.outbound_networks()
    acme, other = allowed_for(networks, "acme"), allowed_for(networks, "globex")
    assert check_url("http://10.1.2.3/hook", acme).host == "10.1.2.3"
    assert check_url("http://127.0.0.1:9/", other).port == 9
    for url, allowed in [
        ("http://10.1.2.3/", other),
        ("http://10.1.3.1/", acme),
        ("http://127.0.0.2/", acme),
    ]:
        with pytest.raises(DestinationRefused):
            check_url(url, allowed)


def test_a_malformed_allowlist_is_a_settings_error() -> None:
    with pytest.raises(ValueError, match="outbound_allowlist"):
        OutboundPolicy(outbound_allowlist={"acme": ["not a network"]})


async def test_a_name_is_judged_by_every_address_it_resolves_to() -> None:
    async def resolves_to(*addresses: str):  # type: ignore[no-untyped-def]
        async def resolve(host: str, port: int) -> list[str]:
            return list(addresses)

        return resolve

    assert (
        await resolve_and_check("https://ok.test/", resolve=await resolves_to("93.184.216.34"))
    ).host == "ok.test"
    for addresses in [("127.0.0.1",), ("93.184.216.34", "10.0.0.7"), ("::1",), ("169.254.169.254",)]:
        with pytest.raises(DestinationRefused, match="resolves to"):
            await resolve_and_check("https://evil.test/", resolve=await resolves_to(*addresses))


def failing_with(error: BaseException, delay_s: float = 0) -> Resolve:
    async def resolve(host: str, port: int) -> list[str]:
        await asyncio.sleep(delay_s)
        raise error

    return resolve


@pytest.mark.parametrize(
    "error",
    [
        socket.gaierror(socket.EAI_NONAME, "Name or service not known"),  # NXDOMAIN
        socket.gaierror(socket.EAI_NODATA, "No address associated with hostname"),
    ],
)
async def test_a_name_that_does_not_exist_is_refused_at_ingest(error: socket.gaierror) -> None:
    with pytest.raises(DestinationRefused, match="does not exist") as refused:
        await resolve_and_check("https://gone.test/", resolve=failing_with(error))
    assert refused.value.code == "UNRESOLVABLE_HOST"


@pytest.mark.parametrize(
    "resolve",
    [
        failing_with(socket.gaierror(socket.EAI_AGAIN, "Temporary failure in name resolution")),
        failing_with(socket.gaierror(socket.EAI_FAIL, "Non-recoverable failure in name resolution")),
        failing_with(OSError("network is unreachable")),
        failing_with(TimeoutError(), delay_s=30),  # the resolver does not answer within timeout_s
    ],
)
async def test_a_name_that_cannot_be_resolved_now_is_left_to_the_connect_time_check(
    resolve: Resolve,
) -> None:
    destination = await resolve_and_check("https://later.test/", resolve=resolve, timeout_s=0.1)
    assert (destination.host, destination.address) == ("later.test", None)


@pytest.mark.parametrize("url", ["http://hooks.invalid/", "https://a.b.INVALID./x", "http://invalid/"])
async def test_invalid_names_are_refused_without_asking_a_resolver(url: str) -> None:
    asked: list[str] = []

    async def resolve(host: str, port: int) -> list[str]:
        asked.append(host)
        return ["93.184.216.34"]

    with pytest.raises(DestinationRefused, match="does not exist"):
        await resolve_and_check(url, resolve=resolve)
    assert asked == []


def test_lookups_run_off_the_event_loop_in_threads_of_their_own() -> None:
    # Given an event loop whose default thread pool is unusable (as if other work filled it)
    class Refusing(ThreadPoolExecutor):
        def submit(self, *args: object, **kwargs: object) -> Any:
            raise AssertionError("a lookup used the default executor")

    refusing = Refusing(max_workers=1)
    loop = asyncio.new_event_loop()
    loop.set_default_executor(refusing)
    ticks = 0

    async def ticking() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0)

    async def resolve_while_ticking() -> list[str]:
        ticker = asyncio.create_task(ticking())
        try:
            # When a name from the hosts file is resolved (no traffic leaves the machine)
            return await system_resolve("localhost", 80)
        finally:
            ticker.cancel()

    try:
        addresses = loop.run_until_complete(resolve_while_ticking())
    finally:
        loop.close()
        refusing.shutdown()
    # Then it resolved in the lookups' own threads while the loop kept running
    assert addresses and all(connect_refusal(a) == "loopback address" for a in addresses)
    assert ticks > 0


@given(st.integers(0, 2**32 - 1))
def test_a_numeric_host_is_judged_as_the_address_it_spells(value: int) -> None:
    from ipaddress import IPv4Address

    address = IPv4Address(value)
    decimal = f"http://{value}/"
    public = address.is_global and not address.is_multicast
    if public:
        assert check_url(decimal).address == address
    else:
        with pytest.raises(DestinationRefused):
            check_url(decimal)


def test_connect_time_check_reads_socket_addresses() -> None:
    assert connect_refusal("127.0.0.1") == "loopback address"
    assert connect_refusal("::ffff:127.0.0.1") == "loopback address"
    assert connect_refusal("fe80::1%2") == "link-local address"
    assert connect_refusal("93.184.216.34") is None
    assert connect_refusal("127.0.0.1", [ip_network("127.0.0.0/8")]) is None
