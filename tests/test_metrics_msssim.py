"""MS-SSIM (StackGAN++ section 6.1): parity with pytorch-msssim, a hand-computed value, the
within-class pair protocol and its wiring into the metrics files."""

import json

import numpy as np
import pytest
import pytorch_msssim
import torch
from PIL import Image

from stackgan.errors import UserError
from stackgan.metrics.compute import evaluate_samples
from stackgan.metrics.msssim import K1, MIN_SIDE, SCALE_WEIGHTS, draw_pairs, mean_ms_ssim, ms_ssim
from stackgan.metrics.protocols import get_protocol


@pytest.mark.parametrize("shape", [(3, 3, 161, 161), (2, 3, 256, 256), (2, 3, 200, 173), (2, 1, 190, 240)])
def test_matches_pytorch_msssim(shape):
    gen = torch.Generator().manual_seed(sum(shape))
    x = torch.randint(0, 256, shape, generator=gen).float()
    noise = torch.randn(shape, generator=gen) * torch.linspace(5, 80, shape[0]).view(-1, 1, 1, 1)
    y = (x + noise).clamp(0, 255)
    ours = ms_ssim(x, y)
    theirs = pytorch_msssim.ms_ssim(x, y, data_range=255, size_average=False).double()
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-6)
    assert ours[0] > ours[-1]  # more noise, less similar


def test_constant_images_have_the_hand_computed_value():
    # No variance anywhere: every contrast-structure term is (0 + C2) / (0 + C2) = 1, so only the
    # coarsest scale's luminance term (2ab + C1) / (a^2 + b^2 + C1) remains, to the power 0.1333.
    a, b, c1 = 100.0, 150.0, (K1 * 255) ** 2
    x, y = torch.full((1, 3, 176, 176), a), torch.full((1, 3, 176, 176), b)
    expected = ((2 * a * b + c1) / (a * a + b * b + c1)) ** SCALE_WEIGHTS[-1]
    assert ms_ssim(x, y).item() == pytest.approx(expected, rel=1e-12)
    assert ms_ssim(x, x).item() == pytest.approx(1.0, abs=1e-12)


def test_images_below_five_scales_are_refused():
    x = torch.zeros(1, 3, MIN_SIDE - 1, 256)
    with pytest.raises(UserError, match=f"at least {MIN_SIDE}x{MIN_SIDE} px, got 160x256"):
        ms_ssim(x, x)


def test_pairs_are_two_different_images_of_one_class_and_fixed():
    class_ids = np.array([0, 0, 0, 1, 1, 2, 3, 3, 3, 3])
    groups = draw_pairs(class_ids, 50, "class")
    assert len(groups) == 3  # class 2 has one image: no pair
    for pairs in groups:
        assert pairs.shape == (50, 2) and (pairs[:, 0] != pairs[:, 1]).all()
        assert len(set(class_ids[pairs.ravel()])) == 1
    assert all((a == b).all() for a, b in zip(groups, draw_pairs(class_ids, 50, "class")))
    (whole,) = draw_pairs(class_ids, 40, "all")
    assert whole.shape == (40, 2) and len(set(class_ids[whole.ravel()])) > 1
    with pytest.raises(UserError, match="at least two images"):
        draw_pairs([0, 1, 2], 5, "class")


def test_within_class_mean_and_spread():
    gen = torch.Generator().manual_seed(0)
    twins = torch.randint(0, 256, (1, 3, 176, 176), generator=gen, dtype=torch.uint8).expand(2, -1, -1, -1)
    strangers = torch.randint(0, 256, (2, 3, 176, 176), generator=gen, dtype=torch.uint8)
    images = torch.cat([twins, strangers])
    scores = mean_ms_ssim(images, [0, 0, 1, 1], pairs=3, scope="class", batch_size=2)
    stranger = ms_ssim(strangers[:1].float(), strangers[1:].float()).item()
    assert scores["groups"] == 2 and scores["pairs"] == 6
    assert scores["value"] == pytest.approx((1.0 + stranger) / 2)
    assert scores["std"] == pytest.approx((1.0 - stranger) / 2)


def test_protocol_names():
    p = get_protocol("msssim100_class")
    assert (p.metric, p.pairs, p.pair_scope, p.model) == ("msssim", 100, "class", None)
    assert get_protocol("msssim500_all").pair_scope == "all"
    for bad in ("msssim_class", "msssim100_pairs", "msssim0_all"):
        with pytest.raises(UserError, match="msssim<pairs>_class"):
            get_protocol(bad)


def test_metrics_file_entry_from_a_sample_folder(tmp_path):
    rng = np.random.default_rng(0)
    base = rng.integers(0, 256, (176, 176, 3), dtype=np.uint8)
    items = []
    for i, cls in enumerate([4, 4, 9, 9]):
        image = base if cls == 4 else rng.integers(0, 256, (176, 176, 3), dtype=np.uint8)
        Image.fromarray(image).save(tmp_path / f"{i:06d}.png")
        items.append({"file": f"{i:06d}.png", "class_id": cls})
    (tmp_path / "samples.json").write_text(json.dumps({"seed": 100, "items": items}))
    result = evaluate_samples(tmp_path, ["msssim10_class"], device="cpu")
    details = result["protocols"]["msssim10_class"]
    assert (details["groups"], details["pairs_scored"], details["resolution"]) == (2, 20, [176, 176])
    assert 0.5 < result["metrics"]["msssim10_class"]["value"] < 0.6  # class 4: identical; class 9: ~0.1
    items[0]["class_id"] = None
    (tmp_path / "samples.json").write_text(json.dumps({"seed": 100, "items": items}))
    with pytest.raises(UserError, match="needs each image's class id"):
        evaluate_samples(tmp_path, ["msssim10_class"], device="cpu")
    assert evaluate_samples(tmp_path, ["msssim10_all"], device="cpu")["protocols"]["msssim10_all"]["groups"] == 1
