"""The authors' IS (StackGAN-inception-model inception_score.py, the `*-inc` rulers): their
preprocessing, their grayscale quirk, their batch/drop/split rules with our seeded shuffle."""

import dataclasses
import json
import math
import subprocess
import sys

import numpy as np
import PIL
import pytest
import torch
from PIL import Image
from torch_fidelity import FeatureExtractorBase, register_feature_extractor
from torch_fidelity.registry import FEATURE_EXTRACTORS_REGISTRY

from stackgan import cli
from stackgan.atomic import torch_save
from stackgan.errors import UserError
from stackgan.metrics import authors_is, rulers
from stackgan.metrics.compute import compute
from stackgan.metrics.images import FolderImages, ScoredView, TensorImages
from stackgan.metrics.slim_inception import SlimInceptionNet, SlimInceptionV3

# p(y|x) of three kinds of image; A and B half and half give IS = (4/3)^.5 (2/3)^.25:
# p(y) = (.375, .375, .25), KL(A||p(y)) = KL(B||p(y)) = .5 ln(4/3) + .25 ln(2/3).
A, B, C = (2, 1, 1), (1, 2, 1), (1, 1, 250)
IS_AB = (4 / 3) ** 0.5 * (2 / 3) ** 0.25


class PixelProbs(FeatureExtractorBase):
    """Log class probabilities read off the first pixel's colour proportions (softmax gives them back)."""

    def __init__(self, name, features_list, **kwargs):
        super().__init__(name, features_list)

    @staticmethod
    def get_provided_features_list():
        return ("logprob",)

    @staticmethod
    def get_default_feature_layer_for_metric(metric):
        return "logprob"

    def forward(self, x):
        rgb = x[:, :, 0, 0].double()
        return ((rgb / rgb.sum(1, keepdim=True)).log(),)


if "test-pixel-probs" not in FEATURE_EXTRACTORS_REGISTRY:
    register_feature_extractor("test-pixel-probs", PixelProbs)


def solid(colours, side=2):
    c = torch.tensor(colours, dtype=torch.uint8)
    return c[:, :, None, None].expand(-1, -1, side, side).contiguous()


def authors_score(colours, splits, seed=authors_is.SHUFFLE_SEED):
    net = PixelProbs("test-pixel-probs", ["logprob"])
    return authors_is.inception_score(ScoredView(TensorImages(solid(colours))), net, "logprob", splits, cuda=False,
                                      seed=seed)


def noise(h, w, seed, channels=3):
    shape = (h, w, channels) if channels > 1 else (h, w)
    return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)


# -- preprocessing

@pytest.fixture(scope="module")
def slim_weights(tmp_path_factory):
    """Random weights in the converter's format (a plain state dict of the slim network)."""
    gen = torch.Generator().manual_seed(0)
    with torch.random.fork_rng(devices=[]):
        net = SlimInceptionNet(51)
    state = {}
    for name, t in net.state_dict().items():
        if t.dim() == 4:  # He-normal convs keep activations O(1) through the depth
            t = torch.randn(t.shape, generator=gen) * (2.0 / t[0].numel()) ** 0.5
        elif name.endswith("moving_variance"):
            t = torch.rand(t.shape, generator=gen) * 1.5 + 0.5
        elif name.endswith(("moving_mean", "beta")):
            t = torch.randn(t.shape, generator=gen) * 0.1
        elif name == "logits.weight":
            t = torch.randn(t.shape, generator=gen) / 2048 ** 0.5
        state[name] = t.float().contiguous()
    path = tmp_path_factory.mktemp("slim") / "cub-inc.pth"
    torch_save(state, path)
    return path


class Recorder(torch.nn.Module):
    """Stands in for the slim network: keeps what the extractor feeds it."""

    def forward(self, x):
        self.seen = x
        return torch.zeros(len(x), 2048), torch.zeros(len(x), 51)


@pytest.mark.parametrize("h,w", [(37, 53), (256, 256), (299, 299)])
def test_preprocessing_equals_pil_bilinear_on_uint8_then_their_scaling(h, w, slim_weights):
    hwc = noise(h, w, seed=h)
    theirs = np.asarray(Image.fromarray(hwc).resize((299, 299), Image.BILINEAR)).astype(np.float32) / 127.5 - 1.0
    ours = authors_is.preprocess(torch.from_numpy(hwc).permute(2, 0, 1).contiguous())
    assert ours.dtype == torch.uint8 and ours.shape == (3, 299, 299)
    extractor = SlimInceptionV3("inception-v3-slim", ["logits"], feature_extractor_weights_path=slim_weights)
    extractor.net = Recorder()
    extractor(ours[None])
    assert extractor.net.seen.dtype == torch.float32
    assert torch.equal(extractor.net.seen[0], torch.from_numpy(theirs).permute(2, 0, 1))


def test_single_channel_file_is_filled_as_numpy_resize_does(tmp_path):
    gray, rgb = noise(20, 30, 1, channels=1), noise(20, 30, 2)
    flat_rgb = np.repeat(noise(20, 30, 3, channels=1)[..., None], 3, 2)
    Image.fromarray(gray).save(tmp_path / "a.png")  # mode L
    Image.fromarray(rgb).save(tmp_path / "b.png")
    Image.fromarray(flat_rgb).save(tmp_path / "c.png")  # grey content in an RGB file: not single-channel
    folder = FolderImages(tmp_path)
    assert folder.single_channel == [True, False, False]
    view = ScoredView(folder, preprocessing=rulers.AUTHORS)

    def pil(hwc):
        return torch.from_numpy(np.array(Image.fromarray(hwc).resize((299, 299), Image.BILINEAR))).permute(2, 0, 1)

    # their scipy.misc.imread gives (20, 30); np.resize repeats its pixels to fill (20, 30, 3)
    assert torch.equal(view[0], pil(np.resize(gray, (20, 30, 3))))
    assert not torch.equal(view[0], pil(np.repeat(gray[..., None], 3, 2)))  # not grey copied to 3 channels
    assert torch.equal(view[1], pil(rgb)) and torch.equal(view[2], pil(flat_rgb))


# -- batches, drop, splits, seed

def test_split_bounds_and_their_kl_on_hand_made_rows():
    assert authors_is.split_bounds(130, 10)[:3] == [(0, 13), (13, 26), (26, 39)]
    assert authors_is.split_bounds(64, 10) == [(0, 6), (6, 12), (12, 19), (19, 25), (25, 32), (32, 38), (38, 44),
                                               (44, 51), (51, 57), (57, 64)]
    pa, pb = np.array([0.5, 0.25, 0.25]), np.array([0.25, 0.5, 0.25])
    assert authors_is.score(np.stack([pa, pb, pa, pb]), 1) == pytest.approx((IS_AB, 0.0), rel=1e-12)
    assert authors_is.score(np.stack([pa, pa, pb, pb]), 2) == pytest.approx((1.0, 0.0), abs=1e-12)
    # 3 rows, 2 splits: [0, 1) scores 1, [1, 3) scores IS_AB; np.std has ddof 0
    mean, std = authors_is.score(np.stack([pa, pa, pb]), 2)
    assert (mean, std) == pytest.approx(((1 + IS_AB) / 2, (IS_AB - 1) / 2), rel=1e-12)


def test_whole_batches_of_64_hand_computed():
    got = authors_score([A, B] * 64, splits=1)
    assert got[0] == pytest.approx(IS_AB, rel=1e-12) and got[1] == 0.0
    details = got[2]
    assert (details["batch_size"], details["num_scored"], details["dropped"]) == (64, 128, 0)
    assert details["split_bounds"] == [[0, 128]] and details["shuffle_seed"] == authors_is.SHUFFLE_SEED
    assert details["pillow"] == PIL.__version__
    assert authors_score([A] * 64, splits=10)[:2] == pytest.approx((1.0, 0.0), abs=1e-12)


def kinds_with_c_where_dropped(seed, n=130):
    """A/B images, and C at the 2 indices the seeded shuffle leaves after the last whole batch."""
    order = np.random.default_rng(seed).permutation(n)
    kinds = [None] * n
    for j, i in enumerate(order[:128]):
        kinds[i] = A if j % 2 else B  # 64 A + 64 B among the kept
    for i in order[128:]:
        kinds[i] = C
    return kinds


def test_the_remainder_after_the_seeded_shuffle_is_dropped():
    seed = 5
    kinds = kinds_with_c_where_dropped(seed)
    value, std, details = authors_score(kinds, splits=1, seed=seed)
    assert value == pytest.approx(IS_AB, rel=1e-12)  # neither C was scored
    assert (details["num_scored"], details["dropped"], details["shuffle_seed"]) == (128, 2, seed)
    kept, dropped = authors_is.scored_order(130, seed)
    assert sorted(np.flatnonzero([k == C for k in kinds])) == sorted(dropped) and len(kept) == 128
    # another seed drops other images: a C is scored and the value moves
    assert set(authors_is.scored_order(130, seed + 1)[1]) != set(dropped)
    assert authors_score(kinds, splits=1, seed=seed + 1)[0] != pytest.approx(IS_AB, rel=1e-6)


def test_same_seed_same_value_other_seed_other_splits():
    rng = np.random.default_rng(0)
    kinds = [tuple(int(v) for v in rng.integers(1, 50, 3)) for _ in range(200)]
    first, again = authors_score(kinds, 10), authors_score(kinds, 10)
    assert first[:2] == again[:2]
    other = authors_score(kinds, 10, seed=authors_is.SHUFFLE_SEED + 1)
    assert other[0] != first[0]
    assert first[2]["dropped"] == 200 - 192 and len(first[2]["split_bounds"]) == 10


# -- through compute and the CLI

@pytest.fixture
def pixel_ruler(monkeypatch):
    """The cub-inc ruler with the pixel network in place of the slim Inception (no weights)."""
    row = dataclasses.replace(rulers.RULERS["cub-inc"], extractor="test-pixel-probs", is_layer="logprob", weights=None)
    monkeypatch.setitem(rulers.RULERS, "cub-inc", row)
    return row


def write_pngs(folder, kinds, side=16):
    folder.mkdir()
    for i, rgb in enumerate(kinds):
        Image.new("RGB", (side, side), rgb).save(folder / f"{i:04d}.png")
    return folder


def test_compute_routes_the_authors_rule_and_names_the_ruler(tmp_path, pixel_ruler):
    kinds = kinds_with_c_where_dropped(authors_is.SHUFFLE_SEED)
    out = compute(["is130_cub-inc"], write_pngs(tmp_path / "imgs", kinds), device="cpu")
    metric, details = out["metrics"]["is130_cub-inc"], out["protocols"]["is130_cub-inc"]
    # solid colours stay solid through the PIL resize to 299, so p(y|x) is as drawn; 10 splits of A/B
    # images: each split's IS depends on its own mix, and the C images are the dropped ones
    probs = {k: np.array(k, float) / sum(k) for k in (A, B, C)}
    kept = np.random.default_rng(authors_is.SHUFFLE_SEED).permutation(130)[:128]  # scored in this order
    rows = np.stack([probs[kinds[i]] for i in kept])
    assert metric["value"] == pytest.approx(authors_is.score(rows, 10)[0], rel=1e-9)
    assert (details["ruler"], details["preprocessing"]) == (pixel_ruler.label, authors_is.PREPROCESSING)
    assert details["is_rule"] == "authors" and details["dropped"] == 2 and details["num_samples"] == 130
    assert "isc_shuffle_seed" not in details
    json.dumps(out)
    with pytest.raises(UserError, match="at least 64 images.*whole batches of 64"):
        compute(["is64_cub-inc"], solid([A] * 50), device="cpu")


def test_score_cli_with_extractor_weights(tmp_path, pixel_ruler, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # no params.yaml: `score` pins no CPU settings
    weights = tmp_path / "w.pth"
    torch.save({"unused": torch.zeros(1)}, weights)
    folder = write_pngs(tmp_path / "imgs", [A, B] * 40)
    monkeypatch.setitem(rulers.RULERS, "cub-inc", dataclasses.replace(pixel_ruler, weights="cub-inc"))
    assert cli.main(["score", str(folder), "--protocol", "is64_cub-inc", "--extractor-weights", str(weights),
                     "--json", "--device", "cpu"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["protocol"] == "is64_cub-inc" and result["details"]["num_samples"] == 64
    assert result["details"]["weights_file"] == "w.pth" and result["details"]["num_scored"] == 64
    assert 1.0 < result["value"] < IS_AB * 1.5 and math.isfinite(result["std"])


@pytest.mark.subprocess
def test_slim_weights_end_to_end_through_the_cli(tmp_path, slim_weights, monkeypatch):
    """The real `inception-v3-slim` network with random weights in the converter's format, on 64
    images (one batch; ~1 s per image at 299 px on one CPU thread), against the authors' steps
    written out here: imread, np.resize for 2-d, PIL bilinear, x/127.5-1, their softmax and KL."""
    monkeypatch.chdir(tmp_path)
    folder = tmp_path / "imgs"
    folder.mkdir()
    for i in range(64):
        img = noise(48, 40, seed=i, channels=1 if i == 3 else 3)
        Image.fromarray((img // 4 + (i * 3) % 190).astype(np.uint8)).save(folder / f"{i:03d}.png")
    net = SlimInceptionNet(51)
    net.load_state_dict(torch.load(slim_weights, weights_only=True))
    net.eval()
    # A deep random net's pool features are nearly one vector m plus small image-to-image parts:
    # class weights orthogonal to m (of a grey image), scaled up, give logits that vary by O(1).
    with torch.no_grad():
        m = net(torch.zeros(1, 3, 299, 299))[0][0]
        w = net.logits.weight
        w.copy_((w - torch.outer(w @ m, m) / m.dot(m)) * 300)
    spread = tmp_path / "cub-inc.pth"
    torch_save(net.state_dict(), spread)
    run = subprocess.run([sys.executable, "-m", "stackgan.cli", "score", str(folder), "--protocol", "is64_cub-inc",
                          "--extractor-weights", str(spread), "--json", "--device", "cpu"],
                         capture_output=True, text=True, check=False)
    assert run.returncode == 0, run.stderr
    result = json.loads(run.stdout)

    images = []
    for path in sorted(folder.iterdir()):
        img = np.asarray(Image.open(path))
        if img.ndim == 2:
            img = np.resize(img, (img.shape[0], img.shape[1], 3))
        img = np.asarray(Image.fromarray(img).resize((299, 299), Image.BILINEAR)).astype(np.float32) / 127.5 - 1.0
        images.append(img.transpose(2, 0, 1))
    order = np.random.default_rng(authors_is.SHUFFLE_SEED).permutation(64)
    with torch.no_grad():
        logits = net(torch.from_numpy(np.stack(images)[order]))[1][:, 1:].double().numpy()
    preds = np.exp(logits - logits.max(1, keepdims=True))
    preds /= preds.sum(1, keepdims=True)
    scores = []
    for i in range(10):
        part = preds[i * 64 // 10:(i + 1) * 64 // 10]
        kl = part * (np.log(part) - np.log(np.expand_dims(np.mean(part, 0), 0)))
        scores.append(np.exp(np.mean(np.sum(kl, 1))))
    assert result["value"] == pytest.approx(np.mean(scores), rel=1e-5)
    assert result["std"] == pytest.approx(np.std(scores), rel=1e-4, abs=1e-7)
    assert result["value"] > 1.05  # random weights still tell the images apart
    assert result["details"]["ruler"] == rulers.RULERS["cub-inc"].label
