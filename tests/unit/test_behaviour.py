"""services/mock_provider/behaviour.py: the fake provider's seeded answers."""

from __future__ import annotations

import math
from collections import Counter

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.mock_provider.behaviour import (
    MAGIC_PREFIXES,
    Answer,
    FailureMix,
    Verdict,
    decide,
    draw,
    split_key,
)

KEYS = [f"{n}-1" for n in range(1, 20_001)]
RECIPIENT = "+447911123456"


@given(seed=st.integers(), key=st.text(max_size=30), channel=st.sampled_from(["sms", "email", "whatsapp"]))
def test_answer_is_fixed_by_seed_and_key(seed: int, key: str, channel: str) -> None:
    mix = FailureMix(transient_rate=0.3, permanent_rate=0.3, rate_limit_rate=0.3, seed=seed)
    assert decide(mix, channel, RECIPIENT, key) == decide(mix, channel, RECIPIENT, key)
    assert 0 <= draw(seed, key) < 1


def test_another_seed_gives_other_answers() -> None:
    a, b = FailureMix(0.3, 0.3, 0.3, seed=1), FailureMix(0.3, 0.3, 0.3, seed=2)
    differing = sum(decide(a, "sms", RECIPIENT, k) != decide(b, "sms", RECIPIENT, k) for k in KEYS[:500])
    assert differing > 200


def test_a_new_attempt_gets_a_new_draw() -> None:
    assert len({draw(42, f"1-{attempt}") for attempt in range(1, 50)}) == 49


@pytest.mark.parametrize(("prefix", "answer"), MAGIC_PREFIXES)
@pytest.mark.parametrize("mix", [FailureMix(0, 0, 0), FailureMix(0, 0, 1)])
def test_magic_prefixes_always_get_their_answer(prefix: str, answer: Answer, mix: FailureMix) -> None:
    for key in KEYS[:50]:
        assert decide(mix, "sms", prefix + "1234567", key) == answer


def test_magic_answers_cover_each_path() -> None:
    answers = {prefix: answer for prefix, answer in MAGIC_PREFIXES}
    assert answers["+999"].code == "INVALID_NUMBER"
    assert answers["+888"].verdict == Verdict.TRANSIENT
    assert answers["bounce"].code == "HARD_BOUNCE"
    assert all(a.status >= 400 for a in answers.values())


def test_rates_are_roughly_honoured_over_20000_keys() -> None:
    mix = FailureMix(transient_rate=0.04, permanent_rate=0.03, rate_limit_rate=0.02, seed=42)
    counts = Counter(decide(mix, "sms", RECIPIENT, key).verdict for key in KEYS)
    n = len(KEYS)
    for verdict, rate in [
        (Verdict.TRANSIENT, 0.04),
        (Verdict.PERMANENT, 0.03),
        (Verdict.RATE_LIMIT, 0.02),
        (Verdict.ACCEPT, 0.91),
    ]:
        sigma = math.sqrt(n * rate * (1 - rate))
        assert abs(counts[verdict] - n * rate) < 5 * sigma, (verdict, counts[verdict])
    assert counts[Verdict.OUTAGE] == 0


def test_zero_rates_accept_everything_and_full_rate_limits_everything() -> None:
    assert {decide(FailureMix(0, 0, 0), "sms", RECIPIENT, k).verdict for k in KEYS[:2_000]} == {
        Verdict.ACCEPT
    }
    limited = {decide(FailureMix(0, 0, 1, retry_after_s=2.5), "sms", RECIPIENT, k) for k in KEYS[:2_000]}
    assert limited == {Answer(Verdict.RATE_LIMIT, 429, "RATE_LIMITED", "too many requests", 2.5)}


def test_transient_and_permanent_answers_have_http_shapes() -> None:
    mix = FailureMix(transient_rate=0.5, permanent_rate=0.5, rate_limit_rate=0)
    answers = [decide(mix, "sms", RECIPIENT, k) for k in KEYS[:2_000]]
    assert {(a.verdict, a.status) for a in answers} == {(Verdict.TRANSIENT, 500), (Verdict.PERMANENT, 400)}


@pytest.mark.parametrize(
    ("channel", "codes"),
    [
        ("email", {"HARD_BOUNCE", "BLOCKED"}),
        ("sms", {"INVALID_NUMBER", "BLOCKED"}),
        ("whatsapp", {"INVALID_NUMBER", "BLOCKED"}),
    ],
)
def test_permanent_codes_fit_the_channel(channel: str, codes: set[str]) -> None:
    mix = FailureMix(transient_rate=0, permanent_rate=1, rate_limit_rate=0)
    assert {decide(mix, channel, RECIPIENT, k).code for k in KEYS[:3_000]} == codes


@pytest.mark.parametrize(("t", "p", "r"), [(0.5, 0.4, 0.2), (1, 0, 0.01), (0.34, 0.34, 0.34)])
def test_rates_summing_above_one_are_rejected(t: float, p: float, r: float) -> None:
    with pytest.raises(ValueError, match="add up to"):
        FailureMix(transient_rate=t, permanent_rate=p, rate_limit_rate=r)


def test_rates_summing_to_exactly_one_are_accepted() -> None:
    assert FailureMix(transient_rate=0.5, permanent_rate=0.25, rate_limit_rate=0.25).transient_rate == 0.5


def test_negative_rate_is_rejected() -> None:
    with pytest.raises(ValueError):
        FailureMix(transient_rate=-0.5, permanent_rate=0.6, rate_limit_rate=0)


@pytest.mark.parametrize(
    ("key", "parts"),
    [
        ("12-3", (12, 3)),
        ("1-1", (1, 1)),
        ("abc", (None, None)),
        ("12", (None, None)),
        ("-3", (None, None)),
        ("12-", (None, None)),
        ("1-2-3", (None, None)),
        ("a-1", (None, None)),
        ("", (None, None)),
    ],
)
def test_split_key(key: str, parts: tuple[int | None, int | None]) -> None:
    assert split_key(key) == parts


@given(log_id=st.integers(0, 2**63), attempt=st.integers(0, 10_000))
def test_split_key_inverts_the_idempotency_key(log_id: int, attempt: int) -> None:
    assert split_key(f"{log_id}-{attempt}") == (log_id, attempt)


@given(key=st.text(max_size=20))
def test_split_key_never_raises(key: str) -> None:
    log_id, attempt = split_key(key)
    assert (log_id is None) == (attempt is None)


def test_split_key_of_superscript_digits_is_not_a_key() -> None:
    assert split_key("²-1") == (None, None)


def test_a_welcomed_send_is_accepted_unless_its_recipient_is_magic() -> None:
    mix = FailureMix(transient_rate=0.5, permanent_rate=0.5, rate_limit_rate=0)
    assert {decide(mix, "sms", RECIPIENT, k, welcome=True).verdict for k in KEYS[:500]} == {Verdict.ACCEPT}
    assert decide(mix, "sms", "+9991234567", "1-1", welcome=True).code == "INVALID_NUMBER"


def test_channel_magic_refuses_on_its_channel_only() -> None:
    refused = decide(FailureMix(0, 0, 0), "whatsapp", "+5550001234", "1-1")
    assert (refused.verdict, refused.status, refused.code) == (Verdict.PERMANENT, 400, "UNDELIVERABLE")
    assert decide(FailureMix(0, 0, 0), "sms", "+5550001234", "1-1").verdict == Verdict.ACCEPT
