"""deploy/prometheus/alerts.yml: the alert rules load in Prometheus' own checker, fire on the series that
mean them and stay quiet on a healthy pipeline (promtool, from Debian's prometheus package:
tools/ensure-promtool.sh installs it), and use only metrics the code exports."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.unit.test_deploy_observability import RABBITMQ_METRICS, code_metrics

PROMETHEUS = Path(__file__).resolve().parents[2] / "deploy" / "prometheus"
PROMTOOL = shutil.which("promtool")
WANTED = {
    "SwitchboardPipelineStalled",
    "SwitchboardDeadLettersGrowing",
    "SwitchboardCircuitOpen",
    "SwitchboardBackpressure",
    "SwitchboardShardWithoutConsumer",
    "SwitchboardReceiptsMissing",
}


def rules() -> list[dict[str, object]]:
    document = yaml.safe_load((PROMETHEUS / "alerts.yml").read_text())
    return [rule for group in document["groups"] for rule in group["rules"]]


def test_the_alerts_operators_need_exist_and_are_loaded_by_prometheus() -> None:
    assert {str(r["alert"]) for r in rules()} >= WANTED
    config = yaml.safe_load((PROMETHEUS / "prometheus.yml").read_text())
    assert config["rule_files"] == ["/etc/prometheus/alerts.yml"]


def test_alerts_use_only_metrics_that_exist() -> None:
    known = set(code_metrics()) | set(RABBITMQ_METRICS) | {"up"}
    for rule in rules():
        names = set(re.findall(r"\b((?:switchboard|rabbitmq)_[a-z0-9_]+|up(?=\{))", str(rule["expr"])))
        assert names, rule["alert"]
        assert names <= known, f"{rule['alert']}: unknown {names - known}"


def test_every_alert_tells_what_to_do() -> None:
    for rule in rules():
        annotations = rule["annotations"]
        assert isinstance(annotations, dict)
        assert annotations.get("summary") and annotations.get("description"), rule["alert"]
        assert rule.get("labels", {}).get("severity") in ("warning", "critical")  # type: ignore[union-attr]


@pytest.mark.skipif(PROMTOOL is None, reason="promtool not installed (bash tools/ensure-promtool.sh)")
def test_promtool_loads_the_rules_and_their_unit_tests_pass() -> None:
    assert PROMTOOL is not None
    check = subprocess.run(
        [PROMTOOL, "check", "rules", "alerts.yml"], cwd=PROMETHEUS, capture_output=True, text=True
    )
    assert check.returncode == 0, check.stdout + check.stderr
    tested = subprocess.run(
        [PROMTOOL, "test", "rules", "alerts.test.yml"], cwd=PROMETHEUS, capture_output=True, text=True
    )
    assert tested.returncode == 0, tested.stdout + tested.stderr
    # ... and the unit tests cover every alert, firing and quiet
    document = yaml.safe_load((PROMETHEUS / "alerts.test.yml").read_text())
    firing = {t["alertname"] for t in document["tests"][0]["alert_rule_test"] if t["exp_alerts"]}
    quiet = {t["alertname"] for t in document["tests"][1]["alert_rule_test"] if not t["exp_alerts"]}
    assert firing == quiet == {str(r["alert"]) for r in rules()}
