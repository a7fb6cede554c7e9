#!/usr/bin/env bash
# `make gpu-check`: the GPU acceptance check, offline, in 8 minutes (issue 18).
#
# On a machine with one CUDA GPU, a Python with PyTorch (CUDA build) and this checkout with
# .wheels/ beside it (`make wheels` on a machine with network, then copy both):
#
#   1. install  .wheels/ into .gpu-site/ (pip --target, offline, --no-deps): beside the system
#               PyTorch, which stays the only torch; nothing of the system Python changes, and
#               `rm -rf .gpu-site` undoes it
#   2. pytest   `pytest -m gpu` (tests/gpu, and the trainer's CUDA test; 120 s a test at most)
#   3. speed    `benchmarks.run gpu --jobs speed`: training throughput per model, variant and
#               precision, inference latency, peak memory, the metric suite, TFLOP/s
#   4. compile  `benchmarks.run gpu --jobs compile`: UFA-Fuse through torch.compile
#   5. quality  `benchmarks.run gpu --jobs quality`: UFA-Fuse 3 min, CADNIF 2 min (when RoadScene
#               is in GPU_CHECK_DATA or ../shared/data) against the baselines; less when the
#               steps before left less of the budget
#   6. summary  benchmarks/results/<gpu-name>.json and .md (benchmarks/gpu_summary.py)
#
# Each step runs under its own `timeout`, never past the whole budget (GPU_CHECK_BUDGET_S,
# default 480 s): a hang costs that step, not the check. Logs and step outputs go to
# benchmarks/scratch/gpu-check/ (this command's own folder, replaced each run). Exit 0 when
# every step passed.
#
#   PYTHON=python3.12           the interpreter with PyTorch (default python3)
#   GPU_CHECK_DATA=/data/fusion a folder laid out as ../shared/data, for the quality step
#   GPU_CHECK_WHEELS=DIR        the wheels (default .wheels)
#   GPU_CHECK_ALLOW_CPU=1       no GPU: every step tiny on the CPU, results kept in the scratch
#                               folder; proves this script and the benchmark run, nothing more
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

PYTHON=${PYTHON:-python3}
BUDGET=${GPU_CHECK_BUDGET_S:-480}
WHEELS=${GPU_CHECK_WHEELS:-.wheels}
DRY=${GPU_CHECK_ALLOW_CPU:-0}
SITE=$ROOT/.gpu-site
CHECK=$ROOT/benchmarks/scratch/gpu-check
SUMMARY_RESERVE=20   # seconds kept back for the summary step

START=$(date +%s)
DEADLINE=$((START + BUDGET))

say() { printf '%s gpu-check: %s\n' "$(date +%H:%M:%S)" "$*"; }
die() { say "error: $*" >&2; exit 2; }

rm -rf "$CHECK"
mkdir -p "$CHECK" || die "cannot create $CHECK"
: > "$CHECK/steps.tsv"
failed=0

# step NAME LIMIT_S COMMAND...: run under min(LIMIT_S, what the budget has left), log, record
step() {
  local name=$1 limit=$2
  shift 2
  local reserve=$SUMMARY_RESERVE
  [[ $name == summary ]] && reserve=0
  local left=$((DEADLINE - $(date +%s) - reserve))
  (( left < limit )) && limit=$left
  if (( limit < 5 )); then
    say "$name: skipped, the ${BUDGET} s budget is spent"
    printf '%s\tskipped (budget spent)\t0\t0\n' "$name" >> "$CHECK/steps.tsv"
    failed=1
    return 1
  fi
  say "$name: up to ${limit} s: $*"
  local t0 rc status
  t0=$(date +%s)
  # bash -c: a step may be one of the functions below (exported); timeout signals its whole group
  STEP_DEADLINE=$((t0 + limit - 5)) timeout -k 10 "$limit" bash -c '"$@"' "$name" "$@" > "$CHECK/$name.log" 2>&1
  rc=$?
  case $rc in
    0) status=ok ;;
    124|137) status="timed out after ${limit} s" ;;
    *) status="failed (exit $rc)" ;;
  esac
  printf '%s\t%s\t%s\t%s\n' "$name" "$status" "$(( $(date +%s) - t0 ))" "$limit" >> "$CHECK/steps.tsv"
  say "$name: $status in $(( $(date +%s) - t0 )) s (log: ${CHECK#"$ROOT/"}/$name.log)"
  if (( rc != 0 )); then
    tail -n 15 "$CHECK/$name.log" | sed 's/^/    /'
    failed=1
  fi
  return "$rc"
}

# --- preflight: the interpreter, its torch, the GPU ------------------------------------------
command -v "$PYTHON" >/dev/null 2>&1 || die "PYTHON=$PYTHON not found"
"$PYTHON" -c 'import sys; sys.exit(0 if (3, 11) <= sys.version_info[:2] < (3, 13) else 1)' \
  || die "Python 3.11 or 3.12 needed; $PYTHON is $("$PYTHON" --version 2>&1)"
torch_info=$("$PYTHON" -c 'import torch; print(torch.__version__, torch.__file__, torch.cuda.is_available())' 2>&1) \
  || die "$PYTHON has no PyTorch ($torch_info); install its CUDA build first"
read -r torch_version torch_file cuda <<< "$torch_info"
say "torch $torch_version ($torch_file), CUDA available: $cuda"
if [[ $cuda != True ]]; then
  [[ $DRY == 1 ]] || die "no CUDA device visible to torch; GPU_CHECK_ALLOW_CPU=1 runs a CPU dry run of this script"
  say "GPU_CHECK_ALLOW_CPU=1: a dry run on the CPU, tiny sizes; nothing here measures a GPU"
else
  DRY=0
  command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader \
    | sed 's/^/    /'
fi
compgen -G "$WHEELS/*.whl" >/dev/null || die "no wheels in $WHEELS: run \`make wheels\` where there is network and copy $WHEELS here"

# --- 1. install --------------------------------------------------------------------------------
install_wheels() {
  rm -rf "$SITE"
  if "$PYTHON" -m pip --version >/dev/null 2>&1; then
    "$PYTHON" -m pip --disable-pip-version-check install -q --no-index --find-links "$WHEELS" --no-deps \
      --target "$SITE" "$WHEELS"/*.whl || return 1
  else  # no pip: a wheel is a zip laid out for site-packages
    "$PYTHON" - "$SITE" "$WHEELS"/*.whl <<'EOF' || return 1
import sys, zipfile
for wheel in sys.argv[2:]:
    zipfile.ZipFile(wheel).extractall(sys.argv[1])
EOF
  fi
  # the checkout first (its code is what is checked, edits count at once), then the wheels
  PYTHONPATH="$ROOT:$SITE" "$PYTHON" - "$SITE" <<'EOF'
import importlib, sys
import torch
if torch.__file__.startswith(sys.argv[1]):
    sys.exit(f"torch came from {sys.argv[1]}: the wheels must not carry a torch")
for name in ("pydantic", "kornia", "pywt", "pytest", "fusion.cli", "fusion.train.loop", "fusion.metrics"):
    module = importlib.import_module(name)
    print(f"{name:18} {getattr(module, '__version__', '')} {module.__file__}")
print("torch             ", torch.__version__, torch.__file__)
EOF
}
export PYTHON CHECK SITE ROOT WHEELS
export -f install_wheels
step install 90 install_wheels
export PYTHONPATH="$ROOT:$SITE${PYTHONPATH:+:$PYTHONPATH}"

bench() {  # bench JOB ARGS...: one job of the GPU benchmark into $CHECK/JOB.json, done by the step's deadline
  local job=$1
  shift
  GPU_BENCH_DEADLINE=$STEP_DEADLINE GPU_BENCH_PARTIAL="$CHECK/$job.partial.jsonl" \
    GPU_QUALITY_TABLES="$CHECK/quality-tables.md" "$PYTHON" -m benchmarks.run gpu --jobs "$job" --out "$CHECK/$job.json" "$@"
}
export -f bench
limit_for() {  # the limit a step will get: its cap, or less when the budget has less left
  local cap=$1 left=$((DEADLINE - $(date +%s) - SUMMARY_RESERVE))
  (( left < cap )) && echo "$left" || echo "$cap"
}

if [[ $DRY == 1 ]]; then
  # the GPU tests' own logic on the CPU (FUSION_GPU_TESTS_ON_CPU), a few of them; tiny benchmarks
  PYTEST_SELECT=(-k "${GPU_CHECK_PYTEST_K:-ufa-UFA or metric or fusion_fuse}")
  export FUSION_GPU_TESTS_ON_CPU=1
  BENCH_ARGS=(--quick --device cpu)
  QUALITY_MINUTES=0.2
  TEST_PAIRS=2
else
  PYTEST_SELECT=()
  BENCH_ARGS=(--device cuda)
  TEST_PAIRS=8
fi

# --- 2. the GPU tests ------------------------------------------------------------------------------
step pytest 180 "$PYTHON" -m pytest -m gpu tests/gpu tests/unit/test_trainer.py -p no:cacheprovider -q \
  --timeout 120 --junitxml "$CHECK/pytest.xml" ${PYTEST_SELECT[@]+"${PYTEST_SELECT[@]}"}

# --- 3, 4. the benchmark rows ----------------------------------------------------------------------
step speed 120 bench speed "${BENCH_ARGS[@]}"
step compile 90 bench compile "${BENCH_ARGS[@]}"

# --- 5. quality: what is left of the budget, up to UFA-Fuse 3 min + CADNIF 2 min of training -------
left=$(limit_for 600)
if [[ $DRY != 1 ]]; then
  # scoring, data synthesis and start-up take about a minute on top of the training
  QUALITY_MINUTES=$(awk -v s="$left" 'BEGIN { m = (s - 75) / 60; if (m > 5) m = 5; if (m < 0.5) m = 0.5; printf "%.2f", m }')
fi
say "quality: ${QUALITY_MINUTES} min of training in ${left} s"
step quality "$left" bench quality "${BENCH_ARGS[@]}" --minutes "$QUALITY_MINUTES" \
  --test-pairs "$TEST_PAIRS"

# --- 6. summary ------------------------------------------------------------------------------------
if [[ $DRY == 1 ]]; then
  step summary 30 "$PYTHON" -m benchmarks.gpu_summary "$CHECK" "$CHECK" --dry-run
else
  step summary 30 "$PYTHON" -m benchmarks.gpu_summary "$CHECK" benchmarks/results
fi
cat "$CHECK/summary.log"

say "done in $(( $(date +%s) - START )) s of ${BUDGET} s; steps:"
column -t -s $'\t' "$CHECK/steps.tsv" 2>/dev/null | sed 's/^/    /' || sed 's/^/    /' "$CHECK/steps.tsv"
exit "$failed"
