"""Services the integration tests share: a real Prefect server on loopback."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import free_port, wait_http

PREFECT = str(Path(sys.executable).parent / "prefect")


def stop_process(proc: subprocess.Popen) -> None:
    """Ctrl-C first (Prefect and `fusion schedule serve` clean up on SIGINT), then kill."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture
def prefect_server(tmp_path, monkeypatch):
    """`prefect server start` on 127.0.0.1 with its own PREFECT_HOME (SQLite) under tmp_path;
    yields its API URL, also set as PREFECT_API_URL for this process and its children."""
    port = free_port()
    home = tmp_path / "prefect-server-home"
    env = {
        **os.environ,
        "PREFECT_HOME": str(home),
        "PREFECT_UI_ENABLED": "false",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    }
    env.pop("PREFECT_API_URL", None)
    log = open(tmp_path / "prefect-server.log", "w")
    proc = subprocess.Popen(
        [PREFECT, "server", "start", "--host", "127.0.0.1", "--port", str(port)],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    api = f"http://127.0.0.1:{port}/api"
    try:
        wait_http(f"{api}/health", timeout=120, proc=proc)
        monkeypatch.setenv("PREFECT_API_URL", api)
        # this process read its Prefect settings when another test first imported Prefect
        from prefect.settings import PREFECT_API_URL, temporary_settings

        with temporary_settings({PREFECT_API_URL: api}):
            yield api
    finally:
        stop_process(proc)
        log.close()
