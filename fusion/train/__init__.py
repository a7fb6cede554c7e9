"""Training: the pure trainer (loop) and its Ray adapter (distributed)."""
