# Switchboard: every command a checkout supports. `make help` lists them.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell sha1sum pyproject.toml | cut -c1-12)

.DEFAULT_GOAL := help
.PHONY: help install services setup demo run test test-fast lint format chaos bench topology definitions clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  \033[36m%-12s\033[0m %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]'
	@rm -f $(VENV)/.installed-* && touch $@

install: $(STAMP) ## create the virtualenv and install pinned dependencies

services: ## start PostgreSQL and RabbitMQ if needed, enable the RabbitMQ plugins
	@bash tools/ensure-services.sh

setup: install services ## virtualenv, plugins, database, migrations, vhost, policies, topology
	$(BIN)/python -m services.admin setup

topology: install services ## apply topology and policies to the local broker, regenerate rabbitmq/definitions.json
	$(BIN)/python -m services.admin topology
	$(BIN)/python -m services.admin definitions

definitions: install ## regenerate rabbitmq/definitions.json from the topology in code
	$(BIN)/python -m services.admin definitions

demo: setup ## run every process, feed a 10 000-message campaign, show live progress and the summary
	$(BIN)/python -m tools.demo $(DEMO_ARGS)

run: setup ## every process (API :8080, dashboard :8090, mock provider :8081) until Ctrl-C or SIGTERM
	$(BIN)/python -m tools.run $(RUN_ARGS)

test: lint services ## the lint gate (ruff, format check, mypy strict), then the whole suite against the local services
	@bash tools/ensure-browser.sh
	@bash tools/ensure-promtool.sh
	$(BIN)/python -m pytest $(PYTEST_ARGS)

test-fast: install ## unit and property tests only (no broker, no database)
	$(BIN)/python -m pytest tests/unit $(PYTEST_ARGS)

lint: install ## ruff (lint + format check), mypy strict (shared, services, tools), and the deploy files (compose schema, k8s schema, hadolint, promtool)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy shared services tools
	$(BIN)/check-jsonschema --builtin-schema vendor.compose-spec deploy/compose.yaml
	$(BIN)/kubernetes-validate --quiet --no-warn --strict deploy/k8s/*.yaml
	$(BIN)/hadolint deploy/Dockerfile
	@bash tools/ensure-promtool.sh
	@if command -v promtool >/dev/null; then cd deploy/prometheus && promtool check rules alerts.yml \
	  && promtool test rules alerts.test.yml; else echo "promtool missing: alert rules not checked"; fi

format: install ## apply ruff's formatting and safe fixes
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

chaos: install ## the chaos harness, on a RabbitMQ and a PostgreSQL of its own: kills and restarts while 20 000 logs flow, then checks the invariants
	$(BIN)/python -m tools.chaos $(CHAOS_ARGS)

bench: setup ## throughput against a raw baseline, latency scenarios, the API under wrk (BENCH_ARGS="--scenario trickle")
	@bash tools/ensure-wrk.sh || echo "wrk is not installed: the api-single scenario will fail"
	$(BIN)/python -m tools.bench $(BENCH_ARGS)

clean: ## remove the virtualenv and caches
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis var reports
