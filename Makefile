# The two commands a new user needs:
#   make run    install (first time) and run the nightly pipeline on the embedded default data
#   make test   install (first time) and run the test suite (what CI runs)
.PHONY: run test test-slow bench repro lock mlflow-ui clean install wheels gpu-check

VENV := .venv
BIN := $(VENV)/bin
PROFILE ?= smoke

install:
	bash scripts/install.sh

run: install
	$(BIN)/fusion run --profile $(PROFILE)

test: install
	bash scripts/install-browser.sh
	$(BIN)/python -m pytest

test-slow: install
	$(BIN)/python -m pytest -m "slow or not slow"

bench: install
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

# Refresh requirements.lock from the current environment (after editing pyproject.toml).
lock:
	{ echo "# Exact versions of every dependency except torch (installed first by scripts/install.sh,"; \
	  echo "# CPU or CUDA build by machine). Regenerate after changing pyproject.toml: make lock"; \
	  $(BIN)/python -m pip freeze --exclude-editable | grep -v -i -E '^(torch|fusionflow)=='; } > requirements.lock

clean:
	rm -rf prepared runs reports mlflow/store benchmarks/scratch
