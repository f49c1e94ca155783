"""The command line: resolved configs, and one-line errors (never a traceback) for bad input."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def stackgan(*args, cwd=REPO):
    return subprocess.run([sys.executable, "-m", "stackgan.cli", *args], cwd=cwd, capture_output=True, text=True)


def one_line_error(proc):
    assert proc.returncode == 2, proc.stdout + proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("stackgan: error: "), proc.stderr
    assert "Traceback" not in proc.stderr
    return lines[0]


@pytest.mark.subprocess
def test_describe_json_prints_resolved_config_and_counts():
    proc = stackgan("describe", "synthetic-v2", "--json")
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["config"]["name"] == "synthetic-v2" and out["config"]["profile"] == "embedded"
    assert out["config"]["paths"]["metrics"] == "results/metrics/embedded/synthetic-v2.json"
    assert set(out["parameters"]) == {"G", "D16", "D32", "D64"}
    assert all(isinstance(n, int) and n > 0 for n in out["parameters"].values())


@pytest.mark.subprocess
@pytest.mark.parametrize("name,nets", [("cub-v2", {"G", "D64", "D128", "D256"}), ("cub-v1", {"G2", "D2"}),
                                       ("cub-v1-s1-64", {"G1", "D1"}), ("cub-v2-3g3", {"G", "D256", "D256b", "D256c"})])
def test_describe_paper_experiments(name, nets):
    proc = stackgan("describe", name, "--json")
    assert proc.returncode == 0, proc.stderr
    assert set(json.loads(proc.stdout)["parameters"]) == nets


@pytest.mark.subprocess
def test_cub_v2_counts_are_the_reference_counts():
    counts = json.loads(stackgan("describe", "cub-v2", "--json").stdout)["parameters"]
    assert counts == {"G": 21_239_696, "D64": 5_723_906, "D128": 18_834_178, "D256": 71_269_122}


@pytest.mark.subprocess
def test_profile_changes_output_roots():
    cfg = json.loads(stackgan("--profile", "ci", "describe", "synthetic-v2", "--json").stdout)["config"]
    assert cfg["paths"]["run"] == "runs/ci/synthetic-v2"
    assert cfg["data"]["prepared_dir"] == "data/prepared/ci/synthetic"


def test_every_harness_experiment_exists():
    from stackgan.config import experiment_config, load_params
    from stackgan.methods import parameter_counts

    names = ["cub-v1-s1-64-noca", "cub-v1-s1-64", "cub-v1-s1-256-noca", "cub-v1-s1-256", "cub-v1-128-once",
             "cub-v1-128-noca", "cub-v1-128", "cub-v1-once", "cub-v1-noca", "cub-v1", "cub-v2", "cub-v2-nojcu",
             "cub-v2-g3", "cub-v2-3g3", "cub-v2-all256", "imagenet-dog-v2-nocolor", "cifar10-dcgan-adv",
             "cifar10-dcgan-adv-ent", "cifar10-dcgan-adv-cond", "cifar10-dcgan-adv-cond-ent", "cifar10-sgan-nojoint",
             "cifar10-sgan", "mnist-sgan", "svhn-sgan", "synthetic-v1", "synthetic-v2", "synthetic-sgan"]
    names += [f"{d}-{m}" for d in ("cub", "oxford102", "coco", "lsun-bedroom", "lsun-church", "imagenet-dog",
                                   "imagenet-cat") for m in ("v1", "v2")]
    params = load_params(REPO / "params.yaml")
    for name in names:
        cfg = experiment_config(params, name, "paper")
        assert cfg["paths"]["run"] == f"runs/paper/{name}"
        if cfg["family"] != "sgan":  # SGAN builds need the encoder stage's output
            assert all(n > 0 for n in parameter_counts(cfg).values()), name


@pytest.mark.subprocess
def test_unknown_experiment_is_one_line_with_suggestion():
    line = one_line_error(stackgan("describe", "cub-v3"))
    assert "unknown experiment 'cub-v3'" in line and "cub-v2" in line


@pytest.mark.subprocess
def test_malformed_params_is_one_line(tmp_path):
    bad = tmp_path / "params.yaml"
    bad.write_text("profile: embedded\nexperiments: [unclosed\n")
    line = one_line_error(stackgan("--params", str(bad), "describe", "synthetic-v2"))
    assert "not valid YAML" in line and "line" in line
    bad.write_text("profile: embedded\n")
    assert "top-level" in one_line_error(stackgan("--params", str(bad), "describe", "synthetic-v2"))


@pytest.mark.subprocess
def test_missing_dataset_says_what_to_download_and_where(tmp_path):
    line = one_line_error(stackgan("--params", str(REPO / "params.yaml"), "prepare", "cub", cwd=tmp_path))
    assert "stackgan fetch cub" in line
    line = one_line_error(stackgan("--params", str(REPO / "params.yaml"), "train", "synthetic-v2", cwd=tmp_path))
    assert "data/prepared/embedded/synthetic" in line and "stackgan prepare synthetic" in line


@pytest.mark.subprocess
def test_train_dry_run_prints_config_without_training(tmp_path):
    proc = stackgan("--params", str(REPO / "params.yaml"), "train", "cub-v2", "--dry-run", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["branch_sizes"] == [64, 128, 256]
    assert not (tmp_path / "runs").exists()


@pytest.mark.subprocess
def test_offline_paper_protocol_names_the_weights_file_to_place(tmp_path):
    from PIL import Image

    (tmp_path / "imgs").mkdir()
    for i in range(10):
        Image.new("RGB", (32, 32), (i * 20, 0, 0)).save(tmp_path / "imgs" / f"{i}.png")
    env_home = tmp_path / "torch-home"
    proc = subprocess.run([sys.executable, "-m", "stackgan.cli", "score", str(tmp_path / "imgs"),
                           "--protocol", "is30k_imagenet"], cwd=tmp_path, capture_output=True, text=True,
                          env={**__import__("os").environ, "TORCH_HOME": str(env_home)})
    line = one_line_error(proc)
    assert "weights-inception-2015-12-05-6726825d.pth" in line and str(env_home / "hub" / "checkpoints") in line


def test_every_device_flag_defaults_to_auto_with_the_same_choices():
    import argparse

    from stackgan import devices
    from stackgan.cli import build_parser

    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    flags = {name: action for name, parser in sub.choices.items() for action in parser._actions
             if "--device" in action.option_strings}
    assert set(flags) == {"train", "sample", "classifier", "refstats", "encoder", "evaluate", "evaluate-real", "score",
                          "curves", "figures"}
    for name, action in flags.items():
        assert action.default == "auto" and tuple(action.choices) == devices.CHOICES, name


def test_training_on_cuda_without_cuda_is_a_user_error():
    import torch

    from stackgan import distributed
    from stackgan.errors import UserError

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(UserError, match="no CUDA"):
        distributed.setup("cuda")
    assert distributed.setup("auto").device == torch.device("cpu")
