"""Routing by destination (pure): which routes serve a recipient, by country or E.164 prefix.

A route's ``destinations`` lists ISO 3166 alpha-2 countries (``GB``) and E.164 prefixes (``+4477``);
an empty list serves every recipient. The most specific match wins: a prefix counts its digits, a
country its calling code's digits plus a half, so ``+1`` < ``US`` < ``+1415``. The country of a
number comes from ``phonenumbers`` (Google's libphonenumber metadata), which tells US from CA
although both are ``+1``.
"""

from __future__ import annotations

import functools
import re

import phonenumbers

PREFIX = re.compile(r"\+[1-9][0-9]{0,14}")
COUNTRY = re.compile(r"[A-Z]{2}")
CATCH_ALL = 0.0


class DestinationError(ValueError):
    """A destination that is neither a known country code nor an E.164 prefix."""


def normalise_destination(value: str) -> str:
    """``gb`` -> ``GB``, ``+44 77`` -> ``+4477``; raises :class:`DestinationError`."""
    text = re.sub(r"[\s\-().]", "", value)
    if COUNTRY.fullmatch(text.upper()) and text.isalpha():
        country = text.upper()
        if country not in phonenumbers.SUPPORTED_REGIONS:
            raise DestinationError(f"unknown country code {value!r} (ISO 3166 alpha-2, e.g. GB)")
        return country
    if text.startswith("00"):
        text = "+" + text[2:]
    if PREFIX.fullmatch(text):
        return text
    raise DestinationError(f"{value!r} is neither a country code (e.g. GB) nor an E.164 prefix (e.g. +4477)")


@functools.lru_cache(maxsize=65536)
def country_of(number: str) -> str | None:
    """The ISO country of an E.164 number, or None when libphonenumber cannot tell."""
    try:
        region = phonenumbers.region_code_for_number(phonenumbers.parse(number, None))
    except phonenumbers.NumberParseException:
        return None
    return region if region and region != phonenumbers.UNKNOWN_REGION else None


def _country_weight(country: str) -> float:
    return len(str(phonenumbers.country_code_for_region(country))) + 0.5


def specificity(destinations: tuple[str, ...], recipient: str | None) -> float | None:
    """How specifically ``destinations`` match ``recipient``: 0 for a catch-all route, None for no match."""
    if not destinations:
        return CATCH_ALL
    if not recipient or not recipient.startswith("+"):
        return None
    best: float | None = None
    for destination in destinations:
        if destination.startswith("+"):
            score: float | None = len(destination) - 1 if recipient.startswith(destination) else None
        else:
            score = _country_weight(destination) if country_of(recipient) == destination else None
        if score is not None and (best is None or score > best):
            best = score
    return best
