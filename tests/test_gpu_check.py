"""bench/gpu_check.py, the prepared GPU check: its pure helpers, and (subprocess tier) the whole
script in --tiny mode on CPU, so the GPU run it prepares cannot rot."""

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("gpu_check", REPO / "bench" / "gpu_check.py")
gpu_check = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(gpu_check)

# Errors a part may end a measurement with on a busy machine, rather than a failure of the code.
TIME_ERRORS = ("skipped", "timed out", "not run")


def row(experiment, mode, images_per_s=None, error=None, batch=4):
    return {"experiment": experiment, "mode": mode, "batch": batch, "images_per_s": images_per_s,
            "iteration_s": batch / images_per_s if images_per_s else None, "peak_memory_bytes": 3 * 2**30,
            "flops_per_iteration": 10**12, "bf16_peak_fraction": 0.25 if images_per_s else None, "error": error}


def test_slug_names_the_device_file():
    assert gpu_check.slug("NVIDIA H200") == "nvidia-h200"
    assert gpu_check.slug("CPU AMD EPYC 7B13 64-Core Processor") == "cpu-amd-epyc-7b13-64-core-processor"
    assert gpu_check.slug("") == "unknown"


def test_part_limit_is_the_cap_less_what_later_parts_keep():
    assert gpu_check.part_limit(60, 1000, 3, 15) == 60
    assert gpu_check.part_limit(60, 100, 4, 15) == 40
    assert gpu_check.part_limit(60, 30, 4, 15) == 0


def test_iterations_follow_the_target_within_bounds_and_the_time_left():
    plan = gpu_check.FULL
    assert gpu_check.iterations(0.1, plan, 100) == 20  # 2 s target
    assert gpu_check.iterations(1e-5, plan, 100) == plan.max_iters
    assert gpu_check.iterations(5.0, plan, 100) == plan.min_iters
    assert gpu_check.iterations(5.0, plan, 6) == 1  # the time left wins, but one iteration is always timed
    assert gpu_check.iterations(0.1, gpu_check.TINY, 100) == 2


def test_resumed_step_reads_the_train_log_line():
    log = ("[train synthetic-v2] resuming from runs/ci/synthetic-v2/checkpoint/state.pt at step 2; "
           "steps 2 -> 60, global batch 24, 1 process(es) on cuda:0\n")
    assert gpu_check.resumed_step(log) == 2
    assert gpu_check.resumed_step("[train synthetic-v2] no checkpoint; steps 0 -> 60") is None


def test_speedups_are_relative_to_the_reference_mode_of_each_experiment():
    rows = [row("cub-v2", "reference", 10.0), row("cub-v2", "bf16-cl", 25.0),
            row("cub-v2", "bf16-cl-compile", error="timed out"), row("cub-v1", "fp32", 7.0)]
    assert gpu_check.speedups(rows) == {"cub-v2": {"reference": 1.0, "bf16-cl": 2.5, "bf16-cl-compile": None},
                                        "cub-v1": {"fp32": None}}


def test_table_shows_numbers_and_errors():
    rows = [row("cub-v2", "reference", 10.0), row("cub-v2", "bf16-cl", 25.0),
            row("cub-v2", "bf16-cl-compile", error="RuntimeError: boom")]
    lines = gpu_check.format_table(rows, gpu_check.speedups(rows)).splitlines()
    assert lines[0].split() == ["experiment", "mode", "img/s", "ms/iter", "peak", "mem", "%peak", "speedup"]
    assert lines[2].split() == ["cub-v2", "reference", "10.0", "400.00", "3.00", "GiB", "25.0%", "1.00x"]
    assert lines[3].split()[-1] == "2.50x"
    assert lines[4].split()[2:] == ["error:", "RuntimeError:", "boom"]


def test_complete_train_lists_every_mode_with_its_batch_and_why_one_is_missing():
    plan = gpu_check.TINY
    part = gpu_check.Part("train:cub-v2", "train", 10, {"experiments": ["cub-v2"], "modes": ["reference", "fp32"]})
    measured = {**row("cub-v2", "reference", 10.0), "flops_per_iteration": 4 * 10**12}
    rows = gpu_check.complete_train([measured], [(part, {"error": "timed out after 10 s (killed)"})], ["cub-v2"],
                                    plan, {"cub-v2": 4}, peak=1000.0)
    assert [r["mode"] for r in rows] == list(gpu_check.MODES)
    by_mode = {r["mode"]: r for r in rows}
    assert by_mode["reference"]["error"] is None
    assert by_mode["reference"]["bf16_peak_fraction"] == pytest.approx(4e12 / 0.4 / 1e15)
    assert by_mode["fp32"]["error"] == "timed out after 10 s (killed)" and by_mode["fp32"]["batch"] == 4
    assert by_mode["bf16-cl"]["error"] == "not run yet"
    assert by_mode["bf16-cl-compile"]["error"].startswith("not run: this plan compiles only cub-v1-s1-64")


def test_parts_run_compilation_last_and_tiny_groups_the_experiments():
    names = [p.name for p in gpu_check.parts_of(list(gpu_check.EXPERIMENTS), gpu_check.FULL)]
    assert names == ["train:cub-v2", "train:cub-v1-s1-64", "train:cub-v1", "train:cifar10-sgan", "torchrun", "eval",
                     "tests", "compile:cub-v2", "compile:cub-v1-s1-64", "compile:cub-v1", "compile:cifar10-sgan"]
    tiny = gpu_check.parts_of(list(gpu_check.EXPERIMENTS), gpu_check.TINY)
    assert [p.name for p in tiny] == ["train:cub-v2+cub-v1-s1-64+cub-v1+cifar10-sgan", "torchrun", "eval", "tests",
                                      "compile:cub-v1-s1-64"]
    assert tiny[0].spec["modes"] == list(gpu_check.EAGER_MODES)


def test_tests_summary_counts_junit_outcomes(tmp_path):
    xml = tmp_path / "t.xml"
    xml.write_text('<testsuites><testsuite><testcase classname="tests.a" name="ok"/>'
                   '<testcase classname="tests.a" name="bad"><failure message="assert 1 == 2"/></testcase>'
                   '<testcase classname="tests.b" name="skip"><skipped message="needs CUDA"/></testcase>'
                   '</testsuite></testsuites>')
    s = gpu_check.tests_summary(xml, ["pytest"], ["tests/a.py"])
    assert (s["passed"], s["failed"], s["errors"], s["skipped"]) == (1, 1, 0, 1)
    assert s["failures"] == [{"test": "tests.a::bad", "message": "assert 1 == 2"}]


def test_gpu_test_files_are_those_with_gpu_marks():
    files = gpu_check.gpu_test_files()
    assert files and "tests/test_gpu_check.py" not in files
    assert gpu_check.GPU_MARK.search("x = 1\n@pytest.mark.gpu\ndef test_cuda():\n")
    assert gpu_check.GPU_MARK.search("pytestmark = [pytest.mark.gpu, pytest.mark.slow]\n")
    assert not gpu_check.GPU_MARK.search('assert "pytest.mark.gpu" in text\n@pytest.mark.gpus\n')


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the machine without CUDA")
def test_cuda_without_cuda_is_a_one_line_error(capsys):
    assert gpu_check.main(["--device", "cuda"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("gpu_check: error: --device cuda asked for")


def _measured_or_error(r, *keys):
    if r.get("error") is not None:
        return isinstance(r["error"], str) and r["error"]
    return all(isinstance(r[k], (int, float)) and r[k] > 0 for k in keys)


@pytest.mark.subprocess
def test_tiny_run_on_cpu_writes_the_bench_json(tmp_path):
    from stackgan.cost import load_bench

    out = tmp_path / "x.json"
    env = dict(os.environ, PYTHON=sys.executable)
    cmd = ["bash", str(REPO / "bench" / "gpu_check.sh"), "--device", "cpu", "--tiny", "--out", str(out)]
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    print(proc.stdout)
    report = json.loads(out.read_text())
    load_bench(out)  # what `stackgan describe --cost --bench` reads
    assert report["schema"] == 1 and report["tiny"] is True and report["complete"] is True
    device = report["device"]
    assert device["type"] == "cpu" and device["name"] and device["torch"] == torch.__version__
    assert device["count"] == 1 and device["bf16_peak_tflops"] is None
    pairs = [(r["experiment"], r["mode"]) for r in report["train"]]
    assert pairs == [(e, m) for e in gpu_check.EXPERIMENTS for m in gpu_check.MODES]
    for r in report["train"]:
        assert _measured_or_error(r, "images_per_s", "iteration_s", "batch"), r
        assert r["bf16_peak_fraction"] is None and r["peak_memory_bytes"] is None  # CPU: no peak, no CUDA memory
        if r["mode"] in gpu_check.EAGER_MODES and r["error"]:  # only the clock may stop an eager mode
            assert r["error"].startswith(TIME_ERRORS), r
    assert report["speedup"]["cub-v2"]["reference"] in (1.0, None)
    t = report["torchrun"]
    assert t["ok"] and t["resumed"], t
    assert t["runs"][1]["resumed_from"] == 1 and t["checkpoint_step"] == 2
    assert t["process_group"]["backend"] == "gloo" and t["process_group"]["error"] is None
    assert [s["experiment"] for s in report["sampling"]] == list(gpu_check.SAMPLING)
    assert [f["protocol"] for f in report["features"]] == [p for p, _ in gpu_check.FEATURES]
    for r in report["sampling"] + report["features"]:
        assert _measured_or_error(r, "images_per_s"), r
    tests = report["tests"]
    assert tests["skipped"] >= 1 and tests["passed"] == tests["failed"] == tests["errors"] == 0  # CPU: all skip
    assert "cub-v2" in proc.stdout and "torchrun: ok" in proc.stdout
