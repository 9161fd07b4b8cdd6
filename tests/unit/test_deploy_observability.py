"""The metric reference, the Grafana dashboard and Prometheus' scrape list agree with the code."""

from __future__ import annotations

import importlib
import json
import re
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import yaml
from prometheus_client.metrics import MetricWrapperBase

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
DASHBOARD = DEPLOY / "grafana" / "dashboards" / "switchboard.json"
METRICS_DOC = ROOT / "docs" / "metrics.md"
# RabbitMQ's own metrics (rabbitmq_prometheus, /metrics/detailed) the dashboard may use, with their labels.
RABBITMQ_METRICS = {
    "rabbitmq_detailed_queue_messages_ready": {"vhost", "queue"},
    "rabbitmq_detailed_queue_messages_unacked": {"vhost", "queue"},
    "rabbitmq_detailed_queue_messages": {"vhost", "queue"},
    "rabbitmq_detailed_queue_consumers": {"vhost", "queue"},
}
# Labels Prometheus attaches to every scraped series.
TARGET_LABELS = {"job", "instance"}


@dataclass(frozen=True)
class Metric:
    name: str  # as declared
    kind: str
    labels: frozenset[str]

    def exposed(self) -> set[str]:
        """The sample names Prometheus sees."""
        if self.kind == "counter":
            return {f"{self.name}_total", f"{self.name}_created"}
        if self.kind == "histogram":
            return {f"{self.name}_bucket", f"{self.name}_sum", f"{self.name}_count", f"{self.name}_created"}
        return {self.name}

    def documented_name(self) -> str:
        return f"{self.name}_total" if self.kind == "counter" else self.name


@cache
def code_metrics() -> dict[str, Metric]:
    """Every Prometheus metric in shared/ and services/ (any module but ``__main__``), by sample name."""
    found: dict[str, Metric] = {}
    for path in sorted([*(ROOT / "shared").rglob("*.py"), *(ROOT / "services").rglob("*.py")]):
        if path.name == "__main__.py" or not _defines_metrics(path):
            continue
        parts = path.relative_to(ROOT).with_suffix("").parts
        module = importlib.import_module(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
        for value in vars(module).values():
            if isinstance(value, MetricWrapperBase):
                metric = Metric(value._name, str(value._type), frozenset(value._labelnames))
                for sample in metric.exposed():
                    found[sample] = metric
    return found


def _defines_metrics(path: Path) -> bool:
    return bool(re.search(r"\b(Counter|Gauge|Histogram|Summary)\(", path.read_text()))


def dashboard_targets() -> list[tuple[str, str, str]]:
    """(panel title, expr, legend) for every query of every panel."""
    document = json.loads(DASHBOARD.read_text())
    return [
        (panel["title"], target["expr"], target.get("legendFormat", ""))
        for panel in document["panels"]
        for target in panel.get("targets", [])
    ]


def metric_names(expr: str) -> set[str]:
    return set(re.findall(r"\b((?:switchboard|rabbitmq)_[a-zA-Z0-9_:]*)", expr))


def labels_known(name: str) -> set[str]:
    if name in RABBITMQ_METRICS:
        return RABBITMQ_METRICS[name] | TARGET_LABELS
    metric = code_metrics()[name]
    return set(metric.labels) | TARGET_LABELS | ({"le"} if name.endswith("_bucket") else set())


def doc_rows() -> dict[str, set[str]]:
    """Metric name -> labels, from the tables of docs/metrics.md."""
    rows = {}
    for line in METRICS_DOC.read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        name = (
            re.fullmatch(r"`((?:switchboard|rabbitmq)_[a-z0-9_]+)`", cells[0])
            if line.startswith("|")
            else None
        )
        if not name:
            continue
        label_cell = cells[2] if name.group(1).startswith("switchboard_") else cells[1]
        rows[name.group(1)] = set(re.findall(r"`([a-z_]+)`", label_cell))
    return rows


# ---- docs/metrics.md ---------------------------------------------------------------------------------


def test_every_metric_in_the_code_is_documented_with_its_labels() -> None:
    documented = doc_rows()
    for metric in set(code_metrics().values()):
        name = metric.documented_name()
        assert name in documented, f"{name} is missing from docs/metrics.md"
        assert documented[name] == set(metric.labels), (
            f"{name}: docs say {documented[name]}, code {metric.labels}"
        )


def test_every_documented_metric_exists() -> None:
    defined = {m.documented_name() for m in code_metrics().values()} | set(RABBITMQ_METRICS)
    for name in doc_rows():
        assert name in defined, f"docs/metrics.md documents {name}, which no metrics module defines"


def test_the_deploy_guide_links_to_the_metric_reference() -> None:
    assert "(metrics.md)" in (ROOT / "docs" / "deploy.md").read_text()


# ---- Grafana -----------------------------------------------------------------------------------------


def test_every_dashboard_query_uses_metrics_that_exist() -> None:
    targets = dashboard_targets()
    assert targets
    for title, expr, _ in targets:
        names = metric_names(expr)
        assert names, f"{title}: no Switchboard or RabbitMQ metric in {expr!r}"
        for name in names:
            assert name in code_metrics() or name in RABBITMQ_METRICS, f"{title}: unknown metric {name}"


def test_every_dashboard_query_uses_labels_its_metrics_have() -> None:
    for title, expr, legend in dashboard_targets():
        names = metric_names(expr)
        known = set.union(*(labels_known(n) for n in names))
        grouped = {
            label.strip() for group in re.findall(r"\bby \(([^)]*)\)", expr) for label in group.split(",")
        }
        matched = {
            label
            for selector in re.findall(r"\{([^}]*)\}", expr)
            for label in re.findall(r"([a-z_]+)\s*(?:=~|!=|!~|=)", selector)
        }
        assert grouped <= known, f"{title}: no such label {grouped - known} in {expr!r}"
        assert matched <= known, f"{title}: no such label {matched - known} in {expr!r}"
        legend_labels = set(re.findall(r"\{\{\s*([a-z_]+)\s*\}\}", legend))
        if grouped:
            assert legend_labels <= grouped, (
                f"{title}: legend uses {legend_labels - grouped}, not kept by `by`"
            )


def test_the_dashboard_shows_what_operators_need() -> None:
    # Throughput per stage, latency, retries, failures by class, circuit states, queue depths, DLQ size
    exprs = " ".join(expr for _, expr, _ in dashboard_targets())
    for needed in (
        "sum by (stage) (rate(switchboard_messages_out_total",
        "switchboard_provider_latency_seconds_bucket",
        "switchboard_end_to_end_seconds_bucket",
        "switchboard_retries_total",
        "sum by (error_class) (increase(switchboard_failures_total",
        "switchboard_circuit_state",
        "rabbitmq_detailed_queue_messages_ready",
        'rabbitmq_detailed_queue_messages{vhost="$vhost", queue="dlq"}',
    ):
        assert needed in exprs, f"the dashboard has no panel with {needed}"


def test_the_dashboard_is_provisioned_from_its_folder_with_its_datasource() -> None:
    document = json.loads(DASHBOARD.read_text())
    datasource = yaml.safe_load((DEPLOY / "grafana/provisioning/datasources/prometheus.yaml").read_text())
    (source,) = datasource["datasources"]
    # Every panel and query asks the data source the $datasource variable names (default: the provisioned
    # one), and every RabbitMQ query reads the vhost the $vhost variable names (default: switchboard)
    variables = {v["name"]: v for v in document["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["current"]["value"] == source["uid"]
    assert variables["vhost"]["current"]["value"] == "switchboard"
    uids = {panel["datasource"]["uid"] for panel in document["panels"] if "datasource" in panel}
    uids |= {t["datasource"]["uid"] for p in document["panels"] for t in p.get("targets", [])}
    assert uids == {"${datasource}"}
    for _, expr, _ in dashboard_targets():
        for selector in re.findall(r"rabbitmq_detailed_[a-z_]+(\{[^}]*\})?", expr):
            assert 'vhost="$vhost"' in selector, expr
    panel_ids = [panel["id"] for panel in document["panels"]]
    assert len(panel_ids) == len(set(panel_ids))
    provider = yaml.safe_load((DEPLOY / "grafana/provisioning/dashboards/switchboard.yaml").read_text())
    grafana = _compose()["services"]["grafana"]
    mounts = {v.split(":")[1]: v.split(":")[0] for v in grafana["volumes"]}
    (entry,) = provider["providers"]
    assert mounts[entry["options"]["path"]] == "./grafana/dashboards"
    assert urlparse_host(source["url"]) in _compose()["services"]


# ---- Prometheus --------------------------------------------------------------------------------------


def test_prometheus_scrapes_every_process_and_rabbitmq() -> None:
    # Given Prometheus' scrape list and the compose services running the Switchboard image
    config = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    targets: dict[str, set[str]] = {}
    for job in config["scrape_configs"]:
        for sd in job.get("dns_sd_configs", []):
            for name in sd["names"]:
                targets.setdefault(name, set()).add(f"{sd['port']}{job.get('metrics_path', '/metrics')}")
        for static in job.get("static_configs", []):
            for target in static["targets"]:
                host, _, port = target.partition(":")
                targets.setdefault(host, set()).add(f"{port}{job.get('metrics_path', '/metrics')}")
    services = _compose()["services"]
    # Then every long-running process is scraped on its metrics port
    for name, service in services.items():
        command = service.get("command") or []
        if name in {"rabbitmq", "postgres", "prometheus", "grafana"} or service.get("restart") == "no":
            continue
        env = service["environment"]
        port = env["SWITCHBOARD_METRICS_PORT"]
        if port == "0":  # the API: metrics on its own port
            port = env["SWITCHBOARD_API_PORT"]
        assert f"{port}/metrics" in targets.get(name, set()), f"Prometheus does not scrape {name} ({command})"
    # ... and RabbitMQ's plugin both in aggregate and per queue
    assert {"15692/metrics", "15692/metrics/detailed"} <= targets["rabbitmq"]
    detailed = next(j for j in config["scrape_configs"] if j.get("metrics_path") == "/metrics/detailed")
    assert {"queue_coarse_metrics", "queue_consumer_count"} <= set(detailed["params"]["family"])


@cache
def _compose() -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    return document


def urlparse_host(url: str) -> str:
    from urllib.parse import urlsplit

    return urlsplit(url).hostname or ""
