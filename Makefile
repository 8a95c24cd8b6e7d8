# Two commands on a fresh machine: `make run` (the product on the embedded default) and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
TORCH_VERSION ?= 2.13.0
# Set TORCH_INDEX to a PyTorch wheel index URL to pick a CPU-only or a specific CUDA build.
TORCH_INDEX ?=
HOST ?= 127.0.0.1
PORT ?= 8000

.PHONY: install run test test-fast lint bench data clean compose-config

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# torch first, pinned: an unpinned torch would pull a multi-GB CUDA build on CPU-only machines.
	$(PY) -c "import torch, sys; sys.exit(0 if torch.__version__.startswith('$(TORCH_VERSION)') else 1)" 2>/dev/null || \
	  $(PY) -m pip install -q "torch==$(TORCH_VERSION)" $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX))
	$(PY) -m pip install -q -e ".[dev]"
	touch $@

install: $(VENV)/.installed

run: install
	$(VENV)/bin/tension migrate
	TENSION_HOST=$(HOST) TENSION_PORT=$(PORT) $(VENV)/bin/tension serve

test: install
	$(PY) -m pytest -q --timeout=1200

test-fast: install
	$(PY) -m pytest -q -m "not slow and not e2e"

lint: install
	$(VENV)/bin/ruff check app workers tests bench migrations
	$(VENV)/bin/mypy app workers
	$(VENV)/bin/lint-imports

bench: install
	$(PY) -m bench

data: install
	$(PY) -m workers.data.build_bundled --shared ../shared/data

# Both profiles must validate; the stack refuses to start without a Ray token, so a placeholder stands in (as in CI).
COMPOSE ?= $(shell command -v docker-compose >/dev/null 2>&1 && echo docker-compose || echo docker compose)
compose-config:
	TENSION_RAY_TOKEN=$${TENSION_RAY_TOKEN:-ci-placeholder} $(COMPOSE) -f docker-compose.yml config -q
	TENSION_RAY_TOKEN=$${TENSION_RAY_TOKEN:-ci-placeholder} $(COMPOSE) -f docker-compose.yml --profile gpu config -q
	@echo "docker-compose.yml: valid (default and gpu profiles)"

clean:
	rm -rf var .pytest_cache .mypy_cache .ruff_cache
