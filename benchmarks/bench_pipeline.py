"""End-to-end wall time of the main job (smoke profile) and the time spent in each stage.

Runs the real Prefect flow in a fresh workspace (own DVC repo and MLflow store), so the
first-run costs (data synthesis, DVC bookkeeping) are included, then runs it again to
show what a nightly re-run with unchanged data costs.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def run(quick: bool = False) -> list[dict]:
    from flows.nightly import nightly
    from fusion.pipeline import new_workspace

    profile = "tiny" if quick else "smoke"
    rows = []
    with tempfile.TemporaryDirectory(prefix="fusionflow-bench-") as tmp:
        ws = new_workspace(Path(tmp), REPO)
        for label in ("first run", "re-run, data unchanged"):
            start = time.perf_counter()
            summary = nightly(profile=profile, workspace=str(ws))
            wall = time.perf_counter() - start
            rows.append(
                {"benchmark": "pipeline", "measure": f"{profile} {label}: wall time", "value": wall, "unit": "s"}
            )
            for stage, seconds in summary["stage_seconds"].items():
                if stage != "total":
                    rows.append(
                        {
                            "benchmark": "pipeline",
                            "measure": f"{profile} {label}: {stage}",
                            "value": seconds,
                            "unit": "s",
                        }
                    )
            rows.append(
                {
                    "benchmark": "pipeline",
                    "measure": f"{profile} {label}: flow overhead (wall - stages)",
                    "value": wall - sum(v for k, v in summary["stage_seconds"].items() if k != "total"),
                    "unit": "s",
                }
            )
    return rows


if __name__ == "__main__":
    from benchmarks.run import main

    main(["pipeline"])
