"""`fusion schedule deploy` seen through Prefect's own CLI on a real server on loopback: the
listing answers (no 422 between the pinned client and server), the schedule carries this
machine's time zone when params.yaml leaves it null, and the worker's pull step enters the
workspace rather than the fusionflow checkout."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import yaml

from tests.conftest import REPO
from tests.integration.conftest import PREFECT

pytestmark = pytest.mark.integration


def test_prefect_deployment_ls_lists_the_deployment_with_its_zone_and_workspace(prefect_server, workspace):
    params = yaml.safe_load((workspace / "params.yaml").read_text())
    params["nightly"].update({"timezone": None, "cron": "15 4 * * *"})
    (workspace / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    # this machine's zone as $TZ states it, unlike the system's (Etc/UTC on CI machines)
    env = {**os.environ, "PREFECT_API_URL": prefect_server, "TZ": "America/Sao_Paulo"}
    deployed = subprocess.run(
        [sys.executable, "-m", "fusion", "schedule", "deploy", "--pool", "cli-test", "--workspace", str(workspace)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert deployed.returncode == 0, deployed.stderr
    assert "'15 4 * * *' in America/Sao_Paulo" in deployed.stdout

    listed = subprocess.run([PREFECT, "deployment", "ls"], env=env, capture_output=True, text=True, timeout=120)
    assert listed.returncode == 0, listed.stdout + listed.stderr
    assert "fusionflow-nightly/nightly" in listed.stdout and "cli-test" in listed.stdout

    as_json = subprocess.run(
        [PREFECT, "deployment", "ls", "--output", "json"], env=env, capture_output=True, text=True, timeout=120
    )
    assert as_json.returncode == 0, as_json.stdout + as_json.stderr
    (dep,) = json.loads(as_json.stdout)
    assert dep["schedules"][0]["schedule"] == {"cron": "15 4 * * *", "timezone": "America/Sao_Paulo", "day_or": True}
    assert dep["pull_steps"] == [{"prefect.deployments.steps.set_working_directory": {"directory": str(workspace)}}]
    assert str(REPO) not in json.dumps(dep["pull_steps"])
    assert dep["entrypoint"] == "flows.nightly.nightly" and dep["parameters"]["workspace"] == str(workspace)
