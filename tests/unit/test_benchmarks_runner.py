"""The benchmark runner itself (not speed): rows, table and results file."""

from __future__ import annotations

import json
import sys
import types

from benchmarks import run as runner


def test_runner_writes_machine_named_results(tmp_path, monkeypatch):
    fake = types.ModuleType("benchmarks.bench_fake")
    fake.run = lambda quick=False: [{"benchmark": "fake", "measure": "x", "value": 1.5, "unit": "s"}]
    monkeypatch.setitem(sys.modules, "benchmarks.bench_fake", fake)
    monkeypatch.setattr(runner, "available", lambda: ["fake"])
    out = runner.main(["fake", "--out", str(tmp_path / "r.json")])
    data = json.loads(out.read_text())
    assert data["machine"]["cores"] >= 1 and "cpu" in data["machine"]
    assert {"benchmark": "fake", "measure": "x", "value": 1.5, "unit": "s"} in data["rows"]
    assert any(r["measure"] == "benchmark wall time" for r in data["rows"])
