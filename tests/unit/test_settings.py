"""Settings per process: each loads its own class, variables for other processes are ignored, a keyword
that is no field is refused, and each field (with its default) is declared in one place only."""

from __future__ import annotations

import importlib
import inspect
import os
from pathlib import Path

import pytest
from pydantic_settings import BaseSettings

from services.mock_provider.settings import MockProviderSettings
from services.poller.settings import PollerSettings
from services.receipts.settings import ReceiptsSettings
from services.sender.settings import SenderSettings
from shared.runtime import settings as common
from shared.runtime.hardening import development_secrets
from shared.runtime.settings import Settings

ROOT = Path(__file__).resolve().parents[2]


def settings_modules() -> list[object]:
    names = [f"services.{p.parent.name}.settings" for p in sorted((ROOT / "services").glob("*/settings.py"))]
    return [common, *(importlib.import_module(n) for n in names)]


def declared() -> dict[type[BaseSettings], set[str]]:
    """Each settings class and the fields it declares itself (not those it inherits)."""
    found: dict[type[BaseSettings], set[str]] = {}
    for module in settings_modules():
        for _, cls in inspect.getmembers(module, inspect.isclass):
            if issubclass(cls, BaseSettings) and cls.__module__ == getattr(module, "__name__", ""):
                own = set(cls.__dict__.get("__annotations__", {})) - {"model_config"}
                found[cls] = own & set(cls.model_fields)
    return found


def test_a_keyword_that_is_not_a_field_of_the_class_is_refused() -> None:
    # Given a mock provider setting handed to the sender (a leftover of the one big Settings)
    # Then the sender's class refuses it instead of ignoring it
    with pytest.raises(TypeError, match="SenderSettings has no setting mock_seed"):
        SenderSettings(mock_seed=7)
    with pytest.raises(TypeError, match="provider_url"):
        Settings(provider_url="http://elsewhere")
    assert MockProviderSettings(mock_seed=7).mock_seed == 7


def test_a_variable_for_another_process_is_ignored(monkeypatch: pytest.MonkeyPatch) -> None:
    # Given one environment for every process (as compose's shared block and the test stacks give)
    monkeypatch.setenv("SWITCHBOARD_MOCK_SEED", "7")
    monkeypatch.setenv("SWITCHBOARD_PROVIDER_URL", "http://mock:9999")
    monkeypatch.setenv("SWITCHBOARD_SHARDS", "8")
    # When each process loads its own class / Then it reads its own variables and the common ones only
    poller, sender, mock = PollerSettings(), SenderSettings(), MockProviderSettings()
    assert (poller.shards, sender.shards, mock.shards) == (8, 8, 8)
    assert sender.provider_url == "http://mock:9999" and mock.mock_seed == 7
    assert not hasattr(poller, "mock_seed") and not hasattr(poller, "provider_url")


def test_every_field_is_declared_in_one_class_only() -> None:
    # A field two classes declared could get two defaults: a shared field lives in one group
    owners: dict[str, list[str]] = {}
    for cls, fields in declared().items():
        for name in fields:
            owners.setdefault(name, []).append(f"{cls.__module__}.{cls.__name__}")
    assert {n: o for n, o in owners.items() if len(o) > 1} == {}


def test_mock_settings_live_with_the_mock_provider() -> None:
    elsewhere = {
        f"{cls.__module__}.{cls.__name__}": sorted(n for n in fields if n.startswith("mock_"))
        for cls, fields in declared().items()
        if cls.__module__ != "services.mock_provider.settings"
    }
    assert {k: v for k, v in elsewhere.items() if v} == {}


def test_the_common_settings_hold_nothing_a_single_process_owns() -> None:
    assert set(Settings.model_fields) == {
        "env",
        "database_url",
        "rabbitmq_url",
        "rabbitmq_management_url",
        "rabbitmq_management_user",
        "rabbitmq_management_password",
        "shards",
        "delivery_limit",
        "metrics_port",
        "metrics_host",
        "readiness_timeout_s",
        "stop_grace_s",
        "log_level",
        "log_format",
    }


def test_a_process_is_checked_for_its_own_development_secrets_only(monkeypatch: pytest.MonkeyPatch) -> None:
    # Given production with the development webhook key and no receipt secrets in the environment
    for name in [n for n in os.environ if n.startswith("SWITCHBOARD_")]:
        monkeypatch.delenv(name)
    production = {
        "env": "production",
        "rabbitmq_url": "amqp://u:strong@h:5672/v",
        "database_url": "postgresql://u:strong@h:5432/d",
    }
    # Then the sender, which signs webhooks, names the key; the poller does not read it, so does not
    assert development_secrets(SenderSettings(**production)) == ["SWITCHBOARD_WEBHOOK_SIGNING_SECRET"]
    assert development_secrets(PollerSettings(**production)) == []
    # And only the receipts receiver needs receipt secrets
    assert ReceiptsSettings(**production).missing_secrets() == [
        "SWITCHBOARD_RECEIPT_SECRETS (one secret per provider)"
    ]
    assert PollerSettings(**production).missing_secrets() == []


def test_shared_holds_subpackages_only() -> None:
    # The layout shows the architecture (docs/design-notes.md, "Code layout"): a new module goes into
    # core, bus, db, net, runtime or ops, never beside them
    top = sorted(p.name for p in (ROOT / "shared").iterdir() if p.name != "__pycache__")
    assert top == ["__init__.py", "bus", "core", "db", "net", "ops", "runtime"]
