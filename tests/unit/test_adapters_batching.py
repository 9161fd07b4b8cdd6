"""services/sender/adapters/batching.py (grouping concurrent sends into bulk calls) and the mock JSON
adapter's bulk call (services/sender/adapters/mockjson.py): request shape and answer mapping."""

from __future__ import annotations

import asyncio
from collections.abc import Hashable
from dataclasses import dataclass, field, replace

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import REGISTRY

from services.sender.adapters import build_adapter
from services.sender.adapters.base import SendRequest, SendResult
from services.sender.adapters.batching import BatchingAdapter
from services.sender.adapters.mockjson import MockJsonAdapter, result_from_answer, results_from_batch
from services.sender.adapters.transport import HttpRequest, HttpResponse, MockTransport, TransportError
from services.sender.settings import SenderSettings
from shared.core.models import OutcomeClass
from shared.core.routing import ProviderSpec

P, T, R, S = OutcomeClass.PERMANENT, OutcomeClass.TRANSIENT, OutcomeClass.RECOVERABLE, OutcomeClass.SUCCESS


def request(n: int, provider: str = "gw", channel: str = "sms") -> SendRequest:
    return SendRequest(provider, channel, f"+4479111{n:05d}", {"body": f"hi {n}"}, f"{n}-1", n, 1)


def ok(r: SendRequest) -> SendResult:
    """The fake provider's answer: the request's own key as the reference, so callers can be told apart."""
    return SendResult(S, 1.0, vendor_ref=r.idempotency_key)


@dataclass
class Call:
    kind: str  # "send" or "send_batch"
    keys: list[str]
    at: float  # loop clock when the inner adapter was called


@dataclass
class FakeBulk:
    """An inner adapter that records each call; ``gate`` (when set) holds calls until it is set."""

    gate: asyncio.Event | None = None
    error: Exception | None = None
    drop: int = 0  # results left off each bulk answer
    calls: list[Call] = field(default_factory=list)
    entered: asyncio.Event = field(default_factory=asyncio.Event)
    closed: bool = False

    def batch_key(self, r: SendRequest) -> Hashable:
        return r.provider, r.channel

    async def _enter(self, kind: str, requests: list[SendRequest]) -> None:
        self.calls.append(
            Call(kind, [r.idempotency_key for r in requests], asyncio.get_running_loop().time())
        )
        self.entered.set()
        if self.gate is not None:
            await self.gate.wait()
        if self.error is not None:
            raise self.error

    async def send(self, r: SendRequest) -> SendResult:
        await self._enter("send", [r])
        return ok(r)

    async def send_batch(self, requests: list[SendRequest]) -> list[SendResult]:
        await self._enter("send_batch", requests)
        return [ok(r) for r in requests][: len(requests) - self.drop]

    async def close(self) -> None:
        self.closed = True


@dataclass
class SlowBulk:
    """Answers after a few event-loop turns, counting how many bulk (non-urgent) calls overlap."""

    batches: list[list[str]] = field(default_factory=list)
    bulk_in_flight: int = 0
    most_bulk_in_flight: int = 0

    def batch_key(self, r: SendRequest) -> Hashable:
        return r.provider, r.channel

    async def _call(self, requests: list[SendRequest]) -> list[SendResult]:
        bulk = not (len(requests) == 1 and requests[0].urgent)
        self.batches.append([r.idempotency_key for r in requests])
        self.bulk_in_flight += bulk
        self.most_bulk_in_flight = max(self.most_bulk_in_flight, self.bulk_in_flight)
        for _ in range(3):
            await asyncio.sleep(0)
        self.bulk_in_flight -= bulk
        return [ok(r) for r in requests]

    async def send(self, r: SendRequest) -> SendResult:
        return (await self._call([r]))[0]

    async def send_batch(self, requests: list[SendRequest]) -> list[SendResult]:
        return await self._call(requests)

    async def close(self) -> None:
        return None


async def send_all(adapter: BatchingAdapter, requests: list[SendRequest]) -> list[SendResult]:
    return await asyncio.gather(*(adapter.send(r) for r in requests))


# ---- BatchingAdapter ------------------------------------------------------------------------------------


async def test_sends_in_one_turn_to_one_key_become_one_bulk_call_with_results_in_order() -> None:
    inner = FakeBulk()
    adapter = BatchingAdapter(inner, max_batch=100, max_in_flight=4)
    requests = [request(n, provider="batch-one-turn") for n in range(1, 6)]
    results = await asyncio.wait_for(send_all(adapter, requests), 1)
    assert [c.kind for c in inner.calls] == ["send_batch"]
    assert inner.calls[0].keys == ["1-1", "2-1", "3-1", "4-1", "5-1"]
    assert [r.vendor_ref for r in results] == ["1-1", "2-1", "3-1", "4-1", "5-1"]
    labels = {"provider": "batch-one-turn"}
    assert REGISTRY.get_sample_value("switchboard_provider_batch_size_count", labels) == 1
    assert REGISTRY.get_sample_value("switchboard_provider_batch_size_sum", labels) == 5


async def test_different_keys_go_in_separate_calls() -> None:
    inner = FakeBulk()
    adapter = BatchingAdapter(inner, max_batch=100, max_in_flight=4)
    requests = [request(1), request(2, channel="email"), request(3), request(4, provider="other")]
    results = await asyncio.wait_for(send_all(adapter, requests), 1)
    assert sorted((c.kind, tuple(c.keys)) for c in inner.calls) == [
        ("send", ("2-1",)),
        ("send", ("4-1",)),
        ("send_batch", ("1-1", "3-1")),
    ]
    assert [r.vendor_ref for r in results] == ["1-1", "2-1", "3-1", "4-1"]


async def test_a_lone_request_goes_at_once_through_send() -> None:
    inner = FakeBulk()
    adapter = BatchingAdapter(inner, max_batch=100, max_in_flight=4)
    result = await asyncio.wait_for(adapter.send(request(7)), 1)
    assert result.vendor_ref == "7-1"
    assert [(c.kind, c.keys) for c in inner.calls] == [("send", ["7-1"])]


async def test_while_every_slot_is_busy_requests_gather_and_go_together_when_a_call_returns() -> None:
    # Given a key with one slot, busy with a call the provider has not answered yet
    inner = FakeBulk(gate=asyncio.Event())
    adapter = BatchingAdapter(inner, max_batch=100, max_in_flight=1)
    first = asyncio.ensure_future(adapter.send(request(1)))
    await asyncio.wait_for(inner.entered.wait(), 1)
    # When two more requests come, one event-loop turn apart
    second = asyncio.ensure_future(adapter.send(request(2)))
    await asyncio.sleep(0.01)
    third = asyncio.ensure_future(adapter.send(request(3)))
    await asyncio.sleep(0.01)
    # Then they wait for the slot, and go in one call as soon as the first call returns
    assert [(c.kind, c.keys) for c in inner.calls] == [("send", ["1-1"])]
    assert adapter.in_flight(("gw", "sms")) == 1
    assert inner.gate is not None
    inner.gate.set()
    results = await asyncio.wait_for(asyncio.gather(first, second, third), 1)
    assert [r.vendor_ref for r in results] == ["1-1", "2-1", "3-1"]
    assert [(c.kind, c.keys) for c in inner.calls] == [("send", ["1-1"]), ("send_batch", ["2-1", "3-1"])]
    assert adapter.in_flight(("gw", "sms")) == 0


async def test_a_free_slot_means_no_waiting_for_a_call_in_flight() -> None:
    inner = FakeBulk(gate=asyncio.Event())
    adapter = BatchingAdapter(inner, max_batch=100, max_in_flight=2)
    calls = [asyncio.ensure_future(adapter.send(request(1)))]
    await asyncio.wait_for(inner.entered.wait(), 1)
    calls.append(asyncio.ensure_future(adapter.send(request(2))))
    await asyncio.sleep(0.01)
    assert [c.keys for c in inner.calls] == [["1-1"], ["2-1"]]  # the second went while the first was out
    assert inner.gate is not None
    inner.gate.set()
    await asyncio.wait_for(asyncio.gather(*calls), 1)


async def test_an_urgent_request_never_waits_for_a_slot() -> None:
    inner = FakeBulk(gate=asyncio.Event())
    adapter = BatchingAdapter(inner, max_batch=100, max_in_flight=1)
    calls = [asyncio.ensure_future(adapter.send(request(1)))]
    await asyncio.wait_for(inner.entered.wait(), 1)
    calls.append(asyncio.ensure_future(adapter.send(request(2))))
    calls.append(asyncio.ensure_future(adapter.send(replace(request(3), urgent=True))))
    await asyncio.sleep(0.01)
    # the bulk request 2 waits for the slot; the urgent one went on a call of its own
    assert [c.keys for c in inner.calls] == [["1-1"], ["3-1"]]
    assert inner.gate is not None
    inner.gate.set()
    results = await asyncio.wait_for(asyncio.gather(*calls), 1)
    assert [r.vendor_ref for r in results] == ["1-1", "2-1", "3-1"]


@given(
    arrivals=st.lists(st.tuples(st.integers(0, 3), st.booleans()), min_size=1, max_size=40),
    max_in_flight=st.integers(1, 4),
    max_batch=st.integers(2, 6),
)
@settings(max_examples=60, deadline=None)
def test_every_request_gets_its_own_result_and_no_call_exceeds_the_limits(
    arrivals: list[tuple[int, bool]], max_in_flight: int, max_batch: int
) -> None:
    async def run() -> None:
        inner = SlowBulk()
        adapter = BatchingAdapter(inner, max_batch=max_batch, max_in_flight=max_in_flight)
        tasks = []
        for n, (pause, urgent) in enumerate(arrivals, start=1):
            for _ in range(pause):
                await asyncio.sleep(0)
            tasks.append(asyncio.ensure_future(adapter.send(replace(request(n), urgent=urgent))))
        results = await asyncio.wait_for(asyncio.gather(*tasks), 5)
        assert [r.vendor_ref for r in results] == [f"{n}-1" for n in range(1, len(arrivals) + 1)]
        assert all(len(keys) <= max_batch for keys in inner.batches)
        # bulk calls never overlap beyond the limit (urgent ones go on their own, beside them)
        assert inner.most_bulk_in_flight <= max_in_flight
        assert sorted(k for keys in inner.batches for k in keys) == sorted(r.vendor_ref for r in results)

    asyncio.run(run())


async def test_a_full_group_goes_at_once() -> None:
    inner = FakeBulk()
    adapter = BatchingAdapter(inner, max_batch=3, max_in_flight=4)
    requests = [request(n) for n in range(1, 7)]
    results = await asyncio.wait_for(send_all(adapter, requests), 1)  # nowhere near the 10 s linger
    assert [r.vendor_ref for r in results] == [r.idempotency_key for r in requests]
    assert [(c.kind, c.keys) for c in inner.calls] == [
        ("send_batch", ["1-1", "2-1", "3-1"]),
        ("send_batch", ["4-1", "5-1", "6-1"]),
    ]


async def test_no_group_exceeds_max_batch() -> None:
    inner = FakeBulk()
    adapter = BatchingAdapter(inner, max_batch=4, max_in_flight=4)
    requests = [request(n) for n in range(1, 12)]
    results = await asyncio.wait_for(send_all(adapter, requests), 1)
    assert [r.vendor_ref for r in results] == [r.idempotency_key for r in requests]
    assert [len(c.keys) for c in inner.calls] == [4, 4, 3]
    assert [key for c in inner.calls for key in c.keys] == [r.idempotency_key for r in requests]


async def test_an_exception_from_the_bulk_call_reaches_every_caller() -> None:
    boom = ConnectionResetError("boom")
    adapter = BatchingAdapter(FakeBulk(error=boom), max_batch=10, max_in_flight=4)
    results = await asyncio.wait_for(
        asyncio.gather(*(adapter.send(request(n)) for n in range(3)), return_exceptions=True), 1
    )
    assert results == [boom, boom, boom]


async def test_an_exception_from_a_single_send_reaches_its_caller() -> None:
    adapter = BatchingAdapter(FakeBulk(error=ValueError("bad")), max_batch=10, max_in_flight=4)
    with pytest.raises(ValueError, match="bad"):
        await asyncio.wait_for(adapter.send(request(1)), 1)


async def test_a_wrong_number_of_results_is_a_runtime_error_for_every_caller() -> None:
    adapter = BatchingAdapter(FakeBulk(drop=1), max_batch=10, max_in_flight=4)
    results = await asyncio.wait_for(
        asyncio.gather(*(adapter.send(request(n)) for n in range(3)), return_exceptions=True), 1
    )
    assert all(isinstance(r, RuntimeError) for r in results)
    assert "2 results for a batch of 3" in str(results[0])


async def test_a_caller_cancelled_during_the_call_does_not_break_the_others() -> None:
    inner = FakeBulk(gate=asyncio.Event())
    adapter = BatchingAdapter(inner, max_batch=10, max_in_flight=4)
    tasks = [asyncio.ensure_future(adapter.send(request(n))) for n in range(1, 4)]
    await asyncio.wait_for(inner.entered.wait(), 1)
    tasks[1].cancel()
    assert inner.gate is not None
    inner.gate.set()
    done = await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), 1)
    assert isinstance(done[1], asyncio.CancelledError)
    assert [done[0].vendor_ref, done[2].vendor_ref] == ["1-1", "3-1"]  # type: ignore[union-attr]


async def test_a_caller_cancelled_before_its_group_goes_does_not_break_the_others() -> None:
    inner = FakeBulk()
    adapter = BatchingAdapter(inner, max_batch=10, max_in_flight=4)
    tasks = [asyncio.ensure_future(adapter.send(request(n))) for n in range(1, 4)]
    await asyncio.sleep(0)  # every task joined the group; it goes at the end of the turn
    assert inner.calls == []
    tasks[0].cancel()
    done = await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), 1)
    assert isinstance(done[0], asyncio.CancelledError)
    assert [done[1].vendor_ref, done[2].vendor_ref] == ["2-1", "3-1"]  # type: ignore[union-attr]
    assert [c.keys for c in inner.calls] == [["2-1", "3-1"]]  # a caller that gave up is not sent


async def test_close_waits_for_a_call_in_flight_then_closes_the_inner_adapter() -> None:
    inner = FakeBulk(gate=asyncio.Event())
    adapter = BatchingAdapter(inner, max_batch=10, max_in_flight=4)
    sending = asyncio.ensure_future(adapter.send(request(1)))
    await asyncio.wait_for(inner.entered.wait(), 1)
    closing = asyncio.ensure_future(adapter.close())
    for _ in range(5):
        await asyncio.sleep(0)
    assert not closing.done() and not inner.closed
    assert inner.gate is not None
    inner.gate.set()
    await asyncio.wait_for(closing, 1)
    assert inner.closed
    assert (await sending).vendor_ref == "1-1"


@pytest.mark.parametrize("max_batch", [1, 0, -5])
def test_max_batch_below_two_is_refused(max_batch: int) -> None:
    with pytest.raises(ValueError, match="at least 2"):
        BatchingAdapter(FakeBulk(), max_batch=max_batch)


async def test_build_adapter_wraps_the_mock_json_adapter_only_when_batching_is_on() -> None:
    spec = ProviderSpec("m", "mock_json")
    transport = MockTransport(lambda _: HttpResponse(200))
    batching = build_adapter(
        spec, SenderSettings(provider_batch_max=50, provider_batch_in_flight=3), transport
    )
    assert isinstance(batching, BatchingAdapter) and isinstance(batching.inner, MockJsonAdapter)
    assert (batching.max_batch, batching.max_in_flight) == (50, 3)
    assert isinstance(build_adapter(spec, SenderSettings(provider_batch_max=1), transport), MockJsonAdapter)


@pytest.mark.parametrize(
    "spec",
    [
        ProviderSpec("m", "mock_json", rate_per_s=40.0, burst=8),
        ProviderSpec("m", "mock_json", pacing_gap_s=1.0),
    ],
)
def test_a_paced_provider_gets_bulk_requests_without_holding_any_back(spec: ProviderSpec) -> None:
    transport = MockTransport(lambda _: HttpResponse(200))
    adapter = build_adapter(
        spec, SenderSettings(provider_batch_max=50, provider_batch_in_flight=3), transport
    )
    assert isinstance(adapter, BatchingAdapter) and adapter.max_in_flight is None


# ---- results_from_batch / result_from_answer -----------------------------------------------------------


def bulk(*items: object, status: int = 200, **headers: str) -> HttpResponse:
    return HttpResponse(status, orjson.dumps({"results": list(items)}), headers)


def failed(status: int, code: str, retry_after: float | None = None) -> dict[str, object]:
    item: dict[str, object] = {"http_status": status, "error": {"code": code, "message": f"no: {code}"}}
    if retry_after is not None:
        item["retry_after"] = retry_after
    return item


def test_success_items_carry_reference_cost_and_replay() -> None:
    results = results_from_batch(
        bulk(
            {"http_status": 200, "id": "gw-1", "cost": 0.0075, "replay": False},
            {"http_status": 200, "id": "gw-2", "cost": 0.0075, "replay": True},
        ),
        2,
        8.0,
    )
    assert results == [
        SendResult(S, 8.0, vendor_ref="gw-1", cost=0.0075),
        SendResult(S, 8.0, vendor_ref="gw-2", cost=0.0075, replay=True),
    ]


@pytest.mark.parametrize(
    ("item", "outcome", "code", "retry_after", "bounced"),
    [
        (failed(400, "INVALID_NUMBER"), P, "INVALID_NUMBER", None, False),
        (failed(400, "HARD_BOUNCE"), P, "HARD_BOUNCE", None, True),
        (failed(403, "BLOCKED"), P, "BLOCKED", None, False),
        (failed(429, "RATE_LIMITED", 1.5), T, "RATE_LIMITED", 1.5, False),
        (failed(503, "PROVIDER_UNAVAILABLE", 5), R, "PROVIDER_UNAVAILABLE", 5.0, False),
        (failed(500, "SERVER_ERROR"), T, "SERVER_ERROR", None, False),
        (failed(400, "VALIDATION_ERROR"), P, "VALIDATION_ERROR", None, False),
        ({"http_status": 429}, T, "RATE_LIMITED", None, False),
        ({"error": {"code": "BLOCKED"}}, P, "BLOCKED", None, False),  # no status: as a 502 would be
        ({}, T, "SERVER_ERROR", None, False),
        ("not an object", T, "SERVER_ERROR", None, False),
    ],
)
def test_error_items_are_classified_one_by_one(
    item: object, outcome: OutcomeClass, code: str, retry_after: float | None, bounced: bool
) -> None:
    ok_item = {"http_status": 200, "id": "gw-1"}
    first, second = results_from_batch(bulk(ok_item, item), 2, 3.0)
    assert (first.outcome, first.vendor_ref) == (S, "gw-1")
    assert (second.outcome, second.error_code, second.retry_after_s, second.bounced) == (
        outcome,
        code,
        retry_after,
        bounced,
    )


def test_result_from_answer_keeps_the_provider_message_and_reads_retry_after() -> None:
    result = result_from_answer(429, {"error": {"code": "RATE_LIMITED", "message": "slow down"}}, "2", 4.0)
    assert result == SendResult(
        T, 4.0, error_code="RATE_LIMITED", error_message="slow down", retry_after_s=2.0
    )
    assert result_from_answer(201, {"id": 7}, None, 1.0) == SendResult(S, 1.0, vendor_ref="7")


def test_an_error_status_for_the_whole_request_fails_every_message_alike() -> None:
    response = HttpResponse(
        503,
        orjson.dumps({"error": {"code": "PROVIDER_UNAVAILABLE", "message": "down"}}),
        {"retry-after": "5"},
    )
    results = results_from_batch(response, 3, 2.0)
    assert len(results) == 3 and len(set(results)) == 1
    assert (results[0].outcome, results[0].error_code, results[0].retry_after_s) == (
        R,
        "PROVIDER_UNAVAILABLE",
        5.0,
    )


def test_a_whole_request_refused_with_a_results_list_still_fails_every_message() -> None:
    response = bulk({"http_status": 200, "id": "x"}, status=400)
    (result,) = results_from_batch(response, 1, 2.0)
    assert (result.outcome, result.error_code) == (P, "HTTP_400")


@pytest.mark.parametrize(
    "content",
    [
        orjson.dumps({"results": [{"http_status": 200, "id": "a"}]}),  # one result for two messages
        orjson.dumps({"results": [{"http_status": 200}] * 3}),
        orjson.dumps({"results": "nope"}),
        orjson.dumps({"accepted": 2}),
        orjson.dumps([{"http_status": 200}, {"http_status": 200}]),
        b"<html>OK</html>",
        b"",
    ],
)
def test_a_2xx_we_cannot_read_is_transient_for_every_message(content: bytes) -> None:
    results = results_from_batch(HttpResponse(200, content), 2, 1.0)
    assert [(r.outcome, r.error_code) for r in results] == [(T, "SERVER_ERROR")] * 2


JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=5,
)
ITEM = st.fixed_dictionaries(
    {},
    optional={
        "http_status": st.integers(-1000, 1000) | JSON,
        "id": JSON,
        "cost": JSON,
        "replay": JSON,
        "retry_after": JSON,
        "error": st.fixed_dictionaries({}, optional={"code": JSON, "message": JSON}) | JSON,
    },
)


@settings(max_examples=50)
@given(items=st.lists(ITEM | JSON, max_size=6), status=st.sampled_from([200, 202, 400, 429, 500, 503]))
def test_any_bulk_answer_gives_one_result_per_message_and_never_raises(
    items: list[object], status: int
) -> None:
    results = results_from_batch(bulk(*items, status=status), len(items), 1.0)
    assert len(results) == len(items)
    assert all(isinstance(r, SendResult) and r.latency_ms == 1.0 for r in results)
    if status >= 300:
        assert all(r.outcome != S for r in results)


# ---- MockJsonAdapter.send_batch ------------------------------------------------------------------------


async def test_send_batch_posts_every_message_with_its_idempotency_key() -> None:
    transport = MockTransport(
        lambda _: bulk(
            {"http_status": 200, "id": "gw-1", "cost": 0.0075, "replay": False},
            failed(400, "INVALID_NUMBER"),
        )
    )
    adapter = MockJsonAdapter("http://mock:8080/", transport)
    requests = [request(1), request(2)]
    assert adapter.batch_key(requests[0]) == ("gw", "sms")
    first, second = await adapter.send_batch(requests)
    (sent,) = transport.requests
    assert (sent.method, sent.url) == ("POST", "http://mock:8080/gw/sms/batch")
    assert sent.headers["Content-Type"] == "application/json"
    assert orjson.loads(sent.content) == {
        "messages": [
            {"to": "+447911100001", "payload": {"body": "hi 1"}, "idempotency_key": "1-1"},
            {"to": "+447911100002", "payload": {"body": "hi 2"}, "idempotency_key": "2-1"},
        ]
    }
    assert (first.outcome, first.vendor_ref, first.cost) == (S, "gw-1", 0.0075)
    assert (second.outcome, second.error_code) == (P, "INVALID_NUMBER")
    await adapter.close()


@pytest.mark.parametrize("code", ["TIMEOUT", "CONNECTION_ERROR"])
async def test_no_answer_to_the_bulk_call_is_transient_for_every_message(code: str) -> None:
    def handler(_: HttpRequest) -> HttpResponse:
        raise TransportError(code, "boom")

    results = await MockJsonAdapter("http://mock", MockTransport(handler)).send_batch(
        [request(1), request(2), request(3)]
    )
    assert [(r.outcome, r.error_code, r.error_message) for r in results] == [(T, code, "boom")] * 3
