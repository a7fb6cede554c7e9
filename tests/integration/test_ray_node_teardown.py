"""The suite's Ray teardown stops the node it started and nothing else: `ray stop` would also
stop a Ray instance the developer runs beside the suite (and their work with it)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from tests.conftest import _running, free_port, stop_ray_nodes

pytestmark = pytest.mark.integration

RAY = str(Path(sys.executable).parent / "ray")


def _processes_naming(marker: str) -> list:
    import psutil

    return [p for p in psutil.process_iter(["cmdline"]) if any(marker in a for a in p.info["cmdline"] or [])]


def test_stop_ray_nodes_stops_that_node_and_spares_a_local_instance(tmp_path):
    temp = Path(tempfile.mkdtemp(prefix="ray-td-", dir="/tmp"))  # Ray's socket paths stay under 107 bytes
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}
    env.pop("RAY_ADDRESS", None)
    # someone else's local instance: a driver with ray.init() of its own, alive until told to go on
    other = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import ray, sys; ray.init(num_cpus=1, include_dashboard=False, object_store_memory=80_000_000);"
            "up = ray.remote(lambda: 'up'); print(ray.get(up.remote()), flush=True); sys.stdin.readline();"
            "print(ray.get(up.remote()), flush=True)",
        ],
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert other.stdout.readline().strip() == "up"
        subprocess.run(
            [RAY, "start", "--head", f"--port={free_port()}", "--num-cpus=1", "--include-dashboard=false"]
            + ["--node-ip-address=127.0.0.1", "--object-store-memory=80000000", f"--temp-dir={temp}"],
            check=True,
            env=env,
            capture_output=True,
            timeout=180,
        )
        node = _processes_naming(str(temp))
        assert len(node) >= 3  # gcs_server, raylet and the Python daemons at least
        children = [c for p in node if p.name() == "raylet" for c in p.children(recursive=True)]

        stop_ray_nodes(temp)

        assert not [p.pid for p in node + children if _running(p)]
        other.stdin.write("\n")  # the local instance still answers
        other.stdin.close()
        assert other.stdout.readline().strip() == "up"
        assert other.wait(timeout=120) == 0
    finally:
        if other.poll() is None:
            other.kill()
        stop_ray_nodes(temp)
        shutil.rmtree(temp, ignore_errors=True)
