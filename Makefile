# Routeur — the two commands: `make run` (the whole system) and `make test` (the whole suite).
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
DATA   ?= .data

.PHONY: run up down status test test-fast soak lint lock bench clean install

LOCKS  := requirements
UV     := $(VENV)-lock/bin/uv
UV_VERSION := 0.13.9

# The venv holds exactly requirements/test.lock (hash-checked, no resolver) plus Routeur itself, editable.
# A changed lock rebuilds the venv from scratch, so nothing the lock dropped lingers.
$(STAMP): $(LOCKS)/test.lock
	@$(PYTHON) -c 'import sys; assert sys.version_info[:2] == (3, 11), "Routeur needs Python 3.11"'
	rm -rf $(VENV)
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --require-hashes --no-deps -r $(LOCKS)/test.lock
	$(PY) -m pip install -q --no-deps --no-build-isolation -e .
	@touch $(STAMP)

# Tool venvs for the bench and lint extras (py-spy; ruff and mypy), each exactly its own lock.
$(VENV)-%/.installed: $(LOCKS)/%.lock
	rm -rf $(VENV)-$*
	$(PYTHON) -m venv $(VENV)-$*
	$(VENV)-$*/bin/python -m pip install -q --require-hashes --no-deps -r $<
	@touch $@

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
	kubectl="$$(bash scripts/ensure-kubectl.sh)" && KUBECTL="$$kubectl" $(PY) -m pytest $(PYTEST_ARGS)

soak: $(STAMP)           ## the whole suite with ROUTEUR_SOAK=1: 30 s outages per fault and a 10-min soak (ROUTEUR_SOAK_MINUTES)
	bash scripts/ensure-ceph.sh
	bash scripts/ensure-chromium.sh
	kubectl="$$(bash scripts/ensure-kubectl.sh)" && KUBECTL="$$kubectl" ROUTEUR_SOAK=1 $(PY) -m pytest $(PYTEST_ARGS)

test-fast: $(STAMP)      ## unit tests only (no servers)
	$(PY) -m pytest tests/unit $(PYTEST_ARGS)

bench: $(STAMP) $(VENV)-bench/.installed  ## added latency vs a direct call, max RPS, CPU/request, tracer ingest (~8 min); bench/results/
	PATH="$(CURDIR)/$(VENV)-bench/bin:$$PATH" $(PY) -m bench $(BENCH_ARGS)

lint: $(STAMP) $(VENV)-lint/.installed
	$(VENV)-lint/bin/ruff check .
	$(VENV)-lint/bin/mypy --python-executable $(PY) proto services catalog launcher bench

# Refresh every lock on purpose (a dependency range in pyproject.toml or requirements/*.in changed, or a
# security release is wanted): newest versions allowed, hashes for every platform's wheels; commit the result.
lock:
	test -x $(UV) || { $(PYTHON) -m venv $(VENV)-lock && $(VENV)-lock/bin/pip install -q uv==$(UV_VERSION); }
	UV=$(UV) bash scripts/lock.sh

clean:
	rm -rf $(VENV) $(VENV)-bench $(VENV)-lint $(VENV)-lock $(VENV)-k8s $(DATA) .pytest_cache
