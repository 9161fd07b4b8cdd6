"""services/api/schemas/routing: what the routing configuration endpoints refuse, and what they show."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from services.api.schemas.routing import (
    SETTINGS,
    ChannelRouteIn,
    OverrideIn,
    PolicyIn,
    ProviderIn,
    shown_settings,
)
from shared.core.models import Channel
from shared.core.providers import KIND_CHANNELS, ProviderKind
from shared.core.retry import RetryMode
from shared.core.routing import Strategy


def test_a_provider_with_every_documented_setting_of_its_kind_is_accepted() -> None:
    provider = ProviderIn(
        kind="smtp",
        rate_per_s=20,
        burst=5,
        pacing="safe",
        settings={
            "host": "smtp.example.com",
            "port": 587,
            "username": "mailer",
            "password": "env:SWITCHBOARD_PROVIDER_SMTP_PASSWORD",
            "starttls": True,
            "timeout_s": 10,
            "pool_size": 4,
            "from": "Acme <noreply@acme.example>",
        },
    )
    assert provider.kind == ProviderKind.SMTP and provider.settings["port"] == 587


@pytest.mark.parametrize(
    ("fields", "problem"),
    [
        ({"kind": "fax"}, "kind"),
        ({"kind": "mock_json", "rate_per_s": -1}, "greater than 0"),
        ({"kind": "mock_json", "rate_per_s": "5"}, "valid number"),
        ({"kind": "mock_json", "burst": 3}, "burst needs rate_per_s"),
        ({"kind": "mock_json", "reserved_share": 1.0}, "less than 1"),
        ({"kind": "mock_json", "pacing_gap_ms": -1}, "greater than or equal to 0"),
        ({"kind": "mock_json", "active": "yes"}, "valid boolean"),
        ({"kind": "mock_json", "extra": 1}, "Extra inputs"),
        ({"kind": "mock_json", "settings": {"from": "x"}}, "unknown setting for kind mock_json"),
        ({"kind": "mock_json", "settings": {"base_url": "ftp://x"}}, "http:// or https://"),
        ({"kind": "whatsapp_cloud", "settings": {"access_token": "EAAG..."}}, "env:SWITCHBOARD_PROVIDER_"),
        ({"kind": "webhook", "settings": {"secret": "env:"}}, "env:SWITCHBOARD_PROVIDER_"),
        ({"kind": "webhook", "settings": {"https_only": 1}}, "true or false"),
        ({"kind": "smtp", "settings": {"port": True}}, "integer port"),
        ({"kind": "smtp", "settings": {"timeout_s": 0}}, "seconds"),
        ({"kind": "sms_gateway", "settings": {"account_sid": 5}}, "must be a string"),
        ({"kind": "sms_gateway", "settings": {"from": "a\x00b"}}, "NUL"),
    ],
)
def test_a_bad_provider_is_refused_with_the_reason(fields: dict[str, Any], problem: str) -> None:
    with pytest.raises(ValidationError, match=problem):
        ProviderIn(**fields)


def test_every_settings_key_a_kind_documents_is_known_and_every_kind_carries_a_channel() -> None:
    assert set(SETTINGS) == set(ProviderKind) == set(KIND_CHANNELS)
    assert KIND_CHANNELS[ProviderKind.MOCK_JSON] == frozenset(Channel)
    assert {"auth_token", "access_token", "password", "secret"} <= {
        key for table in SETTINGS.values() for key, kind in table.items() if kind == "secret"
    }


@pytest.mark.parametrize(
    ("fields", "problem"),
    [
        ({"strategy": "cheapest"}, "strategy"),
        ({"retry_mode": "custom"}, "needs retry_delays_s"),
        ({"retry_mode": "linear", "retry_delays_s": [1.0]}, "only used with retry_mode custom"),
        ({"retry_max_s": 10}, "retry_max_s needs retry_mode"),
        ({"retry_mode": "exponential", "retry_initial_s": 10, "retry_max_s": 1}, "not be less"),
        ({"retry_mode": "custom", "retry_delays_s": [-1]}, "greater than or equal to 0"),
        ({"retry_mode": "custom", "retry_delays_s": []}, "at least 1"),
        ({"retry_mode": "none", "retry_max_attempts": 0}, "greater than or equal to 1"),
        ({"max_cost": -0.5}, "greater than or equal to 0"),
        ({"min_success_rate": 2}, "less than or equal to 1"),
    ],
)
def test_a_bad_channel_policy_is_refused_with_the_reason(fields: dict[str, Any], problem: str) -> None:
    with pytest.raises(ValidationError, match=problem):
        PolicyIn(**fields)


def test_a_policy_defaults_to_fallback_with_the_global_backoff() -> None:
    policy = PolicyIn()
    assert policy.strategy == Strategy.FALLBACK and policy.retry_mode is None
    custom = PolicyIn(strategy="weighted", retry_mode="custom", retry_delays_s=[1, 5, 30])
    assert custom.retry_mode == RetryMode.CUSTOM and custom.retry_delays_s == [1.0, 5.0, 30.0]


@pytest.mark.parametrize(
    "fields", [{"cost": -1}, {"weight": 10_001}, {"priority": 2**40}, {"priority": 1.0}, {"active": 0}]
)
def test_a_bad_route_or_override_is_refused(fields: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        ChannelRouteIn(**fields)
    if set(fields) <= {"priority", "active"}:
        with pytest.raises(ValidationError):
            OverrideIn(**fields)


def test_an_override_without_a_priority_keeps_the_routes_own() -> None:
    assert OverrideIn(active=False).priority is None


def test_literal_credentials_are_masked_and_environment_references_shown() -> None:
    shown = shown_settings(
        {
            "account_sid": "AC1",
            "auth_token": "s3cret",
            "password": "env:SWITCHBOARD_PROVIDER_SMTP_PASSWORD",
            "secret": "",
            "api_key": 12345,
        }
    )
    assert shown == {
        "account_sid": "AC1",
        "auth_token": "********",
        "password": "env:SWITCHBOARD_PROVIDER_SMTP_PASSWORD",
        "secret": "",
        "api_key": "********",
    }
    assert shown_settings(None) == {}
