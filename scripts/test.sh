#!/usr/bin/env bash
# make test (what CI runs): install, lint and types, then the suite in two tiers: the unit tier
# on UNIT_WORKERS processes (1.6x faster on 2 cores: those tests leave a core idle half the
# time), then the integration tier alone (its servers and Ray already fill both cores; under
# xdist it ran slower). Both tiers run even if the first fails; the exit status is the first
# failure's.
set -uo pipefail
cd "$(dirname "$0")/.."
BIN=.venv/bin

# the MLflow UI test's browser (apt, mostly download) installs while the Python set does
browser_log=$(mktemp)
trap 'rm -f "$browser_log"' EXIT
bash scripts/install-browser.sh >"$browser_log" 2>&1 &
browser=$!
make --no-print-directory lint
lint=$?
wait "$browser"
installed=$?
cat "$browser_log"
if ((lint || installed)); then
  exit $((lint ? lint : installed))
fi

"$BIN/python" -m pytest tests/unit -n "${UNIT_WORKERS:-2}" --dist worksteal
unit=$?
"$BIN/python" -m pytest --ignore=tests/unit
rest=$?
exit $((unit ? unit : rest))
