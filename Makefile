# Analytics backend: run, test and develop it on one machine.
.DEFAULT_GOAL := help
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c

VENV := .venv
PY := $(VENV)/bin/python
STAMPS := build/stamps
BUF_VERSION := 1.75.0
BUF := .tools/node_modules/.bin/buf
DESCRIPTOR := libs/analytics-proto/src/analytics/v1/descriptor_set.binpb
PROTOS := $(shell find proto -name '*.proto')
PYPROJECTS := $(wildcard libs/*/pyproject.toml services/*/pyproject.toml)
T ?=
PYTEST_ARGS ?=

.PHONY: help
help: ## Show this help
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / {printf "  \033[36m%-14s\033[0m %s\n", $$1, $$2}' $(MAKEFILE_LIST)

$(STAMPS)/system: deploy/local/install-system.sh deploy/local/apt-install.sh
	@deploy/local/install-system.sh
	@mkdir -p $(STAMPS) && touch $@

$(STAMPS)/python: requirements/dev.txt $(PYPROJECTS) deploy/local/install-python.sh
	@deploy/local/install-python.sh
	@mkdir -p $(STAMPS) && touch $@

$(DESCRIPTOR): $(PROTOS) scripts/proto_codegen.sh $(STAMPS)/python
	@scripts/proto_codegen.sh

$(BUF):
	@command -v npm >/dev/null || deploy/local/apt-install.sh nodejs npm
	@echo "==> tools: installing buf $(BUF_VERSION) from npm into .tools"
	@mkdir -p .tools && npm install --silent --no-save --no-package-lock --prefix .tools @bufbuild/buf@$(BUF_VERSION)

.PHONY: setup
setup: $(STAMPS)/system $(STAMPS)/python $(DESCRIPTOR) ## Install everything that is missing (system packages, TimescaleDB, venv)

.PHONY: proto
proto: $(STAMPS)/python ## Generate Python code and the descriptor set from proto/
	@scripts/proto_codegen.sh

.PHONY: requirements
requirements: ## Re-pin requirements/*.txt from requirements/*.in
	@$(PY) -m pip install --quiet pip-tools
	@cd requirements && for f in runtime dev; do \
	  ../$(PY) -m piptools compile --quiet --strip-extras --no-header --allow-unsafe \
	    --no-emit-index-url --no-emit-trusted-host --no-emit-find-links $$f.in -o $$f.txt; done

.PHONY: lint
lint: $(STAMPS)/python $(DESCRIPTOR) $(BUF) ## Run ruff, mypy, buf lint and Envoy's check of the edge configuration
	@echo "==> lint: ruff" && $(VENV)/bin/ruff check . && $(VENV)/bin/ruff format --check .
	@echo "==> lint: mypy" && $(VENV)/bin/mypy libs/*/src services/*/src
	@echo "==> lint: buf" && $(BUF) lint "$(DESCRIPTOR)#format=binpb" --path analytics --config proto/buf.yaml
	@echo "==> lint: envoy" && $(PY) -m analytics_edge envoy --validate --dir build/edge-lint \
	  $(foreach u,auth=127.0.0.1:25151 ingest=127.0.0.1:25152 query=127.0.0.1:25153 processor=127.0.0.1:25154 query_ws=127.0.0.1:25156,--upstream $(u))

.PHONY: fmt
fmt: $(STAMPS)/python ## Format and auto-fix the code
	@$(VENV)/bin/ruff format . && $(VENV)/bin/ruff check --fix .

.PHONY: test
test: setup ## Run unit, integration and end-to-end tests (T=path to narrow)
	@$(VENV)/bin/pytest $(or $(T),) $(PYTEST_ARGS)

.PHONY: run
run: setup ## Run the whole system locally (HTTP on 127.0.0.1:8080)
	@deploy/local/run.sh

.PHONY: clean
clean: ## Remove build outputs (keeps .data)
	rm -rf build .tools .pytest_cache .mypy_cache .ruff_cache libs/analytics-proto/src/analytics

.PHONY: bench
bench: setup ## Benchmark throughput, latency and exactly-once on a fresh private stack (BENCH_SECONDS=30)
	@command -v wrk >/dev/null || deploy/local/apt-install.sh wrk
	@$(PY) -m bench

.PHONY: bench-query
bench-query: setup ## Benchmark query latency on a kept 10M-event data set against raw SQL (BENCH_QUERY_EVENTS=10000000)
	@$(PY) -m bench.query
