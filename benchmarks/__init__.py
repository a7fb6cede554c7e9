"""Benchmarks: `python -m benchmarks.run` prints a table and writes results/<machine>.json."""
