"""Experiment matrices run as Ray Tune trials (`fusion sweep`)."""
