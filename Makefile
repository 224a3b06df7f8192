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
K8S_EDGE := deploy/k8s/base/edge
T ?=
PYTEST_ARGS ?=

.PHONY: help
help: ## Show this help
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z0-9_-]+:.*## / {printf "  \033[36m%-14s\033[0m %s\n", $$1, $$2}' $(MAKEFILE_LIST)

$(STAMPS)/system: deploy/local/install-system.sh deploy/local/apt-install.sh
	@deploy/local/install-system.sh
	@mkdir -p $(STAMPS) && touch $@

$(STAMPS)/python: requirements/dev.txt $(PYPROJECTS) deploy/local/install-python.sh
	@deploy/local/install-python.sh
	@mkdir -p $(STAMPS) && touch $@

$(STAMPS)/k8s-tools: requirements/k8s.txt deploy/local/install-k8s-tools.sh
	@deploy/local/install-k8s-tools.sh
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
	@cd requirements && for f in runtime dev k8s; do \
	  ../$(PY) -m piptools compile --quiet --strip-extras --no-header --allow-unsafe \
	    --no-emit-index-url --no-emit-trusted-host --no-emit-find-links $$f.in -o $$f.txt; done

.PHONY: k8s-render
k8s-render: $(STAMPS)/python $(DESCRIPTOR) ## Render Envoy's files for deploy/k8s from the descriptor set and the route table
	@$(PY) -m analytics_edge envoy --dir $(K8S_EDGE) --listen 0.0.0.0:8080 --admin 0.0.0.0:9901 \
	  --dns-upstreams --upstream-port 50051 --files-at /etc/envoy \
	  --upstream query_ws=query:50052

.PHONY: k8s-lint
k8s-lint: k8s-render $(STAMPS)/k8s-tools ## Build every deploy/k8s overlay and check it offline (schemas, checkov, yamllint, Envoy)
	@$(PY) scripts/k8s_validate.py

.PHONY: lint
lint: $(STAMPS)/python $(DESCRIPTOR) $(BUF) k8s-render $(STAMPS)/k8s-tools ## Run ruff, mypy, buf lint, Envoy's check of the edge configuration and the k8s checks
	@echo "==> lint: ruff" && $(VENV)/bin/ruff check . && $(VENV)/bin/ruff format --check .
	@echo "==> lint: mypy" && $(VENV)/bin/mypy libs/*/src services/*/src
	@echo "==> lint: buf" && $(BUF) lint "$(DESCRIPTOR)#format=binpb" --path analytics --config proto/buf.yaml
	@echo "==> lint: envoy" && $(PY) -m analytics_edge envoy --validate --dir build/edge-lint \
	  $(foreach u,auth=127.0.0.1:25151 ingest=127.0.0.1:25152 query=127.0.0.1:25153 processor=127.0.0.1:25154 query_ws=127.0.0.1:25156,--upstream $(u))
	@echo "==> lint: k8s" && $(PY) scripts/k8s_validate.py

IMAGE ?= analytics:0.1.0
IMAGE_BASE ?=
IMAGE_BUILD_FLAGS ?=
.PHONY: image
image: ## Build the services' image with podman (IMAGE=analytics:0.1.0, IMAGE_BASE=another bookworm base)
	@command -v podman >/dev/null || deploy/local/apt-install.sh podman
	@podman build $(IMAGE_BUILD_FLAGS) -f deploy/image/Containerfile \
	  $(if $(IMAGE_BASE),--build-arg BASE=$(IMAGE_BASE)) -t $(IMAGE) .

# No registry is reachable here: the base comes from debootstrap, the build runs with chroot
# isolation (no OCI runtime needed) and the host's CA bundle (for a TLS-intercepting proxy to PyPI).
SMOKE_BASE := localhost/analytics-base:bookworm
SMOKE_IMAGE := localhost/analytics:smoke
.PHONY: image-smoke
image-smoke: setup ## Build the image from a debootstrap base (no registry) and start every service from it
	@deploy/image/local-base.sh $(SMOKE_BASE)
	@$(MAKE) --no-print-directory image IMAGE=$(SMOKE_IMAGE) IMAGE_BASE=$(SMOKE_BASE) \
	  IMAGE_BUILD_FLAGS="--isolation chroot --network host -v /etc/ssl/certs:/etc/ssl/certs:ro"
	@ANALYTICS_TEST_IMAGE=$(SMOKE_IMAGE) $(VENV)/bin/pytest tests/image $(PYTEST_ARGS)

.PHONY: fmt
fmt: $(STAMPS)/python ## Format and auto-fix the code
	@$(VENV)/bin/ruff format . && $(VENV)/bin/ruff check --fix .

.PHONY: test
test: setup k8s-render $(STAMPS)/k8s-tools ## Run unit, integration and end-to-end tests (T=path to narrow)
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
