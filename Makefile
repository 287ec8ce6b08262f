# One entry point. `make demo` runs the main job, `make test` the whole test suite; both set up
# only what is missing first. `make down` stops everything the project started.
SHELL := /bin/bash
PY := .venv/bin/python
export PYTHONPATH := $(CURDIR)/plugins

.PHONY: setup engine up airflow-up demo test lint bench bench-release down status
.PHONY: compose-up compose-down compose-status compose-test aws-smoke

setup:
	@scripts/setup.sh

engine: setup
	@$(PY) -m immutable.localctl engine

up: setup
	@$(PY) -m immutable.localctl up

airflow-up: up
	@$(PY) -m immutable.localctl airflow-up

demo: airflow-up
	@$(PY) -m immutable.demo

# The tests start their own registries on their own ports (tests/platform.yaml). A Docker engine
# started for them is stopped after them. Four workers: the demo's tests (e2e), `make bench` then the
# unit and DAG tests, the aws platform against its emulator, and the rest (tests/conftest.py names the groups).
test: setup
	@$(MAKE) --no-print-directory lint
	@$(PY) -m immutable.localctl with-engine .venv/bin/pytest -n 4

lint: setup
	@.venv/bin/ruff check . && .venv/bin/ruff format --check . && .venv/bin/mypy

bench: engine
	@$(PY) bench/base_build.py
	@$(PY) bench/dag_parse.py
	@$(PY) bench/release_copy.py
	@$(PY) bench/production.py
	@$(PY) bench/hostile_input.py
	@$(PY) bench/flip_skew.py
	@$(PY) bench/gates_triggerer.py
	@$(PY) bench/release_overhead.py --if-demo-runs

# Where a release's wall time went, read from the running demo's last good release (`make demo` first).
bench-release: setup
	@$(PY) bench/release_overhead.py

down:
	@if [[ -x $(PY) ]]; then $(PY) -m immutable.localctl down; else echo "[immutable] nothing to stop (no .venv)"; fi

status:
	@$(PY) -m immutable.localctl status

# The distributed Airflow of docker-compose.yaml (CeleryExecutor, Postgres, Redis), on images built
# from the current base image. WORKERS=N Celery workers (default 2); `make compose-down PURGE=1`
# also removes the database volume.
compose-up: up
	@$(PY) -m immutable.compose up $(if $(WORKERS),--workers $(WORKERS))

compose-down: setup
	@$(PY) -m immutable.compose down $(if $(PURGE),--volumes)

compose-status: setup
	@$(PY) -m immutable.compose status

# Its own platform, ports and compose project (tests/compose/); about 8 minutes on a 2-core machine (one region).
compose-test: setup
	@$(PY) -m immutable.localctl with-engine .venv/bin/pytest tests/compose

# The aws platform once through on a real account, then everything it made removed (never run by CI):
#   make aws-smoke ACCOUNT=123456789012 REGIONS=eu-west-1,us-east-1 [PLATFORM=path/to/aws-platform.yaml]
aws-smoke: setup
	@$(PY) -m immutable.aws_smoke --account "$(ACCOUNT)" --regions "$(REGIONS)" $(if $(PLATFORM),--platform "$(PLATFORM)")
