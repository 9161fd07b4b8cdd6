"""The README documents every shared setting and metric: a new one without a line there fails here."""

from __future__ import annotations

from pathlib import Path

from prometheus_client.metrics import MetricWrapperBase

from shared.runtime import metrics
from shared.runtime.settings import Settings

README = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")


def test_every_setting_is_in_the_configuration_table() -> None:
    # Given the settings every process reads, When the README is searched for their variables
    variables = [f"SWITCHBOARD_{name.upper()}" for name in Settings.model_fields]
    # Then each appears
    missing = [v for v in variables if f"`{v}`" not in README]
    assert not missing, f"document these in README.md, section Configuration: {missing}"


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
