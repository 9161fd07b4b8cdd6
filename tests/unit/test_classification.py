"""services/sender/classification.py: the HTTP status/code table and Retry-After parsing."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.sender.classification import (
    BOUNCE_CODES,
    CODE_CLASSES,
    classify_http,
    default_code,
    parse_retry_after,
)
from shared.core.models import OutcomeClass

statuses = st.integers(100, 599)


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        (200, OutcomeClass.SUCCESS),
        (201, OutcomeClass.SUCCESS),
        (202, OutcomeClass.SUCCESS),
        (204, OutcomeClass.SUCCESS),
        (429, OutcomeClass.TRANSIENT),
        (408, OutcomeClass.TRANSIENT),
        (500, OutcomeClass.TRANSIENT),
        (502, OutcomeClass.TRANSIENT),
        (504, OutcomeClass.TRANSIENT),
        (503, OutcomeClass.RECOVERABLE),
        (400, OutcomeClass.PERMANENT),
        (401, OutcomeClass.PERMANENT),
        (403, OutcomeClass.PERMANENT),
        (404, OutcomeClass.PERMANENT),
        (413, OutcomeClass.PERMANENT),
        (422, OutcomeClass.PERMANENT),
    ],
)
def test_status_table(status: int, expected: OutcomeClass) -> None:
    assert classify_http(status) == expected


@given(status=st.integers(200, 299))
def test_every_2xx_is_success(status: int) -> None:
    assert classify_http(status) == OutcomeClass.SUCCESS


@given(status=st.integers(500, 599).filter(lambda s: s not in (501, 503, 505)))
def test_5xx_other_than_503_is_transient(status: int) -> None:
    assert classify_http(status) == OutcomeClass.TRANSIENT


@given(status=st.integers(400, 499).filter(lambda s: s not in (402, 408, 425, 429)))
def test_other_4xx_is_permanent(status: int) -> None:
    assert classify_http(status) == OutcomeClass.PERMANENT


@given(status=statuses, code=st.sampled_from(sorted(CODE_CLASSES)))
def test_known_provider_code_wins_over_status(status: int, code: str) -> None:
    assert classify_http(status, code) == CODE_CLASSES[code]


@given(status=statuses, code=st.text(max_size=20).filter(lambda c: c not in CODE_CLASSES))
def test_unknown_code_falls_back_to_status(status: int, code: str) -> None:
    assert classify_http(status, code) == classify_http(status)


def test_bounce_codes_are_permanent() -> None:
    assert BOUNCE_CODES
    assert all(CODE_CLASSES[code] == OutcomeClass.PERMANENT for code in BOUNCE_CODES)


@pytest.mark.parametrize(
    ("status", "code"),
    [
        (429, "RATE_LIMITED"),
        (503, "PROVIDER_UNAVAILABLE"),
        (408, "TIMEOUT"),
        (500, "SERVER_ERROR"),
        (502, "SERVER_ERROR"),
        (413, "PAYLOAD_TOO_LARGE"),
        (404, "HTTP_404"),
    ],
)
def test_default_code_names_the_status(status: int, code: str) -> None:
    assert default_code(status) == code


@given(status=st.integers(300, 599).filter(lambda s: s not in (501, 505)))
def test_default_code_agrees_with_the_class_of_its_status(status: int) -> None:
    code = default_code(status)
    assert CODE_CLASSES.get(code, classify_http(status)) == classify_http(status)


@pytest.mark.parametrize("status", [501, 505])
def test_default_code_of_permanent_5xx_is_not_a_transient_code(status: int) -> None:
    assert CODE_CLASSES.get(default_code(status), classify_http(status)) == classify_http(status)


@pytest.mark.parametrize(
    ("header", "seconds"), [("5", 5.0), (" 2.5 ", 2.5), ("0", 0.0), ("120", 120.0), ("0.25\t", 0.25)]
)
def test_retry_after_delta_seconds(header: str, seconds: float) -> None:
    assert parse_retry_after(header) == seconds


@pytest.mark.parametrize(
    "header",
    [
        None,
        "",
        "  ",
        "-1",
        "-0.5",
        "nan",
        "NaN",
        "inf",
        "-inf",
        "Infinity",
        "1e400",
        "soon",
        "5 seconds",
        "0x10",
        "Wed, 21 Oct 2015 07:28:00 GMT",
    ],
)
def test_retry_after_unusable_values_give_none(header: str | None) -> None:
    assert parse_retry_after(header) is None


@given(header=st.text(max_size=30))
def test_retry_after_is_none_or_finite_non_negative(header: str) -> None:
    seconds = parse_retry_after(header)
    assert seconds is None or (math.isfinite(seconds) and seconds >= 0)


@given(seconds=st.floats(0, 1e12))
def test_retry_after_round_trips_numbers(seconds: float) -> None:
    assert parse_retry_after(repr(seconds)) == seconds
