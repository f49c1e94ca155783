"""Cross-machine reproducibility: the CPU pins make a training step's bits independent of the
kernels a CPU would pick, the CLI sets them before torch loads, and the gate and the verdict tell a
run under the baseline's contract from one that cannot match it."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from stackgan import cli, reproducibility
from stackgan.gate import compare, verdict

REPO = Path(__file__).resolve().parents[1]
HAS_AVX2 = "avx2" in reproducibility.machine()["isa"]


def probe(mode, **env):
    """Weights after three training steps in a fresh process, under `mode` and extra env vars."""
    full = {k: v for k, v in os.environ.items() if k not in reproducibility.PINNED_ENV}
    full.update(env, PYTHONPATH=str(REPO))
    proc = subprocess.run([sys.executable, str(REPO / "tests/kernel_probe.py"), mode], env=full,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.splitlines()[-1])


# Stand-ins for CPUs of other instruction sets: oneDNN capped at SSE4.1 vs AVX2, and ATen / MKL
# told to dispatch differently.
MACHINES = [{"ONEDNN_MAX_CPU_ISA": "SSE41"}, {"ONEDNN_MAX_CPU_ISA": "AVX2"},
            {"ATEN_CPU_CAPABILITY": "default", "MKL_CBWR": "AUTO"}]


@pytest.fixture(scope="module")
def native_hashes():
    return [probe("native", **m)["weights_sha256"] for m in MACHINES]


@pytest.mark.subprocess
@pytest.mark.skipif(not HAS_AVX2, reason="the pins name AVX2 kernels; this CPU cannot run them")
def test_unpinned_the_emulated_machines_disagree(native_hashes):
    """Without the pins every stand-in gives other bits, so the next test can fail."""
    assert len(set(native_hashes)) == len(MACHINES)


@pytest.mark.subprocess
@pytest.mark.skipif(not HAS_AVX2, reason="the pins name AVX2 kernels; this CPU cannot run them")
@pytest.mark.parametrize("convolutions", ["im2col", "onednn"])
def test_pinned_step_is_bitwise_independent_of_the_kernels_this_cpu_would_pick(convolutions):
    pinned = [probe(convolutions, **m) for m in MACHINES]
    assert len({p["weights_sha256"] for p in pinned}) == 1
    contract = pinned[0]["contract"]
    assert contract["pinned"] and contract["aten_capability"] == "AVX2" and contract["mkl_cbwr"] == "COMPATIBLE"
    assert not contract["nnpack"] and contract["threads"] == 2
    if convolutions == "onednn":
        assert contract["convolutions"] == "oneDNN, ISA cap AVX2" and contract["onednn_cache_sizes"]
    else:
        assert contract["convolutions"] == "ATen im2col + MKL GEMM" and contract["onednn_cache_sizes"] is None


@pytest.mark.subprocess
def test_the_two_convolution_paths_are_different_contracts():
    assert probe("im2col")["weights_sha256"] != probe("onednn")["weights_sha256"]


def run_cli(*args, cwd=REPO):
    env = {k: v for k, v in os.environ.items() if k not in reproducibility.PINNED_ENV}
    env["PYTHONPATH"] = str(REPO)
    return subprocess.run([sys.executable, "-m", "stackgan.cli", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=120)


@pytest.mark.subprocess
def test_cli_pins_cpu_profiles_before_torch_loads_and_leaves_paper_alone():
    ci = run_cli("--profile", "ci", "env", "--json")
    assert ci.returncode == 0, ci.stderr
    contract = json.loads(ci.stdout)["contract"]
    assert contract["pinned"] and contract["mkl_cbwr"] == "COMPATIBLE" and contract["threads"] == 2
    assert contract["convolutions"] == "ATen im2col + MKL GEMM"
    embedded = json.loads(run_cli("--profile", "embedded", "env", "--json").stdout)["contract"]
    assert embedded["pinned"] and embedded["convolutions"] == "oneDNN, ISA cap AVX2"
    paper = json.loads(run_cli("--profile", "paper", "env", "--json").stdout)["contract"]
    assert not paper["pinned"] and paper["convolutions"] == "oneDNN, ISA cap none"
    text = run_cli("--profile", "ci", "env").stdout
    assert "aten_capability" in text and "this machine" in text


@pytest.mark.subprocess
@pytest.mark.parametrize("entry,word", [("threads: 0", "threads"), ("threads: -1", "threads"),
                                        ("threads: two", "threads"), ("threads: true", "threads"),
                                        ("threads: null", "threads"), ("threads: 2, convolutions: fft", "convolutions")])
def test_a_pinned_profile_needs_a_thread_count_and_a_known_convolution_path(tmp_path, entry, word):
    params = (REPO / "params.yaml").read_text().replace("cpu: {pinned: true, threads: 2, convolutions: onednn}",
                                                        f"cpu: {{pinned: true, {entry}}}")
    (tmp_path / "params.yaml").write_text(params)
    proc = run_cli("--params", str(tmp_path / "params.yaml"), "env")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.startswith("stackgan: error: ") and word in proc.stderr and len(proc.stderr.splitlines()) == 1


def test_profile_settings_default_to_unpinned():
    assert reproducibility.settings({"profiles": {"x": {}}}, "x")["pinned"] is False
    assert reproducibility.settings({"profiles": {"x": {"cpu": {"pinned": True, "threads": 3}}}}, "x") == \
        {"pinned": True, "threads": 3, "convolutions": "im2col"}


def test_contract_names_no_machine_and_machine_names_the_cpu():
    contract, machine = reproducibility.contract(), reproducibility.machine()
    assert not set(contract) & set(machine)
    assert contract["torch"] == torch.__version__ and machine["cpu"]


def test_warnings_name_what_breaks_the_contract():
    contract = dict(reproducibility.contract(), pinned=True, aten_capability="DEFAULT", mkl_cbwr="off (auto dispatch)")
    problems = reproducibility.warnings_for(contract, {"isa": ["sse4_2"]})
    assert any("no AVX2" in p for p in problems) and any("MKL" in p for p in problems)
    assert reproducibility.warnings_for(dict(contract, arch="aarch64"), {"isa": []})[0].startswith("this is a aarch64")


# --- the gate and the verdict read the contract ---------------------------------------------

CONTRACT = {"arch": "x86_64", "aten_capability": "AVX2", "mkl_cbwr": "COMPATIBLE", "threads": 2, "pinned": True}
TOL = {"default": {"abs": 0.0}}
CROSS = {"is": {"abs": 0.5}, "default": {"rel": 0.2}}


def metrics_file(value, contract=CONTRACT):
    return {"experiment": "x", "profile": "ci", "metrics": {"is2k_synthetic-clf": {"value": value, "std": None}},
            "reproducibility": {"train": contract, "evaluate": contract}}


@pytest.fixture
def repo(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "results/metrics/ci/synthetic-v2.json"
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps(metrics_file(3.0)))
    (tmp_path / "results/machines").mkdir()
    (tmp_path / "results/machines/ci.json").write_text(json.dumps({"machine": {"cpu": "Some CPU"}, "contract": CONTRACT}))
    for cmd in ("git init -q", "git config user.email t@example.invalid", "git config user.name t",
                "git add -A", "git commit -qm base"):
        subprocess.run(cmd, shell=True, check=True, cwd=tmp_path)
    return path


def test_same_contract_allows_no_change_at_all(repo):
    repo.write_text(json.dumps(metrics_file(3.0 + 1e-12)))
    rows, ok, changes = compare("results/metrics/ci", "HEAD", TOL, CROSS)
    assert not ok and not changes and rows[0][-1] == "MOVED"
    repo.write_text(json.dumps(metrics_file(3.0)))
    assert compare("results/metrics/ci", "HEAD", TOL, CROSS)[1]


def test_another_contract_is_compared_with_the_measured_spread_and_named(repo, capsys):
    other = dict(CONTRACT, aten_capability="DEFAULT")
    repo.write_text(json.dumps(metrics_file(3.4, other)))
    rows, ok, changes = compare("results/metrics/ci", "HEAD", TOL, CROSS)
    assert ok and changes["results/metrics/ci/synthetic-v2.json"]["evaluate.aten_capability"] == ("AVX2", "DEFAULT")
    from stackgan.gate import run_gate

    assert run_gate({"gate": {"tolerance": TOL, "cross_contract_tolerance": CROSS}}, "results/metrics/ci")
    out = capsys.readouterr().out
    assert "Some CPU" in out and "aten_capability: AVX2 (baseline) -> DEFAULT (here)" in out
    repo.write_text(json.dumps(metrics_file(3.6, other)))
    assert not compare("results/metrics/ci", "HEAD", TOL, CROSS)[1]


def test_verdict_says_reproduced_or_what_differs_and_why(repo):
    assert verdict("results/metrics/ci").startswith("REPRODUCED: all 1 metrics")
    assert "Some CPU" in verdict("results/metrics/ci")
    repo.write_text(json.dumps(metrics_file(3.2, dict(CONTRACT, threads=4))))
    text = verdict("results/metrics/ci")
    assert text.startswith("NOT REPRODUCED: 1 of 1") and "threads: 2 (baseline) -> 4 (here)" in text
    assert "git checkout results dvc.lock" in text


@pytest.mark.subprocess
def test_env_record_writes_the_machine_beside_the_metrics(tmp_path):
    (tmp_path / "params.yaml").write_text((REPO / "params.yaml").read_text())
    proc = run_cli("--profile", "ci", "env", "--record", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    record = json.loads((tmp_path / "results/machines/ci.json").read_text())
    assert record["machine"]["cpu"] == reproducibility.machine()["cpu"] and record["contract"]["pinned"]


@pytest.mark.subprocess
def test_thread_count_is_not_a_user_error_when_unpinned(tmp_path):
    params = (REPO / "params.yaml").read_text().replace("cpu: {pinned: true, threads: 2, convolutions: im2col}",
                                                        "cpu: {pinned: false}")
    (tmp_path / "params.yaml").write_text(params)
    proc = run_cli("--params", str(tmp_path / "params.yaml"), "--profile", "ci", "env", "--json")
    assert proc.returncode == 0 and not json.loads(proc.stdout)["contract"]["pinned"]


@pytest.mark.subprocess
def test_unknown_profile_in_env_is_one_line():
    proc = run_cli("--profile", "nope", "env")
    assert proc.returncode == 2 and "unknown profile 'nope'" in proc.stderr and "Traceback" not in proc.stderr


def test_commands_that_compute_nothing_leave_the_process_unpinned(monkeypatch):
    calls = []
    monkeypatch.setattr(reproducibility, "pin", calls.append)
    assert cli.main(["--params", str(REPO / "params.yaml"), "describe", "synthetic-v2"]) == 0
    assert calls == []
