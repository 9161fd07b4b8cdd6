"""The README documents every setting of the pipeline's processes and every shared metric: a new one
without a line there fails here."""

from __future__ import annotations

import importlib
import inspect
from pathlib import Path

from prometheus_client.metrics import MetricWrapperBase
from pydantic_settings import BaseSettings

from services.api.settings import ApiSettings
from services.dashboard.settings import DashboardSettings
from shared.runtime import metrics
from shared.runtime.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text(encoding="utf-8")


def pipeline_settings() -> list[type[BaseSettings]]:
    """The common settings and every process's own class (services/<name>/settings.py)."""
    classes: list[type[BaseSettings]] = [Settings]
    for path in sorted((ROOT / "services").glob("*/settings.py")):
        module = importlib.import_module(f"services.{path.parent.name}.settings")
        classes += [
            c
            for _, c in inspect.getmembers(module, inspect.isclass)
            if issubclass(c, BaseSettings) and c.__module__ == module.__name__
        ]
    return classes


def test_every_setting_is_in_the_configuration_table() -> None:
    # Given the settings of every process (the API's and the dashboard's own ``api_*`` and
    # ``dashboard_*`` are described in their sections instead), When the README is searched for them
    names = {name for cls in pipeline_settings() for name in cls.model_fields}
    variables = sorted(
        f"SWITCHBOARD_{name.upper()}" for name in names if not name.startswith(("api_", "dashboard_"))
    )
    # Then each appears
    missing = [v for v in variables if f"`{v}`" not in README]
    assert not missing, f"document these in README.md, section Configuration: {missing}"


def test_the_apis_and_the_dashboards_own_settings_are_in_their_docs() -> None:
    for cls, prefix, doc in ((ApiSettings, "api_", "api.md"), (DashboardSettings, "dashboard_", "deploy.md")):
        text = (ROOT / "docs" / doc).read_text() + README
        names = [f"SWITCHBOARD_{n.upper()}" for n in cls.model_fields if n.startswith(prefix)]
        missing = [v for v in names if f"`{v}`" not in text]
        assert names and not missing, f"document these in docs/{doc}: {missing}"


def test_every_shared_metric_is_in_the_metrics_table() -> None:
    # Given the Prometheus metrics in shared/runtime/metrics.py
    names = []
    for value in vars(metrics).values():
        if isinstance(value, MetricWrapperBase):
            for family in value.describe():
                names.append(f"{family.name}_total" if family.type == "counter" else family.name)
    # Then each is in the README's metrics table
    missing = [n for n in names if f"`{n}`" not in README]
    assert names and not missing, f"document these in README.md, section Operating Switchboard: {missing}"
