"""Data preparation (pure functions, no orchestration imports)."""
