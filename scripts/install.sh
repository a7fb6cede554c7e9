#!/usr/bin/env bash
# Create .venv/ and install fusionflow with the locked dependency set (hash-checked).
# --test also installs requirements-test.lock: pytest, selenium, ruff, mypy, pre-commit.
# Both with uv (requirements-uv.lock), or pip where uv cannot (below).
#
# torch comes first and by machine: a CUDA build where an NVIDIA driver answers, the CPU
# build elsewhere (a few hundred MB instead of several GB). Override with
# TORCH_SPEC (default torch==2.13.0) and TORCH_INDEX_URL (e.g. https://download.pytorch.org/whl/cu128).
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
TORCH_SPEC=${TORCH_SPEC:-torch==2.13.0}
VENV=.venv
STAMP=$VENV/.fusionflow-installed
LOCKS=(requirements.lock)
if [[ "${1:-}" == "--test" ]]; then
  LOCKS+=(requirements-test.lock)
fi

# Re-running is cheap: skip when the lock and project metadata have not changed.
want=$(cat "${LOCKS[@]}" pyproject.toml | sha256sum | cut -d' ' -f1)
# a test install covers a plain one
if [[ -f $STAMP ]] && grep -qxF "$want" "$STAMP"; then
  exit 0
fi

if [[ ! -x $VENV/bin/python ]]; then
  "$PYTHON" -c 'import sys; sys.exit(0 if (3, 11) <= sys.version_info[:2] < (3, 13) else 1)' \
    || { echo "error: Python 3.11 or 3.12 required (PYTHON=$PYTHON is $("$PYTHON" --version 2>&1))" >&2; exit 1; }
  "$PYTHON" -m venv "$VENV"
fi
PIP=("$VENV/bin/python" -m pip --disable-pip-version-check)
"${PIP[@]}" install -q --upgrade "pip>=24"

if ! "$VENV/bin/python" -c "import torch" 2>/dev/null; then
  if [[ -n "${TORCH_INDEX_URL:-}" ]]; then
    "${PIP[@]}" install "$TORCH_SPEC" --index-url "$TORCH_INDEX_URL"
  elif command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
    echo "NVIDIA GPU found: installing the CUDA build of $TORCH_SPEC"
    "${PIP[@]}" install "$TORCH_SPEC"
  elif "${PIP[@]}" install -q --no-index --no-deps "$TORCH_SPEC" 2>/dev/null; then
    # A CPU wheel on a local find-links path (pip.conf) wins: no download at all. Its
    # dependencies (sympy, networkx, ...) are pinned in requirements.lock, installed next.
    echo "installed $TORCH_SPEC from local wheels"
  else
    echo "no GPU: installing the CPU build of $TORCH_SPEC"
    "${PIP[@]}" install "$TORCH_SPEC" --index-url https://download.pytorch.org/whl/cpu
  fi
fi

reqs=()
for lock in "${LOCKS[@]}"; do reqs+=(-r "$lock"); done
# (a pip.conf naming index folders this machine lacks makes pip warn once per package: not news)
quiet_pip() { "${PIP[@]}" "$@" 2> >(grep -v "is ignored: it is neither a file nor a directory" >&2); }
# The locks through uv (itself pinned with hashes in requirements-uv.lock): the whole install of a
# fresh clone took 52 s against pip's 199 s on two cores, the same hash-checked set. The locks
# are complete (torch, installed above, aside), hence --no-deps; `pip check` below proves it.
# uv reads PyPI and UV_* settings, not pip.conf: where it fails (an index only pip.conf names,
# no network), pip installs them; FUSION_INSTALLER=pip skips uv.
if [[ "${FUSION_INSTALLER:-uv}" != uv ]]; then
  quiet_pip install -q --require-hashes "${reqs[@]}"
elif ! { quiet_pip install -q --require-hashes -r requirements-uv.lock \
  && "$VENV/bin/uv" pip install -q --python "$VENV/bin/python" --no-deps --require-hashes "${reqs[@]}"; }; then
  echo "uv could not install the locks (above); pip installs them" >&2
  quiet_pip install -q --require-hashes "${reqs[@]}"
fi
"${PIP[@]}" install -q --no-deps -e .
"${PIP[@]}" check
# the plain install's hash too, so that `make run` after `make test` does not reinstall
{ echo "$want"; cat requirements.lock pyproject.toml | sha256sum | cut -d' ' -f1; } > "$STAMP"
echo "fusionflow installed in $VENV ($("$VENV/bin/python" -c 'import torch; print("torch", torch.__version__)'))"
