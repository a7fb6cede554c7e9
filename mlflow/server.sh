#!/usr/bin/env bash
# Start the MLflow tracking server + UI on the embedded store (or the one you name).
#   bash mlflow/server.sh                       # SQLite under mlflow/store, http://127.0.0.1:5000
#   MLFLOW_BACKEND=postgresql://u:p@db/mlflow MLFLOW_ARTIFACTS=s3://bucket/mlflow HOST=0.0.0.0 bash mlflow/server.sh
# Bound to localhost unless HOST says otherwise: the UI has no authentication.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
mkdir -p "$here/store/artifacts"
BACKEND=${MLFLOW_BACKEND:-sqlite:///$here/store/mlflow.db}
ARTIFACTS=${MLFLOW_ARTIFACTS:-$here/store/artifacts}
HOST=${HOST:-127.0.0.1}
PORT=${PORT:-5000}
MLFLOW="${MLFLOW_BIN:-$here/../.venv/bin/mlflow}"
echo "MLflow UI on http://$HOST:$PORT (backend $BACKEND, artifacts $ARTIFACTS)"
exec "$MLFLOW" server --backend-store-uri "$BACKEND" --default-artifact-root "$ARTIFACTS" \
  --serve-artifacts --host "$HOST" --port "$PORT" --workers 1
