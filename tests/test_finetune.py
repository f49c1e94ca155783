"""The CUB/Oxford classifier stage on a tiny CUB-layout dataset and a random-weights Inception:
the written file is what the `inception-v3-ft` extractor loads, and offline it names the file."""

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from inception_fixture import write_random_inception
from stackgan.data import cub, synthetic
from stackgan.data.heldout import split_heldout
from stackgan.errors import UserError
from stackgan.hashing import sha256_file
from stackgan.metrics import weights as weights_lookup
from stackgan.metrics.compute import score_folder
from stackgan.metrics.finetune import WeightEMA, finetune_inception

VIEW = "short40"
# 75 px is the smallest input Inception-v3 accepts; scoring still runs at 299.
TINY = {"view": VIEW, "crop": 32, "input_size": 75, "steps": 2, "batch_size": 4, "eval_batch_size": 8,
        "heldout_fraction": 0.2}


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    root = tmp_path_factory.mktemp("ft")
    raw = synthetic.generate(root / "raw", num_images=60)
    cub.prepare(raw, root / "prepared", {VIEW: {"mode": "short", "size": 40, "resample": "bilinear"}})
    return {"name": "cub", "prepared_dir": str(root / "prepared")}


@pytest.fixture(scope="module")
def imagenet_weights(tmp_path_factory):
    return write_random_inception(tmp_path_factory.mktemp("init") / "random.pth", seed=0)


def test_split_heldout_keeps_each_class_on_both_sides():
    class_ids = np.array([7, 7, 7, 3, 3, 3, 3, 9])
    train, heldout = split_heldout(class_ids, 0.5, seed=0)
    assert sorted(np.concatenate([train, heldout]).tolist()) == list(range(8))
    # round(0.5*3) = 2, round(0.5*4) = 2, a single-image class stays in training
    assert sorted(class_ids[heldout].tolist()) == [3, 3, 7, 7]
    train, heldout = split_heldout(class_ids, 0.1, seed=0)
    assert sorted(class_ids[heldout].tolist()) == [3, 7]  # at least one per class of >= 2 images
    # never a whole class; fraction 0 holds nothing out (and still gives integer indices)
    assert sorted(class_ids[split_heldout(class_ids, 0.9, seed=0)[1]].tolist()) == [3, 3, 3, 7, 7]
    train, heldout = split_heldout(class_ids, 0.0, seed=0)
    assert train.tolist() == list(range(8)) and heldout.dtype == np.int64 and len(heldout) == 0


def test_weight_ema_follows_tf_warmup():
    net = nn.Linear(1, 1, bias=False)
    nn.init.constant_(net.weight, 1.0)
    ema = WeightEMA(net, decay=0.9999)
    nn.init.constant_(net.weight, 3.0)
    ema.update(net, step=0)  # decay min(0.9999, 1/10) = 0.1 -> 0.1*1 + 0.9*3
    assert ema.state["weight"].item() == pytest.approx(2.8)
    ema.update(net, step=90)  # decay 91/100 -> 0.91*2.8 + 0.09*3
    assert ema.state["weight"].item() == pytest.approx(2.818)


def test_finetune_writes_the_inception_v3_ft_format(prepared, imagenet_weights, tmp_path):
    out = tmp_path / "clf"
    report = finetune_inception(prepared, TINY, out, device="cpu", init_weights=imagenet_weights)
    state = torch.load(out / "cub-ft.pth", weights_only=True)
    init = torch.load(imagenet_weights, weights_only=True)
    assert set(state) == set(init)
    assert state["fc.weight"].shape == (5, 2048) and state["fc.bias"].shape == (5,)  # 5 test classes
    assert all(v.device.type == "cpu" for v in state.values())
    # the backbone was trained, not only the new class layer
    assert not torch.equal(state["Mixed_7c.branch_pool.conv.weight"], init["Mixed_7c.branch_pool.conv.weight"])
    assert report["weights_sha256"] == sha256_file(out / "cub-ft.pth")
    assert report["num_classes"] == 5 and report["heldout_images"] == 5 and report["train_images"] == 10
    assert report["heldout_top1"] in {i / 5 for i in range(6)}
    assert report["classes"][0]["name"].startswith("001.")
    assert (out / "report.json").is_file()

    images = tmp_path / "images"
    images.mkdir()
    rng = np.random.default_rng(0)
    for i in range(10):  # is30k_cub-ft scores 10 splits: one image each
        Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(images / f"{i:06d}.png")
    scored = score_folder(images, "is30k_cub-ft", extractor_weights=out / "cub-ft.pth", device="cpu")
    assert 1.0 <= scored["value"] <= 5.0  # IS is bounded by the class count
    assert scored["details"]["weights_sha256"] == report["weights_sha256"]


def test_offline_without_imagenet_weights_names_the_file(prepared, tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty-torch-home"))
    with pytest.raises(UserError) as err:
        finetune_inception(prepared, TINY, tmp_path / "clf", device="cpu")
    message = str(err.value)
    assert weights_lookup.INCEPTION_FILE in message
    assert str(tmp_path / "empty-torch-home" / "hub" / "checkpoints") in message
    assert not (tmp_path / "clf").exists()
