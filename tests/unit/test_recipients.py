"""shared/core/recipients.py: normalisation per channel, routing keys, masking."""

from __future__ import annotations

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from shared.core.errors import InvalidRecipient
from shared.core.recipients import (
    MAX_ROUTING_KEY,
    PHONE_CHANNELS,
    mask,
    normalise,
    recipient_hash,
    routing_key,
)

e164_digits = st.from_regex(r"[1-9][0-9]{6,14}", fullmatch=True)
separators = st.sampled_from([" ", "-", ".", "(", ")", "  ", " - "])


@pytest.mark.parametrize("channel", sorted(PHONE_CHANNELS))
@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("+447911123456", "+447911123456"),
        ("+44 7911 123456", "+447911123456"),
        ("+1 (555) 123-4567", "+15551234567"),
        ("+1.555.123.4567", "+15551234567"),
        ("0044 7911 123456", "+447911123456"),
        ("  +33612345678\n", "+33612345678"),
        ("+1234567", "+1234567"),
        ("+123456789012345", "+123456789012345"),
    ],
)
def test_phone_numbers_normalise_to_e164(channel: str, raw: str, expected: str) -> None:
    assert normalise(channel, raw) == expected


@pytest.mark.parametrize("channel", sorted(PHONE_CHANNELS))
@pytest.mark.parametrize(
    "raw",
    [
        "+123456",  # 6 digits: too short
        "+1234567890123456",  # 16 digits: too long
        "+0447911123456",  # country code cannot start with 0
        "000447911123456",  # 00 then a leading zero
        "07911123456",  # national format, no country code
        "447911123456",  # no + or 00
        "+44 7911 12345a",
        "+44+7911123456",
        "+",
        "",
        "   ",
        "+44/7911/123456",
        "user@example.com",
    ],
)
def test_invalid_phone_numbers_are_refused(channel: str, raw: str) -> None:
    with pytest.raises(InvalidRecipient) as info:
        normalise(channel, raw)
    assert info.value.code == "INVALID_NUMBER"


def test_invalid_phone_error_does_not_contain_the_number() -> None:
    with pytest.raises(InvalidRecipient) as info:
        normalise("sms", "+0447911123456")
    assert "+0447911123456" not in str(info.value)


@given(digits=e164_digits, data=st.data(), prefix=st.sampled_from(["+", "00"]))
def test_any_e164_number_with_separators_normalises(digits: str, data: st.DataObject, prefix: str) -> None:
    spaced = prefix + "".join(ch + data.draw(st.just("") | separators) for ch in digits)
    normalised = normalise("sms", spaced)
    assert normalised == "+" + digits
    assert normalise("sms", normalised) == normalised


@pytest.mark.parametrize(
    "raw",
    [
        "+1\u0662\u0663\u0664\u0665\u0666\u0667\u0668",
        "+44\uff17\uff19\uff11\uff11\uff11\uff12\uff13\uff14\uff15\uff16",
    ],
)
def test_non_ascii_digits_are_not_phone_numbers(raw: str) -> None:
    with pytest.raises(InvalidRecipient):
        normalise("sms", raw)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("jane@example.com", "jane@example.com"),
        ("Jane.Doe@Example.COM", "Jane.Doe@example.com"),
        ("  a+tag@sub.Example.org ", "a+tag@sub.example.org"),
        ("o'brien@mail.example.ie", "o'brien@mail.example.ie"),
    ],
)
def test_email_lowercases_the_domain_only(raw: str, expected: str) -> None:
    assert normalise("email", raw) == expected


@pytest.mark.parametrize(
    "raw",
    [
        "plainaddress",
        "@example.com",
        "jane@",
        "jane@localhost",
        "jane@@example.com",
        "ja ne@example.com",
        "jane..doe@example.com",
        "jane@example..com",
        "jane@-example.com",
        "jane@example-.com",
        "x" * 65 + "@example.com",
        "a@" + ".".join(["b" * 60] * 5) + ".com",
        "jané@example.com",
        "",
    ],
)
def test_invalid_emails_are_refused(raw: str) -> None:
    with pytest.raises(InvalidRecipient) as info:
        normalise("email", raw)
    assert info.value.code == "INVALID_ADDRESS"


@given(
    local=st.from_regex(r"[a-z0-9]{1,20}", fullmatch=True),
    labels=st.lists(st.from_regex(r"[A-Za-z][A-Za-z0-9]{0,10}", fullmatch=True), min_size=2, max_size=4),
)
def test_email_normalisation_is_idempotent_and_case_insensitive_in_domain(
    local: str, labels: list[str]
) -> None:
    raw = f"{local}@{'.'.join(labels)}"
    once = normalise("email", raw)
    assert normalise("email", once) == once
    assert normalise("email", f"{local}@{'.'.join(labels).upper()}") == once


@pytest.mark.parametrize(
    "raw", ["https://hooks.example.com/x?y=1", "http://10.0.0.1:8080/callback", "https://example.com/a#frag"]
)
def test_webhook_urls_are_kept(raw: str) -> None:
    assert normalise("webhook", f"  {raw} ") == raw


@pytest.mark.parametrize(
    "raw", ["ftp://example.com/x", "https://", "http:///path", "https://exa mple.com", "example.com/hook", ""]
)
def test_invalid_webhook_urls_are_refused(raw: str) -> None:
    with pytest.raises(InvalidRecipient) as info:
        normalise("webhook", raw)
    assert info.value.code == "INVALID_URL"


@pytest.mark.parametrize("channel", ["fax", "SMS", "", "push"])
def test_unknown_channel_is_refused(channel: str) -> None:
    with pytest.raises(InvalidRecipient) as info:
        normalise(channel, "+447911123456")
    assert info.value.code == "UNKNOWN_CHANNEL"


@given(recipient=st.text(max_size=400))
def test_routing_key_fits_amqp_and_is_stable(recipient: str) -> None:
    key = routing_key(recipient)
    assert len(key.encode()) <= MAX_ROUTING_KEY
    assert routing_key(recipient) == key
    if len(recipient.encode()) <= MAX_ROUTING_KEY:
        assert key == recipient


def test_routing_key_boundary_is_255_bytes() -> None:
    assert routing_key("a" * 255) == "a" * 255
    assert routing_key("a" * 256).startswith("h:")
    assert routing_key("é" * 128).startswith("h:")  # 128 characters, 256 bytes


@given(a=st.text(min_size=256, max_size=300), b=st.text(min_size=256, max_size=300))
def test_long_recipients_get_distinct_keys(a: str, b: str) -> None:
    assume(a != b)
    assert routing_key(a) != routing_key(b)


@given(recipient=st.text(max_size=50))
def test_recipient_hash_is_short_stable_and_opaque(recipient: str) -> None:
    digest = recipient_hash(recipient)
    assert digest == recipient_hash(recipient)
    assert len(digest) == 16
    assert int(digest, 16) >= 0


def _visible(masked: str) -> int:
    return sum(ch != "*" for ch in masked)


@pytest.mark.parametrize(
    ("recipient", "masked"),
    [
        ("+447911123456", "+44*******456"),
        ("+1234567", "+1****67"),
        ("jane@example.com", "j***@example.com"),
        ("12345", "*****"),
    ],
)
def test_mask_examples(recipient: str, masked: str) -> None:
    assert mask(recipient) == masked


@given(digits=st.from_regex(r"[1-9][0-9]{8,14}", fullmatch=True))
def test_mask_hides_part_of_a_phone_number(digits: str) -> None:
    number = "+" + digits
    masked = mask(number)
    assert _visible(masked) < len(number)
    assert number not in masked


@given(recipient=st.text(alphabet="0123456789+", max_size=6))
def test_mask_hides_short_values_completely(recipient: str) -> None:
    assert _visible(mask(recipient)) == 0


@given(
    local=st.from_regex(r"[a-z0-9.]{2,30}", fullmatch=True),
    domain=st.from_regex(r"[a-z]{1,10}\.[a-z]{2,5}", fullmatch=True),
)
def test_mask_hides_the_local_part_of_an_email(local: str, domain: str) -> None:
    address = f"{local}@{domain}"
    masked = mask(address)
    assert masked.endswith("@" + domain)
    assert _visible(masked) < len(address)


@pytest.mark.parametrize("recipient", ["+123456", "+1234567", "+12345678", "a@x.com"])
def test_mask_never_reveals_every_character(recipient: str) -> None:
    assert _visible(mask(recipient)) < len(recipient)
