# Routeur — the two commands: `make run` (the whole system) and `make test` (the whole suite).
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
DATA   ?= .data

.PHONY: run up down status test test-fast soak lint bench clean install

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; assert sys.version_info[:2] == (3, 11), "Routeur needs Python 3.11"'
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	@touch $(STAMP)

install: $(STAMP)

run: $(STAMP)            ## the whole system in the foreground (Ctrl-C stops it)
	$(PY) -m launcher run --data-dir $(DATA)

up: $(STAMP)             ## the whole system in the background; writes $(DATA)/run/env
	$(PY) -m launcher up --data-dir $(DATA)

down: $(STAMP)
	$(PY) -m launcher down --data-dir $(DATA)

status: $(STAMP)
	$(PY) -m launcher status --data-dir $(DATA)

test: $(STAMP)           ## the whole suite: real NATS, ClickHouse engine, radosgw S3
	bash scripts/ensure-ceph.sh
	bash scripts/ensure-chromium.sh
	$(PY) -m pytest $(PYTEST_ARGS)

soak: $(STAMP)           ## the whole suite with ROUTEUR_SOAK=1: 30 s outages per fault and a 10-min soak (ROUTEUR_SOAK_MINUTES)
	bash scripts/ensure-ceph.sh
	bash scripts/ensure-chromium.sh
	ROUTEUR_SOAK=1 $(PY) -m pytest $(PYTEST_ARGS)

test-fast: $(STAMP)      ## unit tests only (no servers)
	$(PY) -m pytest tests/unit $(PYTEST_ARGS)

bench: $(STAMP)          ## added latency vs a direct call, max RPS, CPU/request, tracer ingest (~8 min); bench/results/
	$(PY) -m pip install -q -e '.[bench]'
	$(PY) -m bench $(BENCH_ARGS)

lint: $(STAMP)
	$(PY) -m pip install -q -e '.[lint]'
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy proto services catalog launcher bench

clean:
	rm -rf $(VENV) $(DATA) .pytest_cache
