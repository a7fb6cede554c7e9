# The two commands a new user needs:
#   make run    install (first time) and run the nightly pipeline on the embedded default data
#   make test   install (first time) and run the test suite (what CI runs)
.PHONY: run test test-fast test-durations test-slow lint format bench repro lock mlflow-ui clean install install-test wheels gpu-check

VENV := .venv
BIN := $(VENV)/bin
PROFILE ?= smoke

install:
	bash scripts/install.sh

install-test:
	bash scripts/install.sh --test

run: install
	$(BIN)/fusion run --profile $(PROFILE)

# install, lint and types (the MLflow UI test's browser installing meanwhile), then the unit
# tier on UNIT_WORKERS processes and the integration tier: scripts/test.sh
UNIT_WORKERS ?= 2
test:
	UNIT_WORKERS=$(UNIT_WORKERS) bash scripts/test.sh

# the quick unit tier: the unit tests recorded under 3 s in tests/unit/durations.json (about a
# minute and a half on 2 cores); `make test-durations` re-records them (15 minutes)
test-fast: install-test
	$(BIN)/python -m pytest tests/unit --fast -q

test-durations: install-test
	$(BIN)/python -m pytest tests/unit -q --durations=0 --durations-min=0 | tee .test-durations.log
	$(BIN)/python scripts/durations.py .test-durations.log tests/unit/durations.json

test-slow: install-test
	$(BIN)/python -m pytest -m "slow or not slow"

lint: install-test
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

# rewrite the code in the project's format and apply ruff's safe fixes
format: install-test
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

# install-test: the scaling benchmark's S3 rows start moto's server (a test dependency)
bench: install-test
	$(BIN)/python -m benchmarks.run

# An offline GPU machine (README "On a GPU"): `make wheels` here (network), copy the checkout with
# .wheels/ there, `make gpu-check` there (no venv: its own Python with PyTorch, PYTHON=...).
wheels:
	bash scripts/wheels.sh

gpu-check:
	bash scripts/gpu-check.sh

repro: install
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/dvc repro

mlflow-ui: install
	bash mlflow/server.sh

# Regenerate requirements.lock and requirements-test.lock (with hashes) after editing pyproject.toml.
lock:
	bash scripts/lock.sh

clean:
	rm -rf prepared runs reports mlflow/store benchmarks/scratch
