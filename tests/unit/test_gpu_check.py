"""What of `make gpu-check` runs without a GPU: its summary, the peak table, the GPU tests'
selection, and (slow) the GPU benchmark at CPU size."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from benchmarks import bench_gpu, gpu_summary
from tests.conftest import REPO


def _row(measure, value, unit):
    return {"benchmark": "gpu", "measure": measure, "value": value, "unit": unit}


def test_summary_compares_the_targets_and_keeps_the_rows_of_a_step_killed_by_its_limit(tmp_path):
    check = tmp_path / "check"
    check.mkdir()
    (check / "steps.tsv").write_text(
        "install\tok\t9\t90\npytest\tok\t70\t150\nspeed\tok\t80\t120\ncompile\ttimed out after 90 s\t90\t90\n"
    )
    machine = {"gpu": "NVIDIA H200", "torch": "2.13.0", "python": "3.12.3", "cpu": "Xeon", "cores": 16}
    (check / "speed.json").write_text(
        json.dumps(
            {
                "machine": machine,
                "rows": [
                    _row("ufa UFA inference 520x520, bfloat16: model forward on device tensors", 4.2, "ms"),
                    _row("ufa UFA inference 520x520, bfloat16: fusion.inference.fuse (fusion fuse)", 12.5, "ms"),
                    _row(
                        "cadnif OD-Net training (single stage), batch 16 at 132x132, bfloat16: of the dense bf16 peak",
                        41.0,
                        "%",
                    ),
                    _row(
                        "ufa UFA training (single stage), batch 8 at 256x256, bfloat16: of the dense bf16 peak",
                        22.0,
                        "%",
                    ),
                    _row(
                        "crossfuse s1-c1 training (fusion stage), batch 8 at 256x256, bfloat16: of the dense bf16 peak",
                        5.0,
                        "%",
                    ),
                    _row("metric suite (16 metrics), one 768x576 pair on cuda", 14.0, "ms"),
                    _row("benchmark wall time", 80.0, "s"),
                ],
            }
        )
    )
    (check / "compile.partial.jsonl").write_text(
        json.dumps(_row("ufa UFA training ..., torch.compile: step time", 20.0, "ms")) + "\n"
    )
    (check / "pytest.xml").write_text(
        '<testsuites><testsuite><testcase classname="tests.gpu.t" name="ok"/>'
        '<testcase classname="tests.gpu.t" name="bad"><failure message="assert 3 &lt;= 1&#10;more">x</failure></testcase>'
        '<testcase classname="tests.gpu.t" name="s"><skipped/></testcase></testsuite></testsuites>'
    )
    (check / "quality-tables.md").write_text(
        "## ufa UFA on synthetic/test\n\n| method | EN |\n|---|---|\n| dwt | 6 |\n"
    )

    out_json, out_md = gpu_summary.summarise(check, tmp_path / "results")
    assert out_json.name == "nvidia-h200.json" and out_md.name == "nvidia-h200.md"
    summary = json.loads(out_json.read_text())
    met = {t["measure"]: t["met"] for t in summary["targets"]}
    assert met == {
        "ufa UFA inference 520x520, bfloat16: model forward on device tensors": True,
        "ufa UFA inference 520x520, bfloat16: fusion.inference.fuse (fusion fuse)": False,
        "cadnif OD-Net training (single stage), batch 16 at 132x132, bfloat16: of the dense bf16 peak": True,
        "ufa UFA training (single stage), batch 8 at 256x256, bfloat16: of the dense bf16 peak": False,
        "metric suite (16 metrics), one 768x576 pair on cuda": True,
    }  # CrossFuse is not a convolutional model: no 40% target for it
    assert summary["pytest"] == {
        "ran": True,
        "passed": 1,
        "failed": 1,
        "skipped": 1,
        "errors": 0,
        "failures": [{"test": "tests.gpu.t.bad", "message": "assert 3 <= 1"}],
    }
    assert any(r.get("partial") and r["job"] == "compile" for r in summary["rows"])
    assert not any(r["measure"] == "benchmark wall time" for r in summary["rows"])
    text = out_md.read_text()
    assert "| compile | timed out after 90 s | 90 | 90 |" in text
    assert "FAILED `tests.gpu.t.bad`: assert 3 <= 1" in text
    assert "| compile (partial) | ufa UFA training ..., torch.compile: step time | 20 | ms |" in text
    assert "### ufa UFA on synthetic/test" in text and "Dry run" not in text


@pytest.mark.parametrize(
    ("name", "peak"),
    [
        ("NVIDIA H100 80GB HBM3", 989.0),
        ("NVIDIA H100 PCIe", 756.0),
        ("NVIDIA H100 NVL", 835.0),
        ("NVIDIA H200", 989.0),
        ("NVIDIA GH200 480GB", 989.0),
        ("NVIDIA A100-SXM4-80GB", 312.0),
        ("NVIDIA L40S", 362.0),
        ("NVIDIA L40", 181.0),
        ("NVIDIA L4", 121.0),
        ("Tesla V100-SXM2-32GB", None),
    ],
)
def test_dense_bf16_peak_by_device_name(name, peak, monkeypatch):
    monkeypatch.delenv("GPU_PEAK_BF16_TFLOPS", raising=False)
    assert bench_gpu.peak_bf16_tflops(name) == peak
    monkeypatch.setenv("GPU_PEAK_BF16_TFLOPS", "500")
    assert bench_gpu.peak_bf16_tflops(name) == 500.0


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is present")
def test_gpu_tests_are_deselected_by_default_and_skip_without_cuda():
    def pytest_run(*args):
        return subprocess.run(
            [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "tests/gpu", *args],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=300,
        )

    default = pytest_run()
    assert default.returncode == 5 and " deselected" in default.stdout  # CI's `pytest` selects none of them
    selected = pytest_run("-m", "gpu")
    assert selected.returncode == 0 and " skipped" in selected.stdout and "passed" not in selected.stdout


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is present")
def test_full_size_gpu_benchmark_without_cuda_says_how_to_check_it_on_a_cpu():
    with pytest.raises(SystemExit, match="no CUDA device here; --quick --device cpu"):
        bench_gpu.run(jobs=["speed"])


@pytest.mark.slow
def test_gpu_benchmark_runs_at_cpu_size(tmp_path, monkeypatch):
    monkeypatch.setenv("GPU_BENCH_PARTIAL", str(tmp_path / "partial.jsonl"))
    from benchmarks import run as runner

    out = runner.main(
        ["gpu", "--jobs", "speed,compile", "--quick", "--device", "cpu", "--out", str(tmp_path / "r.json")]
    )
    rows = json.loads(out.read_text())["rows"]
    measures = {r["measure"] for r in rows}
    for model in ("ufa UFA", "cadnif CA-DRDB-AU-GRL-Net", "crossfuse s1-c1"):
        assert any(m.startswith(model) and m.endswith("bfloat16: pairs/s") for m in measures), model
        assert any(m.startswith(model) and "inference" in m for m in measures), model
    assert any(m.startswith("metric suite") for m in measures)
    assert len((tmp_path / "partial.jsonl").read_text().splitlines()) == len(rows) - 1  # all but the wall time
