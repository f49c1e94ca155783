"""Training really learns the captions: caption-attribute accuracy of generated images rises.

Slow tier (a few CPU minutes): `pytest --runslow tests/test_conditioning.py`. Each model is
trained for a few hundred steps at the embedded widths and compared with the same model after
one step, both scored by the synthetic classifier on the test captions (unseen classes).
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
CHANCE = (1 / 4 + 1 / 5 + 1 / 2 + 1 / 3 + 1 / 4) / 5  # shape, colour, size, position, background


def cli(cwd, *args):
    env = dict(os.environ, OMP_NUM_THREADS="2")
    proc = subprocess.run([sys.executable, "-m", "stackgan.cli", *args], cwd=cwd, env=env,
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


def project(root, steps):
    """A scratch project on the embedded profile with every run shortened to `steps`."""
    root.mkdir(parents=True, exist_ok=True)
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["datasets"]["synthetic"]["num_images"] = 1200
    for fam in ("v1", "v2"):
        params["profiles"]["embedded"]["overrides"][fam] = {
            "train": {"max_steps": steps, "checkpoint_every": 10_000, "grid_every": 10_000},
            "eval": {"num_samples": 600}}
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    return root


def capacc(root, name):
    return json.loads((root / f"results/metrics/embedded/{name}.json").read_text())["metrics"]["capacc_synthetic"]["value"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    base = tmp_path_factory.mktemp("conditioning")
    out = {}
    for label, steps in (("start", 1), ("trained", 400)):
        root = project(base / label, steps)
        if label == "start":
            cli(root, "fetch", "synthetic")
            cli(root, "prepare", "synthetic")
            cli(root, "classifier", "synthetic", "--out", "runs/embedded/classifiers/synthetic")
            cli(root, "refstats", "synthetic")
        else:
            for sub in ("data", "runs"):
                (root / sub).mkdir(exist_ok=True)
            (root / "data/raw").symlink_to(base / "start/data/raw")
            (root / "data/prepared").symlink_to(base / "start/data/prepared")
            (root / "runs/embedded").mkdir()
            (root / "runs/embedded/classifiers").symlink_to(base / "start/runs/embedded/classifiers")
            (root / "runs/embedded/refstats").symlink_to(base / "start/runs/embedded/refstats")
        for name in ("synthetic-v2", "synthetic-v1-s1", "synthetic-v1"):
            cli(root, "train", name)
        for name in ("synthetic-v2", "synthetic-v1"):
            cli(root, "sample", name)
            cli(root, "evaluate", name)
        out[label] = root
    return out


@pytest.mark.slow
@pytest.mark.parametrize("name", ["synthetic-v2", "synthetic-v1"])
def test_generated_images_follow_their_captions_after_training(runs, name):
    start, trained = capacc(runs["start"], name), capacc(runs["trained"], name)
    print(f"{name}: capacc after 1 step {start:.3f}, trained {trained:.3f}, chance {CHANCE:.3f}")
    assert trained > start + 0.1
    assert trained > CHANCE + 0.1
