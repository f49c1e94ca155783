"""The later papers' FID rulers (stackgan/metrics/legacy_fid.py) against computations written out
here: pytorch-fid's 2018 forward on torchvision's Inception-v3, clean-fid's float PIL bicubic
resize, and the TF 2015 Inception fed float images. Weights are random, drawn here and saved as
files, so nothing is downloaded; each Inception forward is ~0.5 s a 299x299 image on one core."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn
from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3
from torch_fidelity.registry import FEATURE_EXTRACTORS_REGISTRY
from torchvision.models import inception_v3

from inception_fixture import write_random_inception
from stackgan import seeding
from stackgan.atomic import torch_save
from stackgan.errors import UserError
from stackgan.metrics import legacy_fid
from stackgan.metrics.legacy_fid import CompatFloatInceptionV3, TorchvisionInceptionV3, clean_resize
from stackgan.metrics.weights import as_torch_file, load_weights
from test_untrusted_torch import hostile, truncated

FEATURES = ["2048", "logits_unbiased", "logits"]


def random_torchvision_state(seed=0):
    """torchvision Inception-v3 weights whose activations stay O(1) through the depth (He-normal
    convs) and whose BatchNorm statistics are not the identity, so loading them matters."""
    gen = seeding.torch_generator(seed)
    with torch.random.fork_rng(devices=[]):
        net = inception_v3(weights=None, aux_logits=True, init_weights=False)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, nn.Conv2d):
                m.weight.copy_(torch.randn(m.weight.shape, generator=gen) * (2.0 / m.weight[0].numel()) ** 0.5)
            elif isinstance(m, nn.BatchNorm2d):
                m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=gen) * 0.1)
                m.running_var.copy_(0.5 + torch.rand(m.running_var.shape, generator=gen))
                m.weight.copy_(0.8 + 0.4 * torch.rand(m.weight.shape, generator=gen))
                m.bias.copy_(torch.randn(m.bias.shape, generator=gen) * 0.1)
            elif isinstance(m, nn.Linear):
                m.weight.copy_(torch.randn(m.weight.shape, generator=gen) / m.in_features ** 0.5)
                m.bias.copy_(torch.randn(m.bias.shape, generator=gen))
    return {k: v.contiguous() for k, v in net.state_dict().items()}


def images(n, h, w, seed):
    return torch.from_numpy(seeding.numpy_rng(seed).integers(0, 256, (n, 3, h, w), dtype=np.uint8))


@pytest.fixture(scope="module")
def tv_weights(tmp_path_factory):
    path = tmp_path_factory.mktemp("tv") / "inception_v3_google-0cc3c7bd.pth"
    torch_save(random_torchvision_state(), path)
    return path


@pytest.fixture(scope="module")
def tf_weights(tmp_path_factory):
    return write_random_inception(tmp_path_factory.mktemp("tf") / "weights-inception-2015-12-05-6726825d.pth")


@pytest.fixture(scope="module")
def tv_extractor(tv_weights):
    return TorchvisionInceptionV3(legacy_fid.TORCHVISION_EXTRACTOR, FEATURES, feature_extractor_weights_path=tv_weights)


@pytest.fixture(scope="module")
def compat_extractor(tf_weights):
    return CompatFloatInceptionV3(legacy_fid.COMPAT_FLOAT_EXTRACTOR, ["2048"], feature_extractor_weights_path=tf_weights)


@pytest.fixture(scope="module")
def odd_images():
    """Two images not 299x299, so the extractor's own resize is exercised."""
    return images(2, 61, 83, seed=1)


def pytorch_fid_2018(imgs, weights, align_corners):
    """pytorch-fid 802da39 / DM-GAN eval/FID written out: /255, bilinear to 299, torchvision's
    transform_input formula on the [0, 1] image, then torchvision's own forward (pool, logits)."""
    net = inception_v3(weights=None, aux_logits=True, init_weights=False, transform_input=False)
    net.load_state_dict(load_weights(weights, "test"))
    net.eval()
    x = imgs.float() / 255
    x = F.interpolate(x, size=(299, 299), mode="bilinear", align_corners=align_corners)
    x = x.clone()
    x[:, 0] = x[:, 0] * (0.229 / 0.5) + (0.485 - 0.5) / 0.5
    x[:, 1] = x[:, 1] * (0.224 / 0.5) + (0.456 - 0.5) / 0.5
    x[:, 2] = x[:, 2] * (0.225 / 0.5) + (0.406 - 0.5) / 0.5
    fc = net.fc
    net.fc = nn.Identity()
    with torch.no_grad():
        pool = net(x)
        return {"2048": pool, "logits_unbiased": pool @ fc.weight.T, "logits": fc(pool)}


@pytest.fixture(scope="module")
def tv_features(tv_extractor, odd_images):
    with torch.no_grad():
        return dict(zip(FEATURES, tv_extractor(odd_images)))


def test_torchvision_extractor_is_pytorch_fid_2018(tv_features, tv_weights, odd_images):
    ref = pytorch_fid_2018(odd_images, tv_weights, align_corners=True)
    assert tv_features["2048"].shape == (2, 2048) and tv_features["2048"].dtype == torch.float32
    assert tv_features["2048"].std() > 0.1  # features that vary, so agreement means something
    for name in FEATURES:
        torch.testing.assert_close(tv_features[name], ref[name], rtol=1e-5, atol=1e-5)


def test_torchvision_extractor_resizes_with_align_corners_true(tv_features, tv_weights, odd_images):
    # The rule of PyTorch <= 0.3.1 that pytorch-fid was written on: the other rule is another ruler.
    other = pytorch_fid_2018(odd_images, tv_weights, align_corners=False)["2048"]
    assert (tv_features["2048"] - other).abs().max() > 1e-3


def test_old_torchvision_file_without_batch_counters_loads(tmp_path, tv_weights):
    # torchvision 0.2.1's inception_v3_google-1a9a5a14.pth predates BatchNorm's num_batches_tracked.
    state = {k: v for k, v in load_weights(tv_weights, "test").items() if not k.endswith("num_batches_tracked")}
    path = tmp_path / "inception_v3_google-1a9a5a14.pth"
    torch_save(state, path)
    ext = TorchvisionInceptionV3(legacy_fid.TORCHVISION_EXTRACTOR, ["2048"], feature_extractor_weights_path=path)
    torch.testing.assert_close(ext.net.Mixed_7c.branch_pool.bn.running_var,
                               state["Mixed_7c.branch_pool.bn.running_var"], rtol=0, atol=0)


def pil_float_bicubic(img):
    """clean-fid's make_resizer("PIL", False, "bicubic", (299, 299)), written out on HWC numpy."""
    hwc = img.numpy().transpose(1, 2, 0)
    chans = [np.asarray(Image.fromarray(hwc[:, :, i].astype(np.float32), mode="F").resize((299, 299),
                        resample=Image.BICUBIC)).clip(0, 255).reshape(299, 299, 1) for i in range(3)]
    return torch.from_numpy(np.concatenate(chans, axis=2).astype(np.float32).transpose(2, 0, 1).copy())


@pytest.mark.parametrize("h,w", [(64, 48), (350, 420)])  # up- and downscaling (PIL's filter widens)
def test_clean_resize_is_pil_float_bicubic_per_channel(h, w):
    img = images(1, h, w, seed=h)[0]
    out = clean_resize(img)
    assert out.shape == (3, 299, 299) and out.dtype == torch.float32
    torch.testing.assert_close(out, pil_float_bicubic(img), rtol=0, atol=0)
    # Not quantised: the float bicubic values are kept, not rounded to integers.
    assert (out != out.round()).float().mean() > 0.5


def test_clean_resize_clips_the_bicubic_overshoot():
    board = (torch.arange(40).view(1, 40) // 5 + torch.arange(40).view(40, 1) // 5) % 2 * 255
    out = clean_resize(board.to(torch.uint8).expand(3, 40, 40).contiguous())
    assert out.min() == 0 and out.max() == 255


def test_compat_float_equals_torch_fidelity_on_integral_images(compat_extractor, tf_weights):
    imgs = images(2, 299, 299, seed=2)
    theirs = FeatureExtractorInceptionV3("inception-v3-compat", ["2048"],
                                         feature_extractor_weights_path=as_torch_file(load_weights(tf_weights, "t")))
    with torch.no_grad():
        (ours,) = compat_extractor(imgs.float())
        (ref,) = theirs(imgs)
    assert ours.std() > 0.01
    torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-5)


def test_compat_float_keeps_the_fractions(compat_extractor):
    x = clean_resize(images(1, 50, 70, seed=3)[0]).unsqueeze(0)
    with torch.no_grad():
        (exact,) = compat_extractor(x)
        (rounded,) = compat_extractor(x.round())
    assert (exact - rounded).abs().max() > 1e-4


def test_wrong_inputs_are_refused(tv_extractor, compat_extractor):
    with pytest.raises(ValueError, match="uint8"):
        tv_extractor(torch.zeros(1, 3, 299, 299))
    with pytest.raises(ValueError, match="float32"):
        compat_extractor(torch.zeros(1, 3, 299, 299, dtype=torch.uint8))
    with pytest.raises(ValueError, match="299"):
        compat_extractor(torch.zeros(1, 3, 256, 256))
    with pytest.raises(ValueError, match="uint8"):
        clean_resize(torch.zeros(3, 8, 8))


@pytest.mark.parametrize("cls,name", [(TorchvisionInceptionV3, legacy_fid.TORCHVISION_EXTRACTOR),
                                      (CompatFloatInceptionV3, legacy_fid.COMPAT_FLOAT_EXTRACTOR)])
def test_registered_and_weights_required(cls, name):
    assert FEATURE_EXTRACTORS_REGISTRY[name] is cls
    with pytest.raises(UserError, match="needs its weights file"):
        cls(name, ["2048"])


@pytest.mark.parametrize("cls,name", [(TorchvisionInceptionV3, legacy_fid.TORCHVISION_EXTRACTOR),
                                      (CompatFloatInceptionV3, legacy_fid.COMPAT_FLOAT_EXTRACTOR)])
def test_hostile_or_truncated_weights_are_refused_without_running(cls, name, tmp_path):
    marker = tmp_path / "ran"
    bad = hostile(tmp_path / "hostile.pth", marker)
    with pytest.raises(UserError, match="refused") as err:
        cls(name, ["2048"], feature_extractor_weights_path=bad)
    assert not marker.exists() and str(bad) in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(UserError, match="not a readable torch file"):
        cls(name, ["2048"], feature_extractor_weights_path=truncated(tmp_path / "cut.pth"))


def test_weights_of_the_other_network_are_one_line(tf_weights, tv_weights):
    with pytest.raises(UserError, match="does not fit torchvision's Inception-v3") as err:
        TorchvisionInceptionV3(legacy_fid.TORCHVISION_EXTRACTOR, ["2048"], feature_extractor_weights_path=tf_weights)
    assert "\n" not in str(err.value) and "torchvision-inception-v3" in str(err.value)
    with pytest.raises(UserError, match="does not fit the TF-exact Inception-v3"):
        CompatFloatInceptionV3(legacy_fid.COMPAT_FLOAT_EXTRACTOR, ["2048"], feature_extractor_weights_path=tv_weights)
