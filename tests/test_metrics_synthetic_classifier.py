import json

import numpy as np
import pytest
import torch

from stackgan.data import cub, synthetic
from stackgan.errors import UserError
from stackgan.hashing import sha256_file
from stackgan.metrics.compute import compute
from stackgan.metrics.synthetic_classifier import (
    SyntheticClassifierExtractor,
    capacc,
    load_classifier,
    save_classifier,
    train_classifier,
    train_synthetic_classifier,
)

COLOURS = np.array([(220, 40, 40), (40, 200, 60), (50, 70, 230)], dtype=np.uint8)
ATTR_SIZES = [2, 3, 2]  # shape (square, disc), colour, position (left, right)


def paint(shape, colour, position, rng, side=48):
    """One image: a shape of a colour on the left or right half of a noisy grey background."""
    img = rng.integers(90, 130, size=(side, side, 3)).astype(np.uint8)
    r = side // 6 + int(rng.integers(0, 3))
    cx = (side // 4 if position == 0 else 3 * side // 4) + int(rng.integers(-2, 3))
    cy = side // 2 + int(rng.integers(-6, 7))
    yy, xx = np.mgrid[:side, :side]
    if shape == 0:
        mask = (abs(xx - cx) <= r) & (abs(yy - cy) <= r)
    else:
        mask = (xx - cx) ** 2 + (yy - cy) ** 2 <= r * r
    img[mask] = COLOURS[colour]
    return img


def make_set(n, seed):
    rng = np.random.default_rng(seed)
    attrs = np.stack([rng.integers(0, k, size=n) for k in ATTR_SIZES], 1)
    images = [paint(*a, rng) for a in attrs]
    class_ids = attrs[:, 1] * 2 + attrs[:, 0]  # colour x shape
    return images, class_ids, attrs


@pytest.fixture(scope="module")
def trained():
    images, class_ids, attrs = make_set(480, seed=0)
    return train_classifier(images, class_ids, attrs, ATTR_SIZES, num_classes=6, steps=90, seed=0,
                            attr_names=["shape", "colour", "position"])


def test_classifier_learns_every_head(trained):
    _, report = trained
    acc = report["heldout_accuracy"]
    assert report["heldout_size"] == 72
    # chance: class 1/6, shape 1/2, colour 1/3, position 1/2
    assert acc["class"] > 0.8 and acc["shape"] > 0.8 and acc["colour"] > 0.9 and acc["position"] > 0.9


def test_training_is_deterministic():
    images, class_ids, attrs = make_set(64, seed=1)
    runs = [train_classifier(images, class_ids, attrs, ATTR_SIZES, 6, steps=3, seed=5, batch_size=16)
            for _ in range(2)]
    for (a, _), (b, _) in zip(runs, runs[1:]):
        for ta, tb in zip(a.state_dict().values(), b.state_dict().values()):
            assert torch.equal(ta, tb)


def test_save_load_roundtrip_and_capacc(trained, tmp_path):
    model, _ = trained
    path = tmp_path / "clf" / "synthetic-clf.pt"
    sha = save_classifier(model, path)
    assert sha == sha256_file(path) and len(sha) == 64
    loaded = load_classifier(path)
    images, _, attrs = make_set(60, seed=2)
    x = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).contiguous()
    with torch.no_grad():
        assert torch.equal(model(x)[1], loaded(x)[1])

    true = capacc(loaded, images, attrs)
    assert true["value"] > 0.85 and len(true["per_attribute"]) == 3
    # captions that contradict every image's colour: that attribute drops to 0
    wrong = attrs.copy()
    wrong[:, 1] = (wrong[:, 1] + 1) % 3
    contradicted = capacc(loaded, images, wrong)
    assert contradicted["per_attribute"][1] == 0.0
    assert contradicted["value"] == pytest.approx(np.mean(contradicted["per_attribute"]))
    # an attribute the caption leaves unstated (-1) is not scored
    unstated = attrs.copy()
    unstated[:, 2] = -1
    assert capacc(loaded, images, unstated)["per_attribute"][2] is None

    via_compute = compute(["capacc_synthetic"], images, weights=path, attributes=attrs, device="cpu")
    assert via_compute["metrics"]["capacc_synthetic"]["value"] == pytest.approx(true["value"])
    assert via_compute["protocols"]["capacc_synthetic"]["weights_sha256"] == sha


def test_is_of_real_images_beats_is_of_one_class(trained, tmp_path):
    model, _ = trained
    path = tmp_path / "synthetic-clf.pt"
    save_classifier(model, path)
    images, class_ids, _ = make_set(120, seed=3)
    varied = compute(["is120_synthetic-clf"], images, weights=path, device="cpu")["metrics"]["is120_synthetic-clf"]
    one_class = [im for im, c in zip(images, class_ids) if c == 0][:20]
    collapsed = compute(["is20_synthetic-clf"], one_class, weights=path, device="cpu")["metrics"]["is20_synthetic-clf"]
    assert varied["value"] > 3.0 > collapsed["value"]


def test_extractor_without_weights_is_a_user_error():
    with pytest.raises(UserError, match="synthetic-clf.pt"):
        SyntheticClassifierExtractor("synthetic-clf", ["feat"])


def test_mismatched_training_data_is_a_user_error():
    images, class_ids, attrs = make_set(8, seed=4)
    with pytest.raises(UserError, match="disagree"):
        train_classifier(images, class_ids[:5], attrs, ATTR_SIZES, 6, steps=1)


def test_classifier_stage_trains_on_every_prepared_image(tmp_path):
    raw = synthetic.generate(tmp_path / "raw", num_images=60)
    cub.prepare(raw, tmp_path / "prepared", {"short76": {"mode": "short", "size": 76, "resample": "bilinear"}})
    recipe = {"view": "short76", "size": 64, "steps": 4, "seed": 3}
    report = train_synthetic_classifier({"name": "synthetic", "prepared_dir": tmp_path / "prepared"}, recipe,
                                        tmp_path / "clf")
    assert (report["num_images"], report["train_size"], report["heldout_size"]) == (60, 51, 9)  # train + test
    assert report["recipe"] == recipe and report["weights_sha256"] == sha256_file(tmp_path / "clf/synthetic-clf.pt")
    assert json.loads((tmp_path / "clf/report.json").read_text()) == report
    # Pinned (the images, their order, the seeds): a change here changes every synthetic IS/FID/CapAcc.
    model = load_classifier(tmp_path / "clf/synthetic-clf.pt")
    assert model.class_head.weight[0, :4].tolist() == pytest.approx(
        [-0.06713592, -0.01919675, -0.00996000, -0.05725564], abs=1e-5)
    assert report["final_loss"] == pytest.approx(6.7609301, abs=1e-4)
