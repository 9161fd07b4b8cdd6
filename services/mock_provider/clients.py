"""What a client of the local mock provider sends for the settings a provider row leaves out.

The sender uses it only for a provider without an endpoint of its own (no ``base_url`` / ``host``:
it then talks to this mock provider, ``SWITCHBOARD_PROVIDER_URL`` / ``SWITCHBOARD_MOCK_SMTP_PORT``).
A provider with an endpoint of its own gets nothing from here: what it needs must be in its settings.
"""

from __future__ import annotations

from typing import Any

from services.mock_provider.settings import MockClient
from shared.core.providers import ProviderKind

MOCK_ACCOUNT_SID = "ACmock"
MOCK_PHONE_NUMBER_ID = "1000000001"
MOCK_SIGNAL_NUMBER = "+15550000001"


def mock_client_settings(kind: ProviderKind, settings: MockClient) -> dict[str, Any]:
    token = settings.mock_auth_token.get_secret_value()
    if kind == ProviderKind.SMS_GATEWAY:
        return {"account_sid": MOCK_ACCOUNT_SID, "auth_token": token}
    if kind == ProviderKind.WHATSAPP_CLOUD:
        return {"phone_number_id": MOCK_PHONE_NUMBER_ID, "access_token": token}
    if kind == ProviderKind.SIGNAL_CLI:
        return {"number": MOCK_SIGNAL_NUMBER}
    if kind == ProviderKind.SMTP:
        return {"host": "127.0.0.1", "port": settings.mock_smtp_port or 25}
    return {}
