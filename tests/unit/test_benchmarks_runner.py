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


def test_options_reach_only_benchmarks_that_take_them_and_heavy_ones_run_on_request(tmp_path, monkeypatch):
    seen = {}
    plain = types.ModuleType("benchmarks.bench_plain")
    plain.run = lambda quick=False: [{"benchmark": "plain", "measure": "x", "value": 1.0, "unit": "s"}]
    heavy = types.ModuleType("benchmarks.bench_quality")
    heavy.OPTIONS = ("minutes", "device", "test_pairs", "jobs")

    def heavy_run(quick=False, **options):
        seen.update(options)
        return [{"benchmark": "quality", "measure": "y", "value": 2.0, "unit": ""}]

    heavy.run = heavy_run
    monkeypatch.setitem(sys.modules, "benchmarks.bench_plain", plain)
    monkeypatch.setitem(sys.modules, "benchmarks.bench_quality", heavy)
    monkeypatch.setattr(runner, "available", lambda: ["plain", "quality"])
    data = json.loads(runner.main(["--out", str(tmp_path / "a.json")]).read_text())
    assert {r["benchmark"] for r in data["rows"]} == {"plain"} and not seen  # quality only when named
    runner.main(["quality", "--minutes", "2.5", "--test-pairs", "3", "--out", str(tmp_path / "b.json")])
    assert seen == {"minutes": 2.5, "device": "auto", "test_pairs": 3, "jobs": None}


def test_bad_benchmark_options_are_refused(tmp_path):
    import pytest

    for args in (["--minutes", "-5"], ["--test-pairs", "0"], ["--device", "gpu0"]):
        with pytest.raises(SystemExit) as exc:
            runner.main(["quality", *args, "--out", str(tmp_path / "x.json")])
        assert exc.value.code == 2
    assert not (tmp_path / "x.json").exists()
