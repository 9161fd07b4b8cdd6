"""One provider-kind registry (shared/core/providers.py) for the API and the sender: an unknown kind is a
configuration error, never a send through another adapter."""

from __future__ import annotations

import pytest

from services.api.schemas.routing import SETTINGS
from services.mock_provider.clients import MOCK_ACCOUNT_SID
from services.sender.adapters import ADAPTERS, AdapterPool, build_adapter
from services.sender.adapters.mockjson import MockJsonAdapter
from services.sender.adapters.signal import SignalCliAdapter
from services.sender.adapters.sms import SmsGatewayAdapter
from services.sender.adapters.smtp import SmtpAdapter
from services.sender.adapters.transport import HttpResponse, MockTransport
from services.sender.adapters.whatsapp import WhatsAppCloudAdapter
from services.sender.settings import SenderSettings
from shared.core.errors import ConfigurationError
from shared.core.providers import KIND_SETTINGS, PROVIDER_KINDS, ProviderKind, provider_kind
from shared.core.routing import KINDS_HONOURING_IDEMPOTENCY_KEYS, ProviderSpec

SETTINGS_OF_TEST = SenderSettings(provider_batch_max=1, mock_smtp_port=2525)


def transport() -> MockTransport:
    return MockTransport(lambda _: HttpResponse(201, b"{}", {}))


def test_the_sender_has_an_adapter_for_every_kind_and_the_api_knows_the_same_kinds() -> None:
    assert set(ADAPTERS) == set(ProviderKind) == set(PROVIDER_KINDS)
    assert SETTINGS is KIND_SETTINGS
    assert {"sms_gateway", "mock_json"} == KINDS_HONOURING_IDEMPOTENCY_KEYS


@pytest.mark.parametrize("kind", ["signal", "MOCK_JSON", "", "sms"])
def test_an_unknown_kind_is_a_configuration_error_never_the_mock_adapter(kind: str) -> None:
    with pytest.raises(ConfigurationError, match="unknown provider kind"):
        provider_kind(kind)
    with pytest.raises(ConfigurationError):
        build_adapter(ProviderSpec("p", kind), SETTINGS_OF_TEST, transport())


def test_each_kind_builds_its_own_adapter() -> None:
    built = {
        kind: type(build_adapter(ProviderSpec("p", kind.value), SETTINGS_OF_TEST, transport()))
        for kind in ProviderKind
    }
    assert built[ProviderKind.SMS_GATEWAY] is SmsGatewayAdapter
    assert built[ProviderKind.WHATSAPP_CLOUD] is WhatsAppCloudAdapter
    assert built[ProviderKind.SMTP] is SmtpAdapter
    assert built[ProviderKind.MOCK_JSON] is MockJsonAdapter
    assert built[ProviderKind.SIGNAL_CLI] is SignalCliAdapter
    assert len(set(built.values())) == len(ProviderKind)


def test_a_provider_without_an_endpoint_of_its_own_is_the_mock_and_gets_its_credentials() -> None:
    sms = build_adapter(ProviderSpec("gw", "sms_gateway"), SETTINGS_OF_TEST, transport())
    assert isinstance(sms, SmsGatewayAdapter)
    assert sms.account == MOCK_ACCOUNT_SID
    assert sms.url.startswith(f"{SETTINGS_OF_TEST.provider_url}/gw/")
    smtp = build_adapter(ProviderSpec("mail", "smtp"), SETTINGS_OF_TEST, transport())
    assert isinstance(smtp, SmtpAdapter)
    assert (smtp.host, smtp.port) == ("127.0.0.1", 2525)


@pytest.mark.parametrize(
    ("kind", "settings", "missing"),
    [
        ("sms_gateway", {"base_url": "https://api.example"}, "account_sid"),
        ("whatsapp_cloud", {"base_url": "https://graph.example"}, "phone_number_id"),
    ],
)
def test_a_real_endpoint_gets_no_mock_credentials(kind: str, settings: dict[str, str], missing: str) -> None:
    with pytest.raises(ConfigurationError, match=missing):
        build_adapter(ProviderSpec("p", kind, settings=settings), SETTINGS_OF_TEST, transport())


def test_a_real_endpoint_keeps_its_own_credentials() -> None:
    spec = ProviderSpec(
        "p", "sms_gateway", settings={"base_url": "https://api.example", "account_sid": "AC9"}
    )
    sms = build_adapter(spec, SETTINGS_OF_TEST, transport())
    assert isinstance(sms, SmsGatewayAdapter)
    assert (sms.account, sms.token) == ("AC9", "")


async def test_the_pool_refuses_an_unknown_kind() -> None:
    pool = AdapterPool(SETTINGS_OF_TEST, transport())
    try:
        with pytest.raises(ConfigurationError):
            pool.get(ProviderSpec("p", "carrier_pigeon"))
    finally:
        await pool.close()
