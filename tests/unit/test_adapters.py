"""services/sender/adapters.py: mapping a provider's HTTP answer onto a SendResult."""

from __future__ import annotations

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.sender.adapters import SendResult, result_from_http
from services.sender.classification import classify_http
from shared.core.models import OutcomeClass


def body(**fields: object) -> bytes:
    return orjson.dumps(fields)


def error(code: str, message: str = "nope") -> bytes:
    return body(error={"code": code, "message": message})


def test_success_carries_id_cost_and_replay() -> None:
    result = result_from_http(200, body(id="ref-1", cost=0.0075, replay=True), None, 12.5)
    assert result == SendResult(OutcomeClass.SUCCESS, 12.5, vendor_ref="ref-1", cost=0.0075, replay=True)


def test_success_with_numeric_id_and_no_cost() -> None:
    result = result_from_http(201, body(id=123), None, 1.0)
    assert (result.outcome, result.vendor_ref, result.cost, result.replay) == (
        OutcomeClass.SUCCESS,
        "123",
        0.0,
        False,
    )


@pytest.mark.parametrize("content", [b"", b"OK", b"<html>accepted</html>", b"[1, 2]", b"null", b"\xff"])
def test_success_with_garbage_body_is_still_success(content: bytes) -> None:
    result = result_from_http(200, content, None, 3.0)
    assert result == SendResult(OutcomeClass.SUCCESS, 3.0)


def test_error_code_is_ignored_on_success() -> None:
    assert result_from_http(200, error("BLOCKED"), None, 1.0).outcome == OutcomeClass.SUCCESS


def test_429_honours_retry_after() -> None:
    result = result_from_http(429, error("RATE_LIMITED", "too many requests"), "2.5", 4.0)
    assert result.outcome == OutcomeClass.TRANSIENT
    assert (result.error_code, result.error_message, result.retry_after_s) == (
        "RATE_LIMITED",
        "too many requests",
        2.5,
    )
    assert result.bounced is False


@pytest.mark.parametrize("header", [None, "soon", "-3", "nan"])
def test_429_without_usable_retry_after(header: str | None) -> None:
    result = result_from_http(429, b"", header, 4.0)
    assert (result.outcome, result.error_code, result.retry_after_s) == (
        OutcomeClass.TRANSIENT,
        "RATE_LIMITED",
        None,
    )


@pytest.mark.parametrize("status", [500, 502, 504])
def test_5xx_is_transient_server_error(status: int) -> None:
    result = result_from_http(status, b"<html>Bad Gateway</html>", None, 9.0)
    assert (result.outcome, result.error_code, result.error_message) == (
        OutcomeClass.TRANSIENT,
        "SERVER_ERROR",
        f"HTTP {status}",
    )


def test_503_is_recoverable_and_keeps_retry_after() -> None:
    result = result_from_http(503, error("PROVIDER_UNAVAILABLE", "down"), "5", 1.0)
    assert (result.outcome, result.error_code, result.retry_after_s) == (
        OutcomeClass.RECOVERABLE,
        "PROVIDER_UNAVAILABLE",
        5.0,
    )


def test_hard_bounce_is_permanent_and_bounced() -> None:
    result = result_from_http(400, error("HARD_BOUNCE", "mailbox does not exist"), None, 1.0)
    assert (result.outcome, result.error_code, result.bounced) == (
        OutcomeClass.PERMANENT,
        "HARD_BOUNCE",
        True,
    )


@pytest.mark.parametrize("code", ["INVALID_NUMBER", "BLOCKED", "SPAM_REJECTED"])
def test_other_permanent_codes_are_not_bounces(code: str) -> None:
    result = result_from_http(400, error(code), None, 1.0)
    assert (result.outcome, result.error_code, result.bounced) == (OutcomeClass.PERMANENT, code, False)


def test_provider_code_wins_over_status() -> None:
    assert result_from_http(400, error("RATE_LIMITED"), None, 1.0).outcome == OutcomeClass.TRANSIENT
    assert result_from_http(500, error("INVALID_NUMBER"), None, 1.0).outcome == OutcomeClass.PERMANENT


@pytest.mark.parametrize(
    "content", [b"", b"not json", body(error="flat string"), body(error={"code": 7, "message": ["x"]}), b"[]"]
)
def test_garbage_error_body_falls_back_to_the_status(content: bytes) -> None:
    result = result_from_http(404, content, None, 1.0)
    assert (result.outcome, result.error_code, result.error_message) == (
        OutcomeClass.PERMANENT,
        "HTTP_404",
        "HTTP 404",
    )


def test_error_message_is_truncated() -> None:
    result = result_from_http(400, error("BLOCKED", "x" * 5_000), None, 1.0)
    assert result.error_message == "x" * 500


@given(status=st.integers(100, 599), content=st.binary(max_size=200), header=st.none() | st.text(max_size=10))
def test_any_status_and_bytes_map_onto_the_status_class(
    status: int, content: bytes, header: str | None
) -> None:
    try:
        data = orjson.loads(content)
    except orjson.JSONDecodeError:
        data = None
    result = result_from_http(status, content, header, 1.0)
    if not isinstance(data, dict):
        assert result.outcome == classify_http(status)
    assert (result.error_code is None) == (result.outcome == OutcomeClass.SUCCESS)
    assert result.retry_after_s is None or result.retry_after_s >= 0


@pytest.mark.parametrize("cost", ["n/a", [1], {"amount": 1}, "Infinity", "NaN", -1, "-0.5"])
def test_success_with_unusable_cost_counts_as_free(cost: object) -> None:
    result = result_from_http(200, body(id="r", cost=cost), None, 1.0)
    assert (result.outcome, result.vendor_ref, result.cost) == (OutcomeClass.SUCCESS, "r", 0.0)


@pytest.mark.parametrize(("cost", "expected"), [(0.0075, 0.0075), ("0.02", 0.02), (None, 0.0), (0, 0.0)])
def test_success_cost_is_read_as_a_number(cost: object, expected: float) -> None:
    assert result_from_http(200, body(id="r", cost=cost), None, 1.0).cost == expected
