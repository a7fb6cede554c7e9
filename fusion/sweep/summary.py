"""What a finished sweep prints and logs: its trial table."""

from __future__ import annotations

import csv
import io
import json
import logging
import math
from typing import TYPE_CHECKING, Any

from fusion import tracking
from fusion.io import write_bytes_atomic, write_json_atomic
from fusion.sweep.trial import DONE

if TYPE_CHECKING:
    from fusion.config import SweepConfig
    from fusion.sweep.runner import SweepResult

log = logging.getLogger("fusion.sweep.runner")


COLUMNS = ("trial", "label", "status", "epochs", "attempts", "best_val_loss", "depends_on", "run_id", "error")


def trials_markdown(rows: list[dict[str, Any]]) -> str:
    head = "| " + " | ".join(COLUMNS) + " |\n|" + "---|" * len(COLUMNS) + "\n"
    body = ""
    for r in rows:
        cells = []
        for c in COLUMNS:
            v = r.get(c)
            if isinstance(v, float):
                v = f"{v:.4g}" if math.isfinite(v) else ""
            cells.append(str(v if v is not None else "").replace("|", "/").replace("\n", " ")[:200])
        body += "| " + " | ".join(cells) + " |\n"
    return head + body


def summarise(result: SweepResult, target, sweep: SweepConfig) -> None:
    """Trial table and per-task comparison reports into the parent run; parent status."""
    from fusion.report import runs_report, select_runs

    client = tracking.client(target)
    sdir = result.dir
    write_json_atomic(sdir / "trials.json", result.trials)
    write_bytes_atomic(sdir / "trials.md", (f"# Sweep {result.name}\n\n" + trials_markdown(result.trials)).encode())
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=[*COLUMNS, "task"], extrasaction="ignore")
    writer.writeheader()
    writer.writerows(result.trials)
    write_bytes_atomic(sdir / "trials.csv", buf.getvalue().encode())
    for f in ("trials.md", "trials.csv", "trials.json"):
        client.log_artifact(result.parent_run_id, str(sdir / f), "sweep")
    tracking.log_metrics(
        target,
        result.parent_run_id,
        {f"sweep/{k}": v for k, v in result.counts().items()} | {"sweep/seconds": result.seconds},
    )
    if sweep.evaluate:
        by_task: dict[str, list[str]] = {}
        for t in result.trials:
            if t["status"] in DONE and t["run_id"] and "stage1" not in t["trial"]:
                by_task.setdefault(t["task"], []).append(t["run_id"])
        for task, ids in sorted(by_task.items()):
            try:
                rep = runs_report(
                    client,
                    select_runs(client, run_ids=ids),
                    sdir / "report" / task,
                    log_to=result.parent_run_id,
                    artifact_path=f"report/{task}",
                )
                result.reports[task] = rep.paths["table"]
            except Exception as exc:  # the sweep's own record must not be lost to a report problem
                log.warning("comparison report for %s not written: %s", task, exc)
    client.set_tag(result.parent_run_id, "sweep.counts", json.dumps(result.counts(), sort_keys=True))
    tracking.end_run(target, result.parent_run_id, "FINISHED" if result.finished else "KILLED")
