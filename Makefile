# lossd developer commands. `make help` lists them.
#
#   make run     create .venv if missing, install lossd[server] pinned, serve on 127.0.0.1:50051
#   make check   add the dev tools to .venv; ruff, mypy --strict and tests/unit: the fast loop
#                before a commit (under a minute; .pre-commit-config.yaml runs the same three steps)
#   make test    add the dev tools (pytest, mypy, ruff, ..., buf) to .venv, then the whole test
#                suite (tests/unit, tests/integration, tests/robustness, and tests/repo: lint,
#                packaging, Dockerfile, manifests, generated files)
#   make dist    build the sdist and the wheel into dist/
#   make fuzz    over 10,000 generated requests against a real server (not in make test)
#   make soak    16 clients for 60 s, 20 kill -9 restarts during training (not in make test)
#   make replicas  replicas on a real PostgreSQL: kill -9, SIGSTOP, cancel, 200 jobs, a database
#                restart, network partitions in namespaces (about 5 min; not in make test; CI runs it)
#
# Variables (make VAR=value ...):
#   VENV         virtualenv to use/create (default .venv; absolute paths work)
#   PYTHON       interpreter that creates it (default python3)
#   HOST, PORT   where `make run` binds (default: the server's, 127.0.0.1:50051,
#                or LOSSD_HOST / LOSSD_PORT)
#   ARGS         more `lossd serve` arguments for `make run`, e.g. ARGS="--workers 8"
#   PYTEST_ARGS  arguments for pytest, e.g. PYTEST_ARGS="-x -k codec"
#   BENCH_ARGS   arguments for `make bench`, e.g. BENCH_ARGS="--only wire,memory" or "--quick"
#   FUZZ_EXAMPLES  generated requests per fuzz test for `make fuzz` (default 2500: over 10,000 in all)
#   BUF_VERSION  npm @bufbuild/buf version installed under .tools/buf
#   IMAGE        tag that `make image` builds (default lossd:latest)
#   ENGINE       container engine for `make image` (default docker if its daemon runs, else podman)

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help
.DELETE_ON_ERROR:

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# Two install steps, each redone only when the dependency declarations change:
# serving (lossd[server], what `make run` needs) and the dev tools on top (`make test`).
SERVE_STAMP := $(VENV)/.lossd-server
STAMP := $(VENV)/.lossd-installed
PIP_INSTALL := $(BIN)/python -m pip install --disable-pip-version-check

BUF_VERSION ?= 1.75.0
TOOLS ?= .tools
BUF_DIR := $(TOOLS)/buf
BUF := $(BUF_DIR)/node_modules/.bin/buf
BUF_STAMP := $(BUF_DIR)/.installed-$(BUF_VERSION)

HOST ?=
PORT ?=
ARGS ?=
PYTEST_ARGS ?=
BENCH_ARGS ?=
FUZZ_EXAMPLES ?= 2500

PROTOS := $(shell find proto -name '*.proto' -not -path '*/node_modules/*')

.PHONY: help venv serve-venv run check test dist lint buf buf-lint proto clean distclean image image-test image-clean bench fuzz soak replicas

IMAGE ?= lossd:latest
#: lossd extras the image installs (empty: the Dockerfile's default, server,metrics)
EXTRAS ?=
# docker when its daemon answers, else podman (evaluated only by `make image`)
ENGINE ?= $(shell docker info >/dev/null 2>&1 && echo docker || echo podman)

help: ## this list
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

serve-venv: $(SERVE_STAMP) ## create the venv if missing; install lossd[server] pinned (what `make run` needs)

venv: $(STAMP) ## serve-venv plus the dev tools: lossd[server,dev] pinned (what `make test` needs)

$(SERVE_STAMP): pyproject.toml constraints.txt
	@test -x $(BIN)/python || { echo "creating $(VENV)"; $(PYTHON) -m venv $(VENV); }
	@echo "installing lossd[server] into $(VENV) (pinned by constraints.txt; first run: about a minute)"
	$(PIP_INSTALL) --quiet -e '.[server]' -c constraints.txt
	@touch $@

$(STAMP): $(SERVE_STAMP)
	@echo "installing the dev tools into $(VENV): lossd[server,dev] (pinned by constraints.txt)"
	$(PIP_INSTALL) --quiet --upgrade pip
	$(PIP_INSTALL) --quiet -e '.[server,dev]' -c constraints.txt
	@touch $@

run: serve-venv ## serve on HOST:PORT (default 127.0.0.1:50051); Ctrl-C stops it cleanly
	@echo "lossd is $(BIN)/lossd: in another terminal, 'source $(BIN)/activate' puts it on PATH"
	exec $(BIN)/python -m lossd.server $(if $(HOST),--host $(HOST)) $(if $(PORT),--port $(PORT)) $(ARGS)

# The three steps of `make check`, one per line; .pre-commit-config.yaml runs the same
# commands (with .venv/bin) and tests/repo/test_tools.py holds the two to each other.
check: venv ## ruff + mypy --strict + tests/unit: the fast loop before a commit (under a minute)
	$(BIN)/python tests/support/lint.py ruff
	$(BIN)/python tests/support/lint.py mypy
	$(BIN)/python -m pytest tests/unit -q $(PYTEST_ARGS)

.PHONY: fix
fix: venv ## sort import blocks, re-wrap over-long statements (only those); lists what needs a hand
	$(BIN)/python tests/support/lint.py fix

test: venv buf ## the whole test suite (what CI runs), then its 25 slowest tests
	BUF="$(abspath $(BUF))" $(BIN)/pytest --durations=25 $(PYTEST_ARGS)

dist: venv ## build the sdist and the wheel into dist/ (python -m build: the wheel is built from the sdist)
	rm -rf dist
	$(BIN)/python -m build --outdir dist .
	rm -rf *.egg-info  # the sdist step's metadata, left in the tree
	@ls dist

fuzz: venv ## hypothesis-generated requests against a real server, FUZZ_EXAMPLES per test (not in make test)
	LOSSD_FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) $(BIN)/pytest tests/robustness/test_fuzz.py $(PYTEST_ARGS)

soak: venv ## 16 clients for 60 s, and 20 kill -9 restarts during training jobs (not in make test)
	LOSSD_SOAK=1 $(BIN)/pytest tests/robustness/test_soak.py tests/robustness/test_crash.py $(PYTEST_ARGS)

replicas: venv ## replicas on a real PostgreSQL: kill -9, SIGSTOP, partitions in network namespaces (~5 min; not in make test)
	LOSSD_REPLICA_TESTS=1 $(BIN)/pytest -m replicas $(PYTEST_ARGS)

lint: venv buf ## ruff (client, server, proto/lossd), mypy --strict (the whole lossd package), buf lint
	$(BIN)/python tests/support/lint.py
	cd proto && "$(abspath $(BUF))" lint

buf: $(BUF_STAMP) ## install buf (npm @bufbuild/buf, BUF_VERSION) under .tools/buf

$(BUF_STAMP):
	@command -v npm >/dev/null || { echo "npm is needed to install buf (apt-get install npm)"; exit 1; }
	rm -rf $(BUF_DIR)
	mkdir -p $(BUF_DIR)
	npm install --no-save --no-audit --no-fund --ignore-scripts --loglevel=error \
		--prefix $(BUF_DIR) @bufbuild/buf@$(BUF_VERSION)
	$(BUF) --version
	@touch $@

buf-lint: buf ## buf lint on proto/ (rules in proto/buf.yaml)
	cd proto && "$(abspath $(BUF))" lint

bench: venv ## benchmarks side by side (~4 min; not in make test): bench/results/, docs/performance.md
	$(BIN)/python -m bench $(BENCH_ARGS)

docs: venv ## regenerate docs/losses.md from the loss registry
	$(BIN)/python -m lossd.server.losses._docs --out docs/losses.md

proto: venv ## regenerate the committed stubs next to each .proto
	$(BIN)/python -m grpc_tools.protoc -I proto --python_out=proto --pyi_out=proto --grpc_python_out=proto $(PROTOS)

image: ## build the container image IMAGE with ENGINE (docker or podman), installing from the package indexes (EXTRAS=server,metrics,postgres for a PostgreSQL job store)
	$(ENGINE) build $(if $(findstring podman,$(ENGINE)),--format docker) $(if $(EXTRAS),--build-arg EXTRAS=$(EXTRAS)) -t $(IMAGE) .

image-test: venv ## build the image with podman (offline wheels) and run it: health, grpcurl, TrainJob, SIGTERM, restart
	PYTHON="$(abspath $(BIN))/python" bash deploy/image_test.sh

image-clean: ## remove the image test's podman storage and caches (.cache/image-test)
	-podman --root "$(abspath .cache/image-test/storage)" --runroot "$(abspath .cache/image-test/run)" rm -a -f
	rm -rf .cache/image-test

clean: ## remove build outputs and caches (keeps the venv and buf)
	rm -rf build dist *.egg-info .pytest_cache .mypy_cache .ruff_cache
	find . -path ./$(VENV) -prune -o -path ./$(TOOLS) -prune -o -path ./.cache -prune -o -name __pycache__ -type d -print0 | xargs -0 rm -rf

distclean: clean ## also remove the venv and the tools
	rm -rf $(VENV) $(TOOLS)
