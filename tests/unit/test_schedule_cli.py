"""`fusion schedule` without a usable Prefect API or time zone: one line naming what is wrong,
exit 2, in seconds; and the schedule's zone is the machine's own, never a silent UTC."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import yaml

from tests.conftest import free_port


def _fusion(args, workspace, **env):
    full = {**os.environ, **env}
    return subprocess.run(
        [sys.executable, "-m", "fusion", *args, "--workspace", str(workspace)],
        env=full,
        capture_output=True,
        text=True,
        timeout=120,
    )


def _one_error_line(result) -> str:
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr + result.stdout
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    return lines[0]


def test_deploy_and_serve_with_the_prefect_api_down_name_the_url_and_how_to_start_a_server(workspace):
    api = f"http://127.0.0.1:{free_port()}/api"  # nothing listens there
    for command in (["schedule", "deploy", "--pool", "p"], ["schedule", "serve"]):
        start = time.monotonic()
        result = _fusion(command, workspace, PREFECT_API_URL=api)
        elapsed = time.monotonic() - start
        line = _one_error_line(result)
        assert api in line and "prefect server start" in line
        assert elapsed < 40, elapsed  # one probe, no retry loop (most of this is importing Prefect)


def test_schedule_takes_the_machine_zone_from_tz_when_params_leave_it_null(workspace):
    params = yaml.safe_load((workspace / "params.yaml").read_text())
    params["nightly"].update({"timezone": None, "cron": "0 2 * * *"})
    (workspace / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    shown = _fusion(["schedule", "show"], workspace, TZ="EST5EDT")  # an IANA name without a slash
    assert shown.returncode == 0, shown.stderr
    assert "'0 2 * * *' in EST5EDT" in shown.stdout
    assert "next: " in shown.stdout and "T02:00:00-0" in shown.stdout  # -05:00 or -04:00 (DST)


def test_an_unknown_tz_is_refused_naming_it_and_nightly_timezone(workspace):
    params = yaml.safe_load((workspace / "params.yaml").read_text())
    params["nightly"]["timezone"] = None
    (workspace / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    for command in (["schedule", "show"], ["schedule", "deploy", "--pool", "p"]):
        line = _one_error_line(
            _fusion(command, workspace, TZ="Mars/Olympus", PREFECT_API_URL=f"http://127.0.0.1:{free_port()}/api")
        )
        assert "TZ='Mars/Olympus'" in line and "nightly.timezone" in line
