"""The nightly deployment: the `fusionflow-nightly` flow on a cron schedule from params.yaml.

Two ways to run it (README, "Scheduling the nightly run"):

- `fusion schedule serve`: one long-running process registers the deployment with the
  Prefect API and runs every scheduled or triggered run itself (no work pool needed).
- `fusion schedule deploy --pool NAME`: registers the deployment with a process work pool
  (created if missing) and the code in this checkout; `prefect worker start --pool NAME`
  on any machine with the checkout then executes the runs.

Both apply `nightly.concurrency` (default 1) with `nightly.on_collision`: a run triggered
while another is still going is cancelled (cancel_new) or waits for the slot (enqueue), and
Prefect records which, so a second trigger never runs beside the first.
"""

from __future__ import annotations

import os
from pathlib import Path

from fusion.config import Config, project_root

DEPLOYMENT = "nightly"
FLOW = "fusionflow-nightly"


def local_timezone() -> str:
    """This machine's IANA time zone name ($TZ, /etc/timezone, the /etc/localtime link), or UTC."""
    tz = os.environ.get("TZ", "").lstrip(":")
    if tz and "/" in tz or tz == "UTC":
        return tz
    etc = Path("/etc/timezone")
    if etc.is_file() and etc.read_text().strip():
        return etc.read_text().strip()
    localtime = Path("/etc/localtime")
    if localtime.is_symlink():
        target = str(localtime.resolve())
        if "zoneinfo/" in target:
            return target.split("zoneinfo/", 1)[1]
    return "UTC"


def schedule_of(cfg: Config) -> tuple[str, str]:
    return cfg.nightly.cron, cfg.nightly.timezone or local_timezone()


def _options(ws: Path, cfg: Config) -> dict:
    from prefect.client.schemas.objects import ConcurrencyLimitConfig, ConcurrencyLimitStrategy
    from prefect.schedules import Cron

    cron, tz = schedule_of(cfg)
    n = cfg.nightly
    return {
        "schedules": [Cron(cron, timezone=tz)],
        "parameters": {"profile": n.profile, "overrides": list(n.overrides), "workspace": str(ws), "use_ray": n.use_ray},
        "concurrency_limit": ConcurrencyLimitConfig(
            limit=n.concurrency, collision_strategy=ConcurrencyLimitStrategy(n.on_collision.upper())),
        "description": f"fusionflow nightly retraining of {ws} ({cron}, {tz}; profile {n.profile})",
        "tags": ["fusionflow", "nightly"],
    }


def serve(ws: Path, cfg: Config) -> None:
    """Register the deployment and execute its runs in this process until interrupted."""
    from prefect import serve as prefect_serve

    from flows.nightly import nightly

    prefect_serve(nightly.to_deployment(name=DEPLOYMENT, **_options(ws, cfg)))


def deploy(ws: Path, cfg: Config, pool: str) -> str:
    """Register the deployment with process work pool `pool`; returns the deployment id."""
    from prefect import flow
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.exceptions import ObjectAlreadyExists

    with get_client(sync_client=True) as client:
        try:
            client.create_work_pool(WorkPoolCreate(name=pool, type="process"))
        except ObjectAlreadyExists:
            pass
    remote = flow.from_source(source=str(project_root()), entrypoint="flows/nightly.py:nightly")
    # to_deployment + apply rather than Flow.deploy: deploy() first lists the pool's online
    # workers with a request this Prefect server version rejects (422 on limit=null)
    return str(remote.to_deployment(name=DEPLOYMENT, work_pool_name=pool, **_options(ws, cfg)).apply())
