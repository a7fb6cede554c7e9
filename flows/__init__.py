"""Prefect flows and deployments (thin wrappers around fusion.pipeline)."""

import os

# Offline-friendly defaults, set before Prefect reads its settings (a user's explicit value
# wins): no usage telemetry from the ephemeral server, no DVC analytics.
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("DVC_NO_ANALYTICS", "1")
