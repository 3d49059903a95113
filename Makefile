# batchloop: `make help` lists the targets.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
UV := $(VENV)/bin/uv
UV_VERSION := 0.13.9
STAMP := $(VENV)/.installed
BENCH_STAMP := $(VENV)/.bench-installed
JARS := $(VENV)/spark-jars
JARS_STAMP := $(JARS)/.installed
PYTEST_ARGS ?=

help: ## list the targets
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml requirements.lock

	@infra/preflight.sh $(PYTHON)
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet "uv==$(UV_VERSION)"
	@# pyspark-client ships pyspark's own files in another version; a venv that still has it loses them
	@# when it is removed, so pyspark is laid down again after it goes
	@if $(UV) pip show --python $(PY) pyspark-client >/dev/null 2>&1; then \
		$(UV) pip uninstall --python $(PY) pyspark-client && \
		$(UV) pip install --python $(PY) --no-deps --reinstall --compile-bytecode "$$(grep '^pyspark==' requirements.lock)"; fi
	@# bytecode is compiled once here: every step, task and test is a new Python process, and where
	@# PYTHONDONTWRITEBYTECODE is set each would otherwise compile every module it imports again
	$(UV) pip sync --compile-bytecode --python $(PY) requirements.lock
	$(UV) pip install --python $(PY) --no-deps -e .
	$(PY) -m compileall -q jobs dags infra
	touch $(STAMP)

$(JARS_STAMP): infra/jars/pom.xml $(STAMP)
	@# the s3a connector, the S3A committers' binding and PostgreSQL's JDBC driver, from Maven Central
	infra/jars.sh $(JARS)
	touch $(JARS_STAMP)

install: $(STAMP) $(JARS_STAMP) ## create .venv with the locked dependencies and the Spark jars (Python 3.11, Java 17+)

lock: ## re-resolve requirements.lock from pyproject.toml
	@# pyspark-client (required by the Spark provider) holds the same modules as pyspark[connect]: not installed
	$(UV) pip compile pyproject.toml --extra dev --extra stack --python-version 3.11 \
		--no-emit-package pyspark-client -o requirements.lock
	$(UV) pip compile pyproject.toml --extra bench -c requirements.lock --python-version 3.11 \
		--no-emit-package pyspark-client -o requirements-bench.lock

up: install ## start (or restart) the local stack (PostgreSQL, S3, MLflow, Spark Connect, Airflow) on 127.0.0.1
	@infra/system-deps.sh stack
	$(PY) -m infra.stack up

status: install ## show the local stack: services, addresses, where the admin password is
	$(PY) -m infra.stack status

down: ## stop the local stack
	@if [ -x $(PY) ]; then $(PY) -m infra.stack down; fi

demo: install ## start the local stack (as `make up`), run the whole loop through its Airflow scheduler
	@infra/system-deps.sh stack
	$(PY) -m infra.demo

test: install ## run the tests (unit, integration on real local services, DAGs, reliability, the UI)
	@infra/system-deps.sh stack browser
	$(VENV)/bin/pytest -n 2 --dist loadgroup --durations=20 $(PYTEST_ARGS)

$(BENCH_STAMP): $(STAMP) $(JARS_STAMP) requirements-bench.lock
	@# --no-deps: the lock is complete; resolving again would pull in pyspark-client (see $(STAMP))
	$(UV) pip install --no-deps --compile-bytecode --python $(PY) -r requirements-bench.lock
	touch $(BENCH_STAMP)

bench: $(BENCH_STAMP) ## benchmarks (not part of make test): validation, scoring, drift, DAG-run latency, beside their baselines
	@infra/system-deps.sh stack
	$(PY) tests/benchmarks/bench_validation.py
	$(PY) tests/benchmarks/bench_scoring.py
	$(PY) tests/benchmarks/bench_drift.py
	$(PY) tests/benchmarks/bench_latency.py

lint: install ## ruff and mypy
	$(VENV)/bin/ruff check jobs dags infra tests
	$(VENV)/bin/mypy jobs

clean: down ## remove local state (lake, registry, S3 data) and the virtual environment
	rm -rf .batchloop $(VENV) .env

.PHONY: help install lock up status down demo test bench lint clean
