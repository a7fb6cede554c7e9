"""The nightly's failure notification: a JSON POST to the team's webhook."""

from __future__ import annotations

import json
import logging
import os
import urllib.request
from typing import TYPE_CHECKING, Any

from fusion.config import load_config, resolve_workspace
from fusion.errors import FusionError

if TYPE_CHECKING:
    from prefect.client.schemas.objects import FlowRun
    from prefect.flows import Flow
    from prefect.states import State

WEBHOOK_ENV = "FUSIONFLOW_NOTIFY_WEBHOOK"
log = logging.getLogger("flows.nightly")


def notify_failure(flow: Flow[..., Any], flow_run: FlowRun, state: State) -> None:  # names as in FlowStateHook
    """on_failure hook: log, and POST a JSON summary to the webhook when one is configured
    ($FUSIONFLOW_NOTIFY_WEBHOOK, else nightly.notify_webhook of the workspace's params.yaml)."""
    message = state.message or "failed"
    log.error("nightly run %s (%s) failed: %s", flow_run.name, flow_run.id, message)
    url = os.environ.get(WEBHOOK_ENV)
    if not url:
        try:
            url = load_config(resolve_workspace((flow_run.parameters or {}).get("workspace"))).nightly.notify_webhook
        except FusionError:
            url = None
    if not url:
        return
    payload = {
        "flow": flow.name,
        "flow_run_id": str(flow_run.id),
        "flow_run_name": flow_run.name,
        "state": state.type.value,
        "message": message,
        "parameters": flow_run.parameters,
    }
    request = urllib.request.Request(
        url, data=json.dumps(payload, default=str).encode(), headers={"Content-Type": "application/json"}, method="POST"
    )
    try:
        urllib.request.urlopen(request, timeout=10).close()
    except OSError as exc:  # the notification must not mask the failure it reports
        log.error("failure notification to %s failed: %s", url, exc)
