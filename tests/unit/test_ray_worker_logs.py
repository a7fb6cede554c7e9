"""What the Ray worker setup hook leaves of Ray Train's console output (fusion.train.distributed)."""

from __future__ import annotations

import importlib
import logging

import pytest

from fusion.train.distributed import quiet_ray_workers

pytest.importorskip("ray.train")


class _Collect(logging.Handler):
    def __init__(self):
        super().__init__()
        self.lines: list[str] = []

    def emit(self, record):
        self.lines.append(logging.Formatter("%(levelname)s %(message)s").format(record))


@pytest.fixture
def ray_logger():
    def attach(module: str) -> tuple[logging.Logger, _Collect]:
        logger = importlib.import_module(module).logger
        handler = _Collect()
        attached.append((logger, handler, logger.level))
        logger.addHandler(handler)
        logger.setLevel(logging.DEBUG)  # what Ray Train's dictConfig leaves: every level through
        return logger, handler

    attached: list[tuple[logging.Logger, _Collect, int]] = []
    yield attach
    for logger, handler, level in attached:
        logger.removeHandler(handler)
        logger.setLevel(level)


def test_the_per_report_info_lines_are_dropped_and_their_warnings_kept(ray_logger):
    quiet_ray_workers()
    quiet_ray_workers()  # the hook may run twice in a process: one filter, not two
    context, seen = ray_logger("ray.train.v2._internal.execution.context")
    storage, stored = ray_logger("ray.train.v2._internal.execution.storage")
    context.info("Reporting training result 1: TrainingReport(metrics={...}) from rank 0")
    storage.info("Checkpoint successfully created at: Checkpoint(...)")
    context.warning("a report waited")
    storage.warning("a checkpoint upload failed")
    assert seen.lines == ["WARNING a report waited"] and stored.lines == ["WARNING a checkpoint upload failed"]
    assert sum(f.__class__.__name__ == "_AtLeast" for f in context.filters) == 1


def test_the_placement_group_cleaners_once_a_second_warning_is_dropped(ray_logger):
    quiet_ray_workers()
    cleaner, seen = ray_logger("ray.train.v2._internal.execution.controller.placement_group_cleaner")
    cleaner.warning("Failed to query Ray Train Controller state")
    cleaner.error("could not remove the placement group")
    assert seen.lines == ["ERROR could not remove the placement group"]


def test_a_transient_resource_request_timeout_is_one_line_not_a_traceback(ray_logger):
    quiet_ray_workers()
    client, seen = ray_logger("ray.train.v2._internal.execution.scaling_policy.autoscaling_coordinator_client")
    try:
        raise TimeoutError("Get timed out: some object(s) not ready.")
    except TimeoutError:
        client.warning(
            "Failed to send resource request for %s. It's safe to ignore this error.", "train-1", exc_info=True
        )
    assert seen.lines == [
        "WARNING Failed to send resource request for train-1. It's safe to ignore this error. "
        "(TimeoutError: Get timed out: some object(s) not ready.)"
    ]
    assert "Traceback" not in seen.lines[0]
