#!/usr/bin/env bash
# Regenerate the lock files from pyproject.toml, with hashes (make lock).
#
#   requirements.lock       the runtime set: every dependency of fusionflow except torch
#   requirements-test.lock  what `make test` adds: pytest, selenium, ruff, mypy, pre-commit
#
# torch is left out of both: scripts/install.sh installs it first, the CPU or the CUDA build
# by machine, and those builds have different hashes. Its own dependencies are resolved
# against the CPU wheel (no nvidia-* packages) and pinned here. Versions already in a lock
# are kept unless pyproject.toml's ranges exclude them (uv prefers them).
set -euo pipefail
cd "$(dirname "$0")/.."
UV=${UV:-.venv/bin/uv}
[[ -x $UV ]] || { .venv/bin/python -m pip install -q uv; }
PYVER=${PYVER:-3.11}
torch_pin=$(mktemp); trap 'rm -f "$torch_pin"' EXIT
echo "torch==${TORCH_VERSION:-2.13.0+cpu}" > "$torch_pin"
common=(--python-version "$PYVER" --generate-hashes --quiet --no-header --index-strategy unsafe-best-match
        --find-links "${TORCH_WHEELS:-/opt/wheels}" --constraint "$torch_pin" --no-emit-package torch)

header() {
  echo "# $1 Generated from pyproject.toml by scripts/lock.sh (make lock); install with"
  echo "# pip install --require-hashes -r $2 (scripts/install.sh does). torch is not here: see scripts/lock.sh."
}

# -o the lock itself: uv keeps the versions it already pins (the tested set)
"$UV" pip compile pyproject.toml "${common[@]}" -o requirements.lock
{ header "The runtime dependencies of fusionflow, exact versions and hashes." requirements.lock
  grep -v '^#' requirements.lock; } > requirements.lock.tmp
mv requirements.lock.tmp requirements.lock

# the test set: only what the runtime set lacks, at versions consistent with it
runtime=$(grep -oE '^[A-Za-z0-9_.-]+==' requirements.lock | tr -d '=' | sed 's/^/--no-emit-package /')
# shellcheck disable=SC2086
"$UV" pip compile pyproject.toml --extra test "${common[@]}" --constraint requirements.lock $runtime \
  -o requirements-test.lock
{ header "What the tests and checks add to requirements.lock, exact versions and hashes." requirements-test.lock
  grep -v '^#' requirements-test.lock; } > requirements-test.lock.tmp
mv requirements-test.lock.tmp requirements-test.lock
echo "wrote requirements.lock ($(grep -c '==' requirements.lock) packages) and requirements-test.lock ($(grep -c '==' requirements-test.lock) packages)"
