"""IS and FID values through our compute path on feature extractors whose outputs are known
by construction, checked against values derived by hand."""

import math

import numpy as np
import pytest
import torch
from torch_fidelity import FeatureExtractorBase, register_feature_extractor
from torch_fidelity.registry import FEATURE_EXTRACTORS_REGISTRY

from stackgan.metrics.compute import compute
from stackgan.metrics.images import resize_uint8
from stackgan.metrics.protocols import Protocol
from stackgan.metrics.synthetic_classifier import SyntheticClassifier, save_classifier


class PixelFeatures(FeatureExtractorBase):
    """Features read straight off pixels, so every IS/FID input is chosen by the test."""

    def __init__(self, name, features_list, **kwargs):
        super().__init__(name, features_list)

    @staticmethod
    def get_provided_features_list():
        return "rgb", "logprob", "patch"

    @staticmethod
    def get_default_feature_layer_for_metric(metric):
        return {"isc": "logprob", "fid": "rgb"}[metric]

    def forward(self, x):
        rgb = x[:, :, 0, 0].double()
        out = {
            "rgb": rgb,
            # softmax(log(v / sum v)) = v / sum v: p(y|x) is the first pixel's colour proportions
            "logprob": (rgb / rgb.sum(1, keepdim=True)).log(),
            "patch": x[:, :, :4, :4].flatten(1).float() / 64.0,
        }
        return tuple(out[k] for k in self.features_list)


if "test-pixel" not in FEATURE_EXTRACTORS_REGISTRY:
    register_feature_extractor("test-pixel", PixelFeatures)


def pixel_protocol(metric, layer, num_samples=1000, splits=None, resize=None):
    return Protocol(f"{metric}-test-{layer}", metric, num_samples, splits, resize, "test-pixel", layer, None,
                    "test" if metric == "fid" else None)


def solid(colours, side=8):
    """uint8 (N,3,side,side) images, each filled with one RGB colour."""
    c = torch.tensor(colours, dtype=torch.uint8)
    return c[:, :, None, None].expand(-1, -1, side, side).contiguous()


def score(protocol, samples, **kw):
    return compute([protocol], samples, device="cpu", **kw)["metrics"][protocol.name]


def test_is_equals_hand_computed_value():
    # p(y|a) = (.5,.25,.25), p(y|b) = (.25,.5,.25); p(y) = (.375,.375,.25)
    # KL(a||p(y)) = KL(b||p(y)) = .5 ln(4/3) + .25 ln(2/3)  ->  IS = (4/3)^.5 * (2/3)^.25
    images = solid([(2, 1, 1), (1, 2, 1)])
    got = score(pixel_protocol("is", "logprob", splits=1), images)
    assert got["value"] == pytest.approx((4 / 3) ** 0.5 * (2 / 3) ** 0.25, rel=1e-12)
    assert got["std"] == 0.0


def test_is_of_identical_predictions_is_one_and_of_disjoint_classes_is_class_count():
    same = score(pixel_protocol("is", "logprob", splits=2), solid([(5, 3, 2)] * 6))
    assert same["value"] == pytest.approx(1.0, abs=1e-12)
    # near one-hot predictions spread evenly over 3 classes: p(y) uniform,
    # KL = (250/252) ln(3*250/252) + 2 (1/252) ln(3/252), close to ln 3
    onehot = solid([(250, 1, 1), (1, 250, 1), (1, 1, 250)] * 4)
    kl = 250 / 252 * math.log(750 / 252) + 2 / 252 * math.log(3 / 252)
    assert score(pixel_protocol("is", "logprob", splits=1), onehot)["value"] == pytest.approx(math.exp(kl), rel=1e-12)


def axis_points(mean, half_widths):
    """Points mean +- c_i e_i: sample mean = mean, unbiased cov = diag(2 c_i^2 / (2d - 1))."""
    pts = []
    for i, c in enumerate(half_widths):
        for sign in (1, -1):
            p = list(mean)
            p[i] += sign * c
            pts.append(p)
    return pts


def test_fid_equals_closed_form_for_diagonal_gaussians():
    # d=3, N=6: cov1 = diag(2*[100,400,900]/5) = diag(40,160,360), cov2 = diag(10,160,640)
    # FID = |m1-m2|^2 + sum (sqrt s1 - sqrt s2)^2 = 200 + (sqrt40-sqrt10)^2 + 0 + (sqrt360-sqrt640)^2
    #     = 200 + 10 + 40 = 250
    samples = solid(axis_points((100, 100, 100), (10, 20, 30)))
    reference = solid(axis_points((110, 90, 100), (5, 20, 40)))
    s1, s2 = np.array([40, 160, 360.0]), np.array([10, 160, 640.0])
    closed = 200 + float(np.sum((np.sqrt(s1) - np.sqrt(s2)) ** 2))
    assert closed == pytest.approx(250.0)
    got = score(pixel_protocol("fid", "rgb"), samples, reference=reference)
    assert got["value"] == pytest.approx(closed, rel=1e-9)
    assert got["std"] is None


def test_sample_count_caps_the_scored_images():
    images = solid([(2, 1, 1), (1, 2, 1), (1, 1, 2), (1, 1, 2)])
    out = compute([pixel_protocol("is", "logprob", num_samples=2, splits=1)], images, device="cpu")
    details = out["protocols"]["is-test-logprob"]
    assert details["num_samples"] == 2 and details["nominal_samples"] == 2
    assert out["metrics"]["is-test-logprob"]["value"] == pytest.approx((4 / 3) ** 0.5 * (2 / 3) ** 0.25)


def noise_images(n, side, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 3, side, side), generator=g, dtype=torch.uint8)


def test_is_star_scores_the_64px_resizes():
    big = noise_images(20, 128)
    small = resize_uint8(big, 64)
    starred = score(pixel_protocol("is", "patch", splits=2, resize=64), big)
    plain_small = score(pixel_protocol("is", "patch", splits=2), small)
    plain_big = score(pixel_protocol("is", "patch", splits=2), big)
    assert starred == plain_small
    assert starred["value"] != pytest.approx(plain_big["value"], rel=1e-6)


def test_resize_rule_is_close_to_pil_bilinear():
    from PIL import Image

    big = noise_images(2, 128, seed=3)
    ours = resize_uint8(big, 64).permute(0, 2, 3, 1).numpy().astype(int)
    pil = np.stack([np.asarray(Image.fromarray(im).resize((64, 64), Image.BILINEAR))
                    for im in big.permute(0, 2, 3, 1).numpy()]).astype(int)
    assert np.abs(ours - pil).max() <= 2


def test_fid_star_resizes_both_sides_and_plain_fid_resizes_reference_to_samples():
    samples, reference = noise_images(12, 32, seed=1), noise_images(12, 128, seed=2)
    star = compute([pixel_protocol("fid", "patch", resize=16)], samples, reference=reference, device="cpu")
    manual = compute([pixel_protocol("fid", "patch")], resize_uint8(samples, 16),
                     reference=resize_uint8(reference, 16), device="cpu")
    assert star["metrics"]["fid-test-patch"]["value"] == pytest.approx(
        manual["metrics"]["fid-test-patch"]["value"], rel=1e-9)
    plain = compute([pixel_protocol("fid", "patch")], samples, reference=reference, device="cpu")
    assert plain["protocols"]["fid-test-patch"]["reference"]["resized_to"] == [32, 32]
    at_gen_res = compute([pixel_protocol("fid", "patch")], samples, reference=resize_uint8(reference, 32),
                         device="cpu")
    assert plain["metrics"] == at_gen_res["metrics"]


def random_classifier(path, seed):
    torch.manual_seed(seed)
    net = SyntheticClassifier(num_classes=4, attr_sizes=[2, 3], width=4, feat_dim=8)
    for m in net.modules():  # non-trivial BatchNorm statistics so eval-mode features vary
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_var.uniform_(0.5, 2.0)
    return save_classifier(net.eval(), path)


def test_reference_cache_key_follows_the_weights(tmp_path):
    wa, wb = tmp_path / "a.pt", tmp_path / "b.pt"
    sha_a, sha_b = random_classifier(wa, 0), random_classifier(wb, 1)
    assert sha_a != sha_b
    samples, reference = noise_images(16, 32, seed=4), noise_images(16, 32, seed=5)
    cache = tmp_path / "cache"

    def fid(weights):
        out = compute(["fid16_synthetic-clf_test"], samples, reference=reference, weights=weights,
                      cache_dir=cache, device="cpu")
        return out["metrics"]["fid16_synthetic-clf_test"]["value"], out["protocols"]["fid16_synthetic-clf_test"]

    value_a, details_a = fid(wa)
    value_b, details_b = fid(wb)
    assert details_a["weights_sha256"] == sha_a and details_b["weights_sha256"] == sha_b
    assert details_a["reference"]["cache_name"] != details_b["reference"]["cache_name"]
    assert value_a != pytest.approx(value_b, rel=1e-6)
    stats = sorted(p.name for p in cache.iterdir())
    assert len(stats) == 2 and all("-stat-fid-feat" in s for s in stats)  # features are not kept
    # a hit must give the same value as the first computation, and no new cache entry
    assert fid(wa)[0] == pytest.approx(value_a, rel=1e-12)
    assert sorted(p.name for p in cache.iterdir()) == stats
    # another reference content -> another key
    other = compute(["fid16_synthetic-clf_test"], samples, reference=noise_images(16, 32, seed=6),
                    weights=wa, cache_dir=cache, device="cpu")
    assert other["protocols"]["fid16_synthetic-clf_test"]["reference"]["cache_name"] != \
        details_a["reference"]["cache_name"]


def test_batch_size_does_not_change_scores(tmp_path):
    weights = tmp_path / "clf.pt"
    random_classifier(weights, 2)
    samples, reference = noise_images(20, 48, seed=7), noise_images(20, 48, seed=8)
    names = ["is20_synthetic-clf", "fid20_synthetic-clf_test"]
    a = compute(names, samples, reference=reference, weights=weights, batch_size=3, device="cpu")
    b = compute(names, samples, reference=reference, weights=weights, batch_size=20, device="cpu")
    for name in names:
        assert a["metrics"][name]["value"] == pytest.approx(b["metrics"][name]["value"], rel=1e-5)
    assert math.isfinite(a["metrics"]["is20_synthetic-clf"]["value"])
