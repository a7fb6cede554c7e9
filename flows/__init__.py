"""Prefect flows and deployments (thin wrappers around fusion.pipeline)."""
