"""End-to-end wall time of the main job (smoke profile) and the time spent in each stage.

Runs the real Prefect flow in a fresh workspace (own DVC repo and MLflow store), so the
first-run costs (data synthesis, DVC bookkeeping) are included, then runs it again to
show what a nightly re-run with unchanged data costs.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
WORKSPACE_FILES = ("params.yaml", "dvc.yaml", "fusion/data/synth_multifocus.py")


def _fresh_workspace(root: Path) -> Path:
    for rel in WORKSPACE_FILES:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / rel, root / rel)
    return root


def run(quick: bool = False) -> list[dict]:
    from flows.nightly import nightly

    profile = "tiny" if quick else "smoke"
    rows = []
    with tempfile.TemporaryDirectory(prefix="fusionflow-bench-") as tmp:
        ws = _fresh_workspace(Path(tmp))
        for label in ("first run", "re-run, data unchanged"):
            start = time.perf_counter()
            summary = nightly(profile=profile, workspace=str(ws))
            wall = time.perf_counter() - start
            rows.append({"benchmark": "pipeline", "measure": f"{profile} {label}: wall time", "value": wall, "unit": "s"})
            for stage, seconds in summary["stage_seconds"].items():
                if stage != "total":
                    rows.append({"benchmark": "pipeline", "measure": f"{profile} {label}: {stage}", "value": seconds, "unit": "s"})
            rows.append({"benchmark": "pipeline", "measure": f"{profile} {label}: flow overhead (wall - stages)",
                         "value": wall - sum(v for k, v in summary["stage_seconds"].items() if k != "total"), "unit": "s"})
    return rows


if __name__ == "__main__":
    from benchmarks.run import main

    main(["pipeline"])
