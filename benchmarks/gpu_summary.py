"""The last step of scripts/gpu-check.sh: one results file and one Markdown summary.

Reads the check's folder (benchmarks/scratch/gpu-check/): steps.tsv (each step's status and
seconds), pytest.xml (`pytest -m gpu`), <job>.json from `benchmarks.run gpu --jobs <job>`
(or, for a step killed by its time limit, the rows it had appended to <job>.partial.jsonl)
and the quality tables; writes <out>/<gpu-name>.json and <out>/<gpu-name>.md. The issue's
targets are compared here: measured, never asserted.

    python -m benchmarks.gpu_summary benchmarks/scratch/gpu-check benchmarks/results
"""

from __future__ import annotations

import argparse
import json
import re
import time
import xml.etree.ElementTree as ET
from pathlib import Path

JOBS = ("speed", "compile", "quality")


def gpu_slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", name).strip("-").lower() or "unknown-gpu"


def read_steps(folder: Path) -> list[dict]:
    steps = []
    path = folder / "steps.tsv"
    for line in path.read_text().splitlines() if path.is_file() else []:
        name, status, seconds, limit = (line.split("\t") + ["", "", ""])[:4]
        steps.append({"step": name, "status": status, "seconds": float(seconds or 0), "limit_s": float(limit or 0)})
    return steps


def read_pytest(folder: Path) -> dict:
    path = folder / "pytest.xml"
    if not path.is_file():
        return {"ran": False, "error": "no pytest.xml: the step did not finish (see pytest.log)"}
    try:
        root = ET.parse(path).getroot()
    except ET.ParseError as exc:
        return {"ran": False, "error": f"pytest.xml: {exc}"}
    counts = {"passed": 0, "failed": 0, "skipped": 0, "errors": 0}
    failures = []
    for case in root.iter("testcase"):
        name = f"{case.get('classname', '')}.{case.get('name', '')}"
        kinds = {child.tag for child in case}
        if "failure" in kinds or "error" in kinds:
            counts["failed" if "failure" in kinds else "errors"] += 1
            detail = next(c for c in case if c.tag in ("failure", "error"))
            failures.append({"test": name, "message": (detail.get("message") or "").splitlines()[0][:300]})
        elif "skipped" in kinds:
            counts["skipped"] += 1
        else:
            counts["passed"] += 1
    return {"ran": True, **counts, "failures": failures}


def read_rows(folder: Path) -> tuple[list[dict], dict]:
    rows, machine = [], {}
    for job in JOBS:
        done = folder / f"{job}.json"
        if done.is_file():
            payload = json.loads(done.read_text())
            machine = machine or payload.get("machine", {})
            rows += [{**r, "job": job} for r in payload["rows"] if r["measure"] != "benchmark wall time"]
            continue
        partial = folder / f"{job}.partial.jsonl"
        if partial.is_file():  # killed by its time limit: what it measured before
            rows += [
                {**json.loads(line), "job": job, "partial": True}
                for line in partial.read_text().splitlines()
                if line.strip()
            ]
    return rows, machine


def _value(rows: list[dict], pattern: str) -> list[tuple[str, float]]:
    return [(r["measure"], r["value"]) for r in rows if re.search(pattern, r["measure"])]


def targets(rows: list[dict]) -> list[dict]:
    """The issue's targets on an H100/H200-class GPU, against what was measured."""
    out = []
    for measure, value in _value(rows, r"^ufa UFA inference 520x520, bfloat16: "):
        out.append(
            {
                "target": "UFA-Fuse 520x520 inference under 10 ms in bfloat16",
                "measure": measure,
                "value": value,
                "unit": "ms",
                "met": value < 10,
            }
        )
    for measure, value in _value(rows, r"^(ufa|cadnif) .* training .*, bfloat16: of the dense bf16 peak"):
        out.append(
            {
                "target": "convolutional models' training at 40% or more of the dense bf16 peak",
                "measure": measure,
                "value": value,
                "unit": "%",
                "met": value >= 40,
            }
        )
    for measure, value in _value(rows, r"^metric suite \(\d+ metrics\), one 768x576 pair on cuda"):
        out.append(
            {
                "target": "the metric suite under 20 ms a pair",
                "measure": measure,
                "value": value,
                "unit": "ms",
                "met": value < 20,
            }
        )
    return out


def _fmt(v: float) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def markdown(summary: dict, tables: str) -> str:
    m = summary["machine"]
    lines = [
        f"# GPU check: {summary['gpu']}",
        "",
        f"{summary['date']}; torch {m.get('torch', '?')}, Python {m.get('python', '?')}, {m.get('cpu', '?')} "
        f"({m.get('cores', '?')} cores). `make gpu-check` (scripts/gpu-check.sh); every number is one run's.",
        "",
    ]
    if summary["dry_run"]:
        lines += [
            "**Dry run on a CPU (GPU_CHECK_ALLOW_CPU=1): tiny sizes; these numbers say nothing about a GPU.**",
            "",
        ]
    lines += ["## Steps", "", "| step | status | seconds | limit (s) |", "|---|---|---|---|"]
    lines += [f"| {s['step']} | {s['status']} | {s['seconds']:.0f} | {s['limit_s']:.0f} |" for s in summary["steps"]]
    p = summary["pytest"]
    lines += ["", "## GPU tests (`pytest -m gpu`)", ""]
    if p.get("ran"):
        lines.append(f"{p['passed']} passed, {p['failed']} failed, {p['errors']} errors, {p['skipped']} skipped.")
        lines += [f"- FAILED `{f['test']}`: {f['message']}" for f in p["failures"]]
    else:
        lines.append(f"No result ({p['error']}).")
    lines += ["", "## Targets (measured, not asserted)", ""]
    if summary["targets"]:
        lines += ["| target | measure | value | met |", "|---|---|---|---|"]
        lines += [
            f"| {t['target']} | {t['measure']} | {t['value']:.4g} {t['unit']} | {'yes' if t['met'] else 'no'} |"
            for t in summary["targets"]
        ]
    else:
        lines.append("No target rows were measured.")
    lines += ["", "## Rows", "", "| job | measure | value | unit |", "|---|---|---|---|"]
    lines += [
        f"| {r['job']}{' (partial)' if r.get('partial') else ''} | {r['measure']} | {_fmt(r['value'])} | {r['unit']} |"
        for r in summary["rows"]
    ]
    if tables.strip():
        lines += ["", "## Quality (short GPU runs against the baselines)", "", re.sub(r"(?m)^## ", "### ", tables)]
    return "\n".join(lines) + "\n"


def summarise(folder: Path, out_dir: Path, dry_run: bool = False) -> tuple[Path, Path]:
    from fusion.io import write_bytes_atomic, write_json_atomic

    rows, machine = read_rows(folder)
    gpu = machine.get("gpu") or ("cpu (dry run)" if dry_run else "unknown GPU")
    summary = {
        "gpu": gpu,
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
        "dry_run": dry_run,
        "machine": machine,
        "steps": read_steps(folder),
        "pytest": read_pytest(folder),
        "targets": targets(rows),
        "rows": rows,
    }
    tables = (folder / "quality-tables.md").read_text() if (folder / "quality-tables.md").is_file() else ""
    slug = gpu_slug(gpu if not dry_run else "cpu-dry-run")
    out_json, out_md = out_dir / f"{slug}.json", out_dir / f"{slug}.md"
    write_json_atomic(out_json, summary)
    write_bytes_atomic(out_md, markdown(summary, tables).encode())
    return out_json, out_md


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folder", type=Path, help="the check's folder (steps.tsv, pytest.xml, <job>.json)")
    parser.add_argument("out_dir", type=Path, help="where <gpu-name>.json and .md go")
    parser.add_argument("--dry-run", action="store_true", help="a CPU dry run (GPU_CHECK_ALLOW_CPU=1)")
    args = parser.parse_args(argv)
    for path in summarise(args.folder, args.out_dir, args.dry_run):
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
