from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from fusion.loopback import free_port, terminate, wait_http

__all__ = [
    "free_port",
    "stop_ray_nodes",
    "terminate",
    "wait_http",
    "why_no_isolated_node",
]  # the tests import them from here

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
DURATIONS = Path(__file__).parent / "unit" / "durations.json"
FAST_SECONDS = 3.0


def stop_ray_nodes(temp_dir: Path, timeout: float = 30.0) -> None:
    """Stop the Ray nodes started with `ray start --temp-dir` under `temp_dir`, and only them.

    `ray stop` stops every Ray process of the user on the machine: a cluster the developer runs
    beside the suite (their training with it) and other tests' local instances. A node's daemons
    name the folder in their command lines; its worker processes rename themselves (ray::IDLE)
    but are the raylet's children."""
    import psutil

    marker = str(temp_dir)
    nodes = []
    for p in psutil.process_iter(["cmdline"]):
        if p.pid != os.getpid() and any(marker in arg for arg in p.info["cmdline"] or []):
            nodes.append(p)
    family = {p.pid: p for p in nodes}
    for p in nodes:
        try:
            family.update({c.pid: c for c in p.children(recursive=True)})
        except psutil.NoSuchProcess:
            pass
    procs = list(family.values())
    for p in procs:  # SIGKILL, as `ray stop --force`: gcs_server and the raylet ignore SIGTERM
        try:
            p.kill()
        except psutil.NoSuchProcess:
            pass
    deadline = time.monotonic() + timeout
    while [p for p in procs if _running(p)] and time.monotonic() < deadline:
        time.sleep(0.2)


def why_no_isolated_node() -> str | None:
    """Why this machine cannot start a Ray node as another user in its own mount namespace
    (test_object_storage_cluster.py's cluster without a shared disk), or None when it can."""
    import shutil
    import subprocess

    if os.geteuid() != 0:
        return "needs root: the worker node is started as another user in its own mount namespace"
    if shutil.which("unshare") is None or shutil.which("setpriv") is None:
        return "needs util-linux's unshare and setpriv"
    probe = subprocess.run(["unshare", "--mount", "true"], capture_output=True)
    if probe.returncode != 0:
        return f"cannot create a mount namespace here: {probe.stderr.decode().strip()}"
    return None


def _running(p) -> bool:
    import psutil

    try:  # killed daemons re-parented to an init that does not reap them stay zombies
        return p.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def pytest_addoption(parser):
    parser.addoption(
        "--fast",
        action="store_true",
        help=f"only the tests recorded under {FAST_SECONDS:g} s in tests/unit/durations.json (and new ones): "
        "the quick tier `make test-fast` runs; `make test-durations` re-measures",
    )


def pytest_configure(config):
    # Prefect reads its settings once, at import: before any test module imports it. Tests that
    # run a flow in-process start Prefect's temporary API server, whose first start in a fresh
    # PREFECT_HOME (migrations) overran Prefect's 20 s on a loaded 2-core machine; the CLI
    # waits 120 s (fusion.interrupts.shield_prefect_server), the tests do likewise.
    from fusion.interrupts import EPHEMERAL_STARTUP_S

    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", str(EPHEMERAL_STARTUP_S))


def pytest_collection_modifyitems(config, items):
    if not config.getoption("--fast"):
        return
    import json

    recorded = json.loads(DURATIONS.read_text())
    slow = [i for i in items if recorded.get(i.nodeid, 0.0) >= FAST_SECONDS]
    if slow:
        config.hook.pytest_deselected(items=slow)
        items[:] = [i for i in items if recorded.get(i.nodeid, 0.0) < FAST_SECONDS]


@pytest.fixture(scope="session", autouse=True)
def _isolated_services(tmp_path_factory):
    """Keep Prefect and MLflow state of the test session out of the user's home."""
    home = tmp_path_factory.mktemp("prefect-home")
    old = {k: os.environ.get(k) for k in ("PREFECT_HOME", "MLFLOW_TRACKING_URI", "PREFECT_API_URL", "RAY_ADDRESS")}
    os.environ["PREFECT_HOME"] = str(home)
    os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
    for k in ("MLFLOW_TRACKING_URI", "PREFECT_API_URL", "RAY_ADDRESS"):
        os.environ.pop(k, None)
    yield
    # Stop Prefect's ephemeral API server while pytest's output capture is still open;
    # left to atexit it logs into closed streams.
    import sys

    if "prefect.server.api.server" in sys.modules:
        from prefect.server.api.server import SubprocessASGIServer

        for server in list(SubprocessASGIServer._instances.values()):
            server.stop()
    for k, v in old.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


@pytest.fixture
def workspace(tmp_path) -> Path:
    """A fresh workspace: the project's pipeline files, no data, no DVC repo, no runs."""
    from fusion.pipeline import new_workspace

    return new_workspace(tmp_path / "ws", REPO)


@pytest.fixture
def cfg(tmp_path):
    """load_config(tiny profile, nested overrides) on a copy of params.yaml:
    `cfg(**{"train.model": "cadnif"})` (a test module may define its own `cfg`)."""
    import shutil

    from fusion.config import load_config

    shutil.copy2(REPO / "params.yaml", tmp_path / "params.yaml")

    def make(**overrides):
        tree: dict = {}
        for dotted, value in overrides.items():
            node = tree
            *parents, leaf = dotted.split(".")
            for p in parents:
                node = node.setdefault(p, {})
            node[leaf] = value
        return load_config(tmp_path, "tiny", tree)

    return make


@pytest.fixture(scope="session")
def embedded_raw(tmp_path_factory) -> Path:
    from fusion.data.embedded import export_embedded

    return export_embedded(tmp_path_factory.mktemp("raw") / "embedded")


@pytest.fixture(scope="session")
def tiny_prepared(tmp_path_factory, embedded_raw) -> Path:
    """Small synthetic multi-focus set (64 px) shared by model/trainer tests."""
    from fusion.data.synth_multifocus import SynthParams, build

    out = tmp_path_factory.mktemp("prepared") / "mf"
    build(embedded_raw, out, SynthParams(max_side=64, pairs_per_image=1, test_images=3))
    return out


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not (SHARED / "data").is_dir():
        pytest.skip(f"shared data not found at {SHARED / 'data'}")
    return SHARED / "data"


@pytest.fixture
def mlflow_server(tmp_path):
    """A real `mlflow server` on loopback (SQLite backend, proxied artifacts); stopped after the test."""
    import subprocess
    import sys

    port = free_port()
    store = tmp_path / "mlflow-server"
    store.mkdir()
    log = open(store / "server.log", "w")
    proc = subprocess.Popen(
        [
            str(Path(sys.executable).parent / "mlflow"),
            "server",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--backend-store-uri",
            f"sqlite:///{store / 'mlflow.db'}",
            "--artifacts-destination",
            str(store / "artifacts"),
            "--workers",
            "1",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_http(f"{url}/health", proc=proc)
        yield url
    finally:
        terminate(proc)
        log.close()
