#!/usr/bin/env bash
# `make wheels`: what an offline GPU machine needs besides what it already has, as wheels in .wheels/.
#
# The machine this is sized for (issue 18): Python 3.12 with a CUDA build of PyTorch, numpy,
# scipy, opencv, scikit-image, numba, pyyaml, rich, typer and matplotlib installed, no network,
# room for ~60 MB of files. The core (models, trainer, metrics, baselines, evaluation, `fusion
# train --out | fuse | evaluate`) needs only the packages below on top; Ray, MLflow, Prefect and
# DVC are not needed there (and would not fit). Versions are the locks', the tested set.
#
#   make wheels                                   # Python 3.12, manylinux x86_64
#   WHEELS_PYTHON=3.11 WHEELS_PLATFORM="manylinux2014_aarch64 manylinux_2_28_aarch64" make wheels
#   WHEELS_OUT=/tmp/w311 WHEELS_PYTHON=3.11 bash scripts/wheels.sh   # elsewhere (GPU_CHECK_WHEELS reads it)
#
# .wheels/ is this command's own output: each run replaces it whole (nothing stale is left to
# be installed by accident). scripts/gpu-check.sh installs it offline.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-.venv/bin/python}
WHEELS_PYTHON=${WHEELS_PYTHON:-3.12}
WHEELS_PLATFORM=${WHEELS_PLATFORM:-manylinux2014_x86_64 manylinux_2_17_x86_64 manylinux_2_28_x86_64}
MAX_MB=${WHEELS_MAX_MB:-40}
OUT=${WHEELS_OUT:-.wheels}
# The core's dependencies the GPU machine lacks, and theirs (pytest for `pytest -m gpu`).
# torch, numpy, scipy, opencv, scikit-image, numba (+llvmlite), pyyaml, rich (+pygments), typer
# and matplotlib (+packaging, pillow) are already there and are not downloaded: never a second torch.
CORE=(pydantic pydantic_core annotated-types typing-inspection typing_extensions
      kornia kornia_rs PyWavelets
      pytest pluggy iniconfig pytest-timeout)

[[ -x $PYTHON ]] || PYTHON=python3
pins=()
for name in "${CORE[@]}"; do
  # the locks spell names as PyPI does; compare them normalised (PEP 503); a pin's line ends
  # in " \" before its hashes
  pin=$(awk -v want="$name" 'BEGIN { w = tolower(want); gsub(/[-_.]+/, "-", w) }
        /^[^ #].*==/ { split($1, p, "=="); n = tolower(p[1]); gsub(/[-_.]+/, "-", n); if (n == w) print $1 }' \
        requirements.lock requirements-test.lock)
  [[ -n $pin ]] || { echo "error: $name is not pinned in requirements.lock or requirements-test.lock (make lock)" >&2; exit 1; }
  pins+=("$pin")
done

platforms=()
for p in $WHEELS_PLATFORM; do platforms+=(--platform "$p"); done

tmp=$(mktemp -d "$(dirname "$OUT")/.wheels.partial.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
echo "downloading ${#pins[@]} wheels for Python $WHEELS_PYTHON ($WHEELS_PLATFORM)"
"$PYTHON" -m pip --disable-pip-version-check download -q --no-deps --only-binary=:all: \
  --python-version "$WHEELS_PYTHON" --implementation cp "${platforms[@]}" -d "$tmp" "${pins[@]}" \
  2> >(grep -v "is ignored: it is neither a file nor a directory" >&2)  # a pip.conf's absent find-links
echo "building the fusionflow wheel"
# --no-deps: its declared dependencies include the orchestration stack the GPU machine cannot hold
"$PYTHON" -m pip --disable-pip-version-check wheel -q --no-deps -w "$tmp" . >/dev/null

total=$(du -cb "$tmp"/*.whl | tail -1 | cut -f1)
if (( total > MAX_MB * 1024 * 1024 )); then
  echo "error: the wheels come to $((total / 1024 / 1024)) MB, over the ${MAX_MB} MB limit (WHEELS_MAX_MB)" >&2
  exit 1
fi
printf '%s\n' "${pins[@]}" > "$tmp/core-requirements.txt"
printf 'python %s, platforms %s, built %s\n' "$WHEELS_PYTHON" "$WHEELS_PLATFORM" "$(date -u +%FT%TZ)" > "$tmp/TARGET"
rm -rf "$OUT.old"
[[ -d $OUT ]] && mv "$OUT" "$OUT.old"
mv "$tmp" "$OUT"
trap - EXIT
rm -rf "$OUT.old"

echo "$OUT/ (Python $WHEELS_PYTHON):"
for w in "$OUT"/*.whl; do
  printf '  %8.2f MB  %s\n' "$(echo "$(stat -c %s "$w") / 1048576" | bc -l)" "$(basename "$w")"
done
printf '  %8.2f MB  total (limit %s MB)\n' "$(echo "$total / 1048576" | bc -l)" "$MAX_MB"
