# The two commands of the README: `make demo` and `make test`. Both install what is missing first.

SHELL := /bin/bash
VENV ?= .venv
PYTHON := $(VENV)/bin/python
PYTEST_ARGS ?=

.PHONY: install demo playground test lint format server bench

## install: system libraries (if missing), .venv, torch (CPU), the project with dev extras
install:
	bash scripts/install.sh

## demo: the whole system on this machine (embedded Temporal, local provider, reference miner)
demo: install
	$(PYTHON) -m demo

## playground: the demo, then the whole local world stays up until Ctrl-C (Temporal, prompt
## server, workers, the demo repo) so you can start audits, watch the board, read reports
playground: install
	$(PYTHON) -m demo --keep-running

## test: the full suite (starts its own Temporal dev servers)
test: install
	$(PYTHON) -m pytest -q $(PYTEST_ARGS)

## lint: ruff, ruff format --check, mypy (strict)
lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy .

## format: apply ruff fixes and formatting
format: install
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

## server: the embedded Temporal dev server in the foreground (Web UI http://localhost:8233)
server: install
	$(PYTHON) starter.py server

## bench: quick variants of the benchmarks (each prints its ratios; see benchmarks/README.md)
bench: install
	$(PYTHON) -m benchmarks.cpu_pressure --megabytes 10
	$(PYTHON) -m benchmarks.render_throughput --quick
	$(PYTHON) -m benchmarks.pipeline --prompts 8 --generation 1 --loops 4 --straggler 3 --dying 2 --speculate
	$(PYTHON) -m benchmarks.temporal_cost --prompts 32 --pods 4 --generation 0.05 0.2
	$(PYTHON) -m benchmarks.scale --quick
