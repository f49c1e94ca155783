"""What a run costs (stackgan/cost.py, `stackgan describe --cost`): FLOPs counted on the meta
device, the run's length, GPU-hours from a bench file, and paper tables summed."""

import contextlib
import copy
import io
import json
from pathlib import Path

import pytest
import torch
import yaml

from stackgan import config as C
from stackgan import cost
from stackgan.cli import main
from stackgan.errors import UserError

REPO = Path(__file__).resolve().parents[1]
PARAMS = C.load_params(REPO / "params.yaml")


def cfg_of(name, profile="embedded", **changes):
    cfg = C.experiment_config(PARAMS, name, profile)
    cfg.update(copy.deepcopy(changes))
    return cfg


def run_cli(*argv):
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(["--params", str(REPO / "params.yaml"), *argv])
    return code, out.getvalue(), err.getvalue()


def one_line_error(*argv):
    code, out, err = run_cli(*argv)
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1 and lines[0].startswith("stackgan: error: "), (code, out, err)
    return lines[0]


def bench_file(tmp_path, entries, tiny=False):
    path = tmp_path / "bench.json"
    path.write_text(json.dumps({"schema": 1, "created": "2026-01-01T00:00:00", "tiny": tiny,
                                "device": {"type": "cuda", "name": "NVIDIA H200", "count": 1}, "train": entries}))
    return path


def entry(experiment, mode, images_per_s, batch, flops=None, error=None):
    return {"experiment": experiment, "mode": mode, "batch": batch, "images_per_s": images_per_s,
            "iteration_s": None if images_per_s is None else batch / images_per_s, "flops_per_iteration": flops,
            "peak_memory_bytes": None, "bf16_peak_fraction": None, "error": error}


@pytest.fixture(autouse=True)
def no_prepared_data(tmp_path, monkeypatch):
    """prepared_dir is relative: run where no dataset is prepared unless a test prepares one."""
    monkeypatch.chdir(tmp_path)


# -- FLOPs

def test_counter_convention_on_a_conv_net_known_by_hand():
    """Forward: 2 x MACs per layer; backward: weight gradients of every layer and the input
    gradient of all but the first (the image needs none); Adam's update counts nothing."""
    with torch.device("meta"):
        net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(), torch.nn.Flatten(),
                                  torch.nn.Linear(8 * 16 * 16, 10))
        opt = torch.optim.Adam(net.parameters())
        x = torch.zeros(2, 3, 16, 16)

    def step():
        net(x).square().mean().backward()
        opt.step()

    conv = 2 * 2 * 8 * 16 * 16 * 3 * 3 * 3  # batch x out channels x pixels x (in channels x 3 x 3)
    linear = 2 * 2 * (8 * 16 * 16) * 10
    assert cost.flops_of(step) == conv * 2 + linear * 3


def test_iteration_flops_is_positive_and_linear_in_batch():
    cfg = cfg_of("synthetic-v2")
    four, eight = cost.iteration_flops(cfg, batch_size=4), cost.iteration_flops(cfg, batch_size=8)
    assert four > 0 and eight == 2 * four
    assert cost.iteration_flops(cfg) == 6 * four  # the config's own global batch, 24


def test_iteration_flops_counts_every_branch_and_discriminator():
    three = cost.iteration_flops(cfg_of("synthetic-v2"), batch_size=4)
    one = cost.iteration_flops(cfg_of("synthetic-v2", emit=[False, False, True], discriminators=[0]), batch_size=4)
    assert 0 < one < three


def test_every_family_counts_without_trained_files():
    """A Stage-II's parent model.pt and SGAN's encoder.pt are not needed (fresh stand-ins)."""
    rng = torch.get_rng_state()
    for name in ("synthetic-v1-s1", "synthetic-v1", "synthetic-sgan"):
        assert cost.iteration_flops(cfg_of(name), batch_size=4) > 0, name
    sgan = cfg_of("synthetic-sgan")
    independent, joint = (cost.iteration_flops(sgan, batch_size=4, step=s) for s in (0, 300))
    assert joint != independent  # the joint phase runs G0 on G1's output, with its own losses
    assert torch.equal(torch.get_rng_state(), rng)  # the stand-ins' initialisation draws nothing visible


def test_example_batches_have_the_training_shapes():
    from stackgan.methods import build_method

    meta = torch.device("meta")
    with torch.device(meta):
        v2 = build_method(cfg_of("synthetic-v2"), meta).example_batch(3, meta)
        v1 = build_method(cfg_of("synthetic-v1-s1"), meta).example_batch(3, meta)
        uncond = build_method(cfg_of("synthetic-v2", conditional=False), meta).example_batch(3, meta)
    assert [tuple(t.shape) for t in v2["imgs"]] == [(3, 3, 16, 16), (3, 3, 32, 32), (3, 3, 64, 64)]
    assert [tuple(t.shape) for t in v2["wrong_imgs"]] == [(3, 3, 16, 16), (3, 3, 32, 32), (3, 3, 64, 64)]
    assert tuple(v2["emb"].shape) == (3, 1024) and v2["emb"].dtype == torch.float32
    assert [tuple(t.shape) for t in v1["imgs"]] == [(3, 3, 32, 32)]
    assert set(uncond) == {"imgs", "index"}


# -- the run's length

def test_cub_v2_paper_length_from_expected_counts():
    length = cost.run_length(cfg_of("cub-v2", "paper"))
    assert length["train_items"] == 8855 and length["train_items_from"] == "params.yaml expected_counts"
    assert length["steps"] == 600 * (8855 // 24) == 220_800
    assert length["images"] == 220_800 * 24


def test_sgan_length_is_its_two_phases():
    cfg = cfg_of("cifar10-sgan", "paper")
    assert cost.run_length(cfg)["steps"] == 200_000
    assert cost.phases(cfg, 200_000) == [(0, 100_000), (100_000, 100_000)]
    assert cost.phases(cfg_of("cifar10-sgan-nojoint", "paper"), 100_000) == [(0, 100_000)]


def test_prepared_manifest_count_wins(tmp_path):
    prepared = Path(cfg_of("cub-v2", "paper")["data"]["prepared_dir"])
    prepared.mkdir(parents=True)
    (prepared / "manifest.json").write_text(json.dumps(
        {"format_version": 1, "dataset": "cub", "views": {}, "files": {}, "sources": {},
         "splits": {"train": {"count": 240}, "test": {"count": 80}}}))
    length = cost.run_length(cfg_of("cub-v2", "paper"))
    assert length["train_items"] == 240 and length["steps"] == 600 * 10


def test_unknown_length_says_prepare():
    cfg = cfg_of("synthetic-v2")
    cfg["train"]["max_steps"] = None
    with pytest.raises(UserError, match="stackgan prepare synthetic"):
        cost.run_length(cfg)


# -- GPU-hours

def test_hours_from_the_experiments_own_measurement(tmp_path):
    cfg = cfg_of("synthetic-v2")  # 1,200 steps of 24 images
    bench = cost.load_bench(bench_file(tmp_path, [entry("synthetic-v2", "reference", 120.0, 24),
                                                  entry("synthetic-v2", "bf16-cl", 480.0, 24),
                                                  entry("synthetic-v2", "compile", None, 24, error="failed")]))
    gh = cost.run_cost(cfg, PARAMS, bench, gpus=4)["gpu_hours"]
    assert gh["kind"] == "measured" and not gh["scaled"] and gh["from_experiment"] == "synthetic-v2"
    assert set(gh["modes"]) == {"reference", "bf16-cl"}  # a mode that failed has no throughput
    assert gh["modes"]["reference"]["hours"] == 28_800 / 120.0 / 3600
    assert gh["modes"]["bf16-cl"]["hours"] == 28_800 / 480.0 / 3600
    assert gh["modes"]["bf16-cl"]["hours_on_gpus"] == 28_800 / 480.0 / 3600 / 4
    assert gh["modes"]["bf16-cl"]["speedup_vs_reference"] == 4.0


def test_hours_scaled_from_another_experiment_say_so(tmp_path):
    cfg = cfg_of("synthetic-v1")  # Stage-II, 64 px: the bench has only Stage-I at 32 px
    measured_flops = 10**10
    bench = cost.load_bench(bench_file(tmp_path, [entry("synthetic-v1-s1", "reference", 1000.0, 16, measured_flops)]))
    c = cost.run_cost(cfg, PARAMS, bench)
    gh = c["gpu_hours"]
    assert gh["scaled"] and gh["from_experiment"] == "synthetic-v1-s1"
    assert any("scaled from synthetic-v1-s1" in n for n in c["notes"])
    per_image = c["flops_per_iteration"] / 64
    want = c["images"] / 1000.0 * per_image / (measured_flops / 16) / 3600
    assert gh["modes"]["reference"]["hours"] == pytest.approx(want, rel=1e-12)
    text = "\n".join(cost.describe_cost(c))
    assert "measured on synthetic-v1-s1" in text and "scaled from synthetic-v1-s1" in text


def test_without_bench_the_time_is_a_labelled_lower_bound():
    c = cost.run_cost(cfg_of("synthetic-v2"), PARAMS)
    assert c["gpu_hours"]["kind"] == "lower bound"
    assert c["gpu_hours"]["modes"]["peak"]["hours"] == c["flops"] / 989e12 / 3600
    assert "a lower bound" in "\n".join(cost.describe_cost(c))


def test_bf16_peaks_by_device_name():
    assert cost.bf16_peak_tflops("NVIDIA A100-SXM4-80GB") == 312.0
    assert cost.bf16_peak_tflops("NVIDIA A10") == 125.0
    assert cost.bf16_peak_tflops("NVIDIA H100 80GB HBM3") == 989.0
    assert cost.bf16_peak_tflops("NVIDIA H100 PCIe") == 756.0
    assert cost.bf16_peak_tflops("Tesla V100-SXM2-16GB") is None
    assert cost.bf16_peak_tflops("Some Future GPU") is None


# -- paper tables

def test_table_experiments_add_stage2_parents_once():
    names = dict(cost.table_experiments(PARAMS, "2", "paper"))
    assert {"cub-v1", "oxford102-v1", "coco-v1"} <= names.keys()
    assert names["cub-v1-s1-64"] == "parent of cub-v1"
    table4 = cost.table_experiments(PARAMS, "4", "paper")
    assert len(table4) == len(dict(table4)) == 10 and all(why is None for _, why in table4)
    sgan = dict(cost.table_experiments(PARAMS, "sgan", "paper"))
    assert "cifar10-sgan" in sgan and "cifar10-real" not in sgan  # real images train nothing
    with pytest.raises(UserError, match="unknown paper table '9'"):
        cost.table_experiments(PARAMS, "9")


def test_table_5_sums_its_experiments(tmp_path):
    """On narrow networks (the sum, not the paper's sizes, is under test)."""
    params = copy.deepcopy(PARAMS)
    params["models"]["v2"].update(gf_dim=2, df_dim=2, branch_sizes=[16, 32, 64])
    params["experiments"]["cub-v2-all256"]["branch_sizes"] = [64, 64, 64]
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(params))

    def describe(*argv):
        code, out, err = run_cli("--params", str(path), "--profile", "paper", "describe", *argv, "--json")
        assert code == 0, err
        return json.loads(out)

    table = describe("--table", "5", "--cost")
    names = [r["experiment"] for r in table["experiments"]]
    assert names == ["cub-v2", "cub-v2-nojcu", "cub-v2-g3", "cub-v2-3g3", "cub-v2-all256"]
    runs = [describe(name, "--cost")["cost"] for name in names]
    for key in ("steps", "images", "flops"):
        assert table["total"][key] == sum(r[key] for r in runs)
    assert table["total"]["gpu_hours"]["peak"]["hours"] == pytest.approx(
        sum(r["gpu_hours"]["modes"]["peak"]["hours"] for r in runs), rel=1e-12)


# -- the command line

def test_describe_without_cost_is_unchanged():
    code, out, _ = run_cli("describe", "synthetic-v2")
    assert code == 0 and out.splitlines()[0] == "synthetic-v2 (v2, dataset synthetic, profile embedded)"
    assert "cost" not in out and len(out.splitlines()) == 5


def test_describe_cost_prints_and_json_carries_it():
    code, out, _ = run_cli("describe", "synthetic-v1-s1", "--cost")
    assert code == 0 and "steps" in out and "FLOPs" in out and "lower bound" in out
    code, out, _ = run_cli("describe", "synthetic-v1-s1", "--cost", "--json")
    assert json.loads(out)["cost"]["steps"] == 600


@pytest.mark.parametrize("content", ["{not json", json.dumps({"schema": 2}), json.dumps([1, 2]),
                                     json.dumps({"schema": 1, "device": {"name": "x"}, "train": [{"mode": "fp32"}]})])
def test_bad_bench_file_is_one_line(tmp_path, content):
    bad = tmp_path / "bad.json"
    bad.write_text(content)
    assert str(bad) in one_line_error("describe", "synthetic-v2", "--cost", "--bench", str(bad))


def test_missing_bench_file_is_one_line(tmp_path):
    assert "cannot read bench file" in one_line_error("describe", "synthetic-v2", "--cost",
                                                      "--bench", str(tmp_path / "none.json"))


def test_experiment_and_table_exactly_one():
    assert "exactly one" in one_line_error("describe", "synthetic-v2", "--table", "5", "--cost")
    assert "exactly one" in one_line_error("describe", "--cost")
    assert "add --cost" in one_line_error("describe", "synthetic-v2", "--gpus", "2")
