"""The nightly deployment: the `fusionflow-nightly` flow on a cron schedule from params.yaml.

Two ways to run it (README, "Scheduling the nightly run"):

- `fusion schedule serve`: one long-running process registers the deployment with the
  Prefect API and runs every scheduled or triggered run itself (no work pool needed).
- `fusion schedule deploy --pool NAME`: registers the deployment with a process work pool
  (created if missing); its pull step enters the workspace (the folder of params.yaml) and
  its entrypoint is the installed `flows.nightly` module, so `prefect worker start --pool
  NAME` on any machine with fusionflow installed and the workspace at that path runs it.

Both apply `nightly.concurrency` (default 1) with `nightly.on_collision`: a run triggered
while another is still going is cancelled (cancel_new) or waits for the slot (enqueue), and
Prefect records which, so a second trigger never runs beside the first. The schedule always
carries an explicit IANA time zone: `nightly.timezone`, or this machine's own zone.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from fusion.config import Config
from fusion.errors import ConfigError, FusionError

if TYPE_CHECKING:
    from prefect.deployments.runner import RunnerDeployment
    from prefect.flows import Flow

DEPLOYMENT = "nightly"
FLOW = "fusionflow-nightly"
ENTRYPOINT = "flows.nightly.nightly"  # a module path: importable wherever fusionflow is installed
PROBE_TIMEOUT_S = 5.0


class PrefectAPIError(FusionError):
    """The Prefect API cannot be reached, or refused the deployment."""


def local_timezone() -> str:
    """This machine's IANA time zone name: $TZ, else the system setting (tzlocal reads
    /etc/timezone, the /etc/localtime link, the Windows registry ...)."""
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    import tzlocal

    hint = "set nightly.timezone in params.yaml to an IANA name such as Europe/Berlin"
    env = os.environ.get("TZ", "").lstrip(":")
    if env and not os.path.isabs(env):
        # tzlocal skips a TZ it cannot read and falls back to the system zone; a schedule
        # must not move to another zone than the one the user asked for
        try:
            ZoneInfo(env)
        except (ZoneInfoNotFoundError, ValueError):
            raise ConfigError(f"TZ={env!r} is not an IANA time zone name; fix TZ or {hint}") from None
        return env
    try:
        name = tzlocal.get_localzone_name()
    except ZoneInfoNotFoundError as exc:  # conflicting system settings
        raise ConfigError(f"this machine's time zone is ambiguous ({' '.join(str(exc).split())}); {hint}") from None
    if not name:
        raise ConfigError(
            f"cannot tell this machine's time zone (no TZ, no /etc/timezone, "
            f"/etc/localtime is not a zoneinfo link); {hint}"
        )
    return name


def schedule_of(cfg: Config) -> tuple[str, str]:
    return cfg.nightly.cron, cfg.nightly.timezone or local_timezone()


def _options(ws: Path, cfg: Config) -> dict:
    from prefect.client.schemas.objects import ConcurrencyLimitConfig, ConcurrencyLimitStrategy
    from prefect.schedules import Cron

    cron, tz = schedule_of(cfg)
    n = cfg.nightly
    return {
        "schedules": [Cron(cron, timezone=tz)],
        "parameters": {
            "profile": n.profile,
            "overrides": list(n.overrides),
            "workspace": str(ws),
            "use_ray": n.use_ray,
        },
        "concurrency_limit": ConcurrencyLimitConfig(
            limit=n.concurrency, collision_strategy=ConcurrencyLimitStrategy(n.on_collision.upper())
        ),
        "description": f"fusionflow nightly retraining of {ws} ({cron}, {tz}; profile {n.profile})",
        "tags": ["fusionflow", "nightly"],
    }


def _api_url() -> str | None:
    from prefect.settings import PREFECT_API_URL

    return PREFECT_API_URL.value()


def _start_hint() -> str:
    return (
        "start one with `prefect server start` and set PREFECT_API_URL=http://127.0.0.1:4200/api "
        "(or fix PREFECT_API_URL)"
    )


def check_api() -> None:
    """Fail in seconds, naming the URL, when the Prefect API does not answer.

    Prefect's client retries timeouts with back-off (minutes against a black-holed host) and
    turns a refused connection into a traceback; one probe without retries says it plainly.
    Without PREFECT_API_URL Prefect starts its own temporary server on this machine's
    database, which needs no probe.
    """
    import httpx
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_CLIENT_MAX_RETRIES, temporary_settings

    url = _api_url()
    if not url:
        return
    with temporary_settings({PREFECT_CLIENT_MAX_RETRIES: 0}):
        with get_client(sync_client=True, httpx_settings={"timeout": httpx.Timeout(PROBE_TIMEOUT_S)}) as client:
            exc = client.api_healthcheck()
    if exc is not None:
        if isinstance(exc, httpx.HTTPStatusError):
            reason = f"{exc.response.status_code} from {exc.request.url}"
        elif isinstance(exc, httpx.TimeoutException):
            reason = f"no answer within {PROBE_TIMEOUT_S:g} s"
        else:
            reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise PrefectAPIError(f"PREFECT_API_URL={url}: no Prefect API answers there ({reason}); {_start_hint()}")


def _refused(exc: Exception, what: str) -> PrefectAPIError:
    """One line for a request the API failed or refused after the probe succeeded."""
    import httpx

    url = _api_url() or "Prefect's temporary local server"
    if isinstance(exc, httpx.HTTPStatusError):
        try:
            detail = exc.response.json().get("detail") or exc.response.text
        except ValueError:
            detail = exc.response.text
        return PrefectAPIError(
            f"{url}: {what} refused ({exc.response.status_code}): {' '.join(str(detail).split())[:300]}"
        )
    return PrefectAPIError(f"{url}: {what} failed ({type(exc).__name__}: {exc}); {_start_hint()}")


def serve(ws: Path, cfg: Config) -> None:
    """Register the deployment and execute its runs in this process until interrupted."""
    from prefect import serve as prefect_serve

    from flows.nightly import nightly

    options = _options(ws, cfg)
    check_api()
    # Prefect's sync/async dispatch returns the deployment itself outside an event loop
    prefect_serve(cast("RunnerDeployment", nightly.to_deployment(name=DEPLOYMENT, **options)))


def deploy(ws: Path, cfg: Config, pool: str) -> str:
    """Register the deployment with process work pool `pool`; returns the deployment id."""
    import httpx
    from prefect import flow
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.exceptions import ObjectAlreadyExists

    options = _options(ws, cfg)  # config errors first: they need no server
    check_api()
    try:
        with get_client(sync_client=True) as client:
            try:
                client.create_work_pool(WorkPoolCreate(name=pool, type="process"))
            except ObjectAlreadyExists:
                pass
        # the workspace, not this checkout, is what the worker enters (LocalStorage -> a
        # set_working_directory pull step); the flow itself is imported from the installed package
        # Prefect's sync/async dispatch returns values themselves outside an event loop
        remote = cast("Flow[..., Any]", flow.from_source(source=str(ws), entrypoint=ENTRYPOINT))
        deployment = cast("RunnerDeployment", remote.to_deployment(name=DEPLOYMENT, work_pool_name=pool, **options))
        return str(deployment.apply())
    except httpx.HTTPError as exc:
        raise _refused(exc, f"registering {FLOW}/{DEPLOYMENT} on work pool {pool}") from None
