"""The `inception-v3-slim` extractor (the authors' old slim Inception-v3, ported) and the TF-free
half of its converter: names and layouts, the BatchNorm and pooling slim uses, input and
weights-file refusals. The comparison with a real TF graph and checkpoint is
tests/test_convert_inception.py (needs TensorFlow)."""

import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch_fidelity.feature_extractor_inceptionv3 import (BasicConv2d, FeatureExtractorInceptionV3, InceptionE_1,
                                                          InceptionE_2)
from torch_fidelity.registry import FEATURE_EXTRACTORS_REGISTRY

from stackgan.atomic import torch_save
from stackgan.cli import main
from stackgan.errors import UserError
from stackgan.metrics import convert_inception as conv
from stackgan.metrics.slim_inception import (EXTRACTOR_NAME, BatchNorm, Conv, SlimInceptionNet, SlimInceptionV3,
                                             expected_tf_variables)
from stackgan.metrics.weights import as_torch_file

K = 5  # known classes; the nets below have K+1 logits


def _random_tf_variables(num_classes, seed=0):
    """TF name -> value of every model variable: He-scaled convs and non-trivial BatchNorm statistics,
    so activations neither die nor explode through 94 convs."""
    rng = np.random.default_rng(seed)
    out = {}
    for name, shape in expected_tf_variables(num_classes).items():
        if name.endswith("/weights"):
            value = rng.normal(0, np.sqrt(2.0 / np.prod(shape[:-1])), shape)
        elif name.endswith("moving_variance"):
            value = rng.uniform(0.5, 2.0, shape)
        else:
            value = rng.normal(0, 0.1, shape)
        out[name] = value.astype(np.float32)
    return out


def _checkpoint_shapes(variables):
    """The variable -> shape map of a checkpoint holding `variables` and their EMA shadows."""
    shapes = {n: v.shape for n, v in variables.items()}
    return {**shapes, **{n + conv.SHADOW: s for n, s in shapes.items()}}


@pytest.fixture(scope="module")
def tf_vars():
    return _random_tf_variables(K)


@pytest.fixture(scope="module")
def state(tf_vars):
    """The converter's state dict for a checkpoint whose shadows are `tf_vars` (raw values differ)."""
    shapes = _checkpoint_shapes(tf_vars)
    shadows = {n + conv.SHADOW: v for n, v in tf_vars.items()}
    return conv.state_from_checkpoint(shapes, shadows.__getitem__, "fake.ckpt")


@pytest.fixture(scope="module")
def weights_file(state, tmp_path_factory):
    path = tmp_path_factory.mktemp("slim") / "inc.pth"
    torch_save(state, path)
    return path


@pytest.fixture(scope="module")
def net(state):
    model = SlimInceptionNet(K + 1)
    model.load_state_dict(state)
    return model.eval()


def test_state_dict_is_what_the_converter_writes(state):
    model = SlimInceptionNet(K + 1)
    want = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert {k: tuple(v.shape) for k, v in state.items()} == want
    assert len(want) == 94 * 4 + 2  # 94 convs (weight, beta, moving mean/variance) + the class layer
    assert all(v.dtype == torch.float32 and v.is_contiguous() for v in state.values())
    assert "mixed_35x35x256a.branch5x5.Conv_1.weight" in want
    assert want["logits.weight"] == (K + 1, 2048)  # the background row is kept


def test_layouts_are_permuted_as_tf_stores_them(tf_vars, state):
    w = tf_vars["mixed_17x17x768b/branch7x7/Conv_1/weights"]  # (kh, kw, in, out) = (1, 7, 128, 128)
    torch_w = state["mixed_17x17x768b.branch7x7.Conv_1.weight"]
    assert tuple(torch_w.shape) == (128, 128, 1, 7)
    assert torch_w[3, 5, 0, 6] == torch.tensor(w[0, 6, 5, 3])
    fc = tf_vars["logits/logits/weights"]
    assert state["logits.weight"][0, 7] == torch.tensor(fc[7, 0])


def test_conv_shapes_follow_torch_fidelitys_inception_in_order():
    """The same Inception-v3, written independently (torch-fidelity's port of the 2015 graph):
    every conv's shape, in creation order."""

    class Shell(FeatureExtractorInceptionV3):
        def load_state_dict(self, state_dict, strict=True, assign=False):
            return None

    theirs = [m.conv.weight.shape for m in Shell("shell", ["2048"], as_torch_file({})).modules()
              if isinstance(m, BasicConv2d)]
    ours = [m.weight.shape for m in SlimInceptionNet(K + 1).modules() if isinstance(m, Conv)]
    assert len(ours) == 94 and ours == theirs


def _torch_fidelity_twin(net):
    """torch-fidelity's Inception modules carrying `net`'s weights (BatchNorm scale 1, as slim has none)."""

    class Shell(FeatureExtractorInceptionV3):
        def load_state_dict(self, state_dict, strict=True, assign=False):
            return None

    twin = Shell("shell", ["2048"], as_torch_file({}))
    for theirs, ours in zip([m for m in twin.modules() if isinstance(m, BasicConv2d)],
                            [m for m in net.modules() if isinstance(m, Conv)]):
        theirs.conv.weight.copy_(ours.weight)
        theirs.bn.weight.fill_(1.0)
        theirs.bn.bias.copy_(ours.BatchNorm.beta)
        theirs.bn.running_mean.copy_(ours.BatchNorm.moving_mean)
        theirs.bn.running_var.copy_(ours.BatchNorm.moving_variance)
    return twin.eval()


def test_whole_net_matches_torch_fidelity_with_an_average_pooled_last_block(net):
    twin = _torch_fidelity_twin(net)
    x = torch.rand(1, 3, 299, 299, generator=torch.Generator().manual_seed(1)) * 2 - 1
    with torch.no_grad():
        pool, logits = net(x)
        h = x
        for name in ("Conv2d_1a_3x3", "Conv2d_2a_3x3", "Conv2d_2b_3x3", "MaxPool_1", "Conv2d_3b_1x1",
                     "Conv2d_4a_3x3", "MaxPool_2", "Mixed_5b", "Mixed_5c", "Mixed_5d", "Mixed_6a", "Mixed_6b",
                     "Mixed_6c", "Mixed_6d", "Mixed_6e", "Mixed_7a", "Mixed_7b"):
            h = getattr(twin, name)(h)
        last_avg, last_max = InceptionE_1(2048).eval(), InceptionE_2(2048).eval()
        last_avg.load_state_dict(twin.Mixed_7c.state_dict())
        last_max.load_state_dict(twin.Mixed_7c.state_dict())
        pool_avg = last_avg(h).mean((2, 3))
        pool_max = last_max(h).mean((2, 3))
    assert pool.std() > 0.1  # the random net is alive at the end
    torch.testing.assert_close(pool, pool_avg, rtol=1e-4, atol=1e-5)
    assert (pool - pool_max).abs().max() > 1e-2  # torch-fidelity's max-pool quirk would show
    torch.testing.assert_close(logits, pool @ net.logits.weight.T + net.logits.bias)


@pytest.mark.parametrize("block, width", [("mixed_35x35x256a", 35), ("mixed_8x8x2048a", 8),
                                          ("mixed_8x8x2048b", 8)])
def test_pool_branches_average_without_the_padding(net, block, width):
    mixed = getattr(net, block)
    c_in = mixed.branch1x1.Conv.weight.shape[1]
    x = torch.rand(1, c_in, width, width, generator=torch.Generator().manual_seed(2)) * 3
    pool_conv = mixed.branch_pool.Conv
    with torch.no_grad():
        out = mixed(x)[:, -pool_conv.weight.shape[0]:]
        excluded = pool_conv(F.avg_pool2d(x, 3, 1, 1, count_include_pad=False))
        included = pool_conv(F.avg_pool2d(x, 3, 1, 1, count_include_pad=True))
        maxed = pool_conv(F.max_pool2d(x, 3, 1, 1))
    torch.testing.assert_close(out, excluded)
    assert (out - included).abs().max() > 1e-3 and (out - maxed).abs().max() > 1e-3


def test_batchnorm_has_no_scale_and_eps_1e3():
    bn = BatchNorm(3)
    assert set(bn.state_dict()) == {"beta", "moving_mean", "moving_variance"}
    assert BatchNorm.EPS == 1e-3
    bn.beta.data = torch.tensor([0.5, -1.0, 2.0])
    bn.moving_mean.copy_(torch.tensor([1.0, 0.0, -2.0]))
    bn.moving_variance.copy_(torch.tensor([0.0, 4.0, 1e-4]))  # tiny variances: eps decides the output
    x = torch.randn(2, 3, 4, 4)
    with torch.no_grad():
        got = bn(x)
    want = (x - bn.moving_mean[:, None, None]) / torch.sqrt(bn.moving_variance[:, None, None] + 1e-3) \
        + bn.beta[:, None, None]
    torch.testing.assert_close(got, want)


def test_extractor_takes_uint8_299_and_drops_the_background_logit(weights_file, net):
    assert FEATURE_EXTRACTORS_REGISTRY[EXTRACTOR_NAME] is SlimInceptionV3
    ext = SlimInceptionV3(EXTRACTOR_NAME, ["logits", "2048", "logits_full"],
                          feature_extractor_weights_path=weights_file)
    x = torch.randint(0, 256, (1, 3, 299, 299), dtype=torch.uint8, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        logits, pool, full = ext(x)
        ref_pool, ref_full = net(x.float() / 127.5 - 1)
    assert logits.shape == (1, K) and full.shape == (1, K + 1) and pool.shape == (1, 2048)
    torch.testing.assert_close(full, ref_full)
    torch.testing.assert_close(pool, ref_pool)
    assert torch.equal(logits, full[:, 1:])
    for bad in (x.float(), x[:, :, :256, :256], x[:, :1], x[0]):
        with pytest.raises(ValueError, match="got"):
            ext(bad)


class Touch:
    """Unpickling this calls pathlib.Path.touch(marker): the marker exists only if code ran."""

    def __init__(self, marker):
        self.marker = Path(marker)

    def __reduce__(self):
        return Path.touch, (self.marker,)


def test_pickle_payload_is_refused_without_running(tmp_path):
    marker = tmp_path / "ran"
    path = tmp_path / "hostile.pth"
    torch.save({"logits.weight": torch.zeros(K + 1, 2048), "payload": Touch(marker)}, path)
    with pytest.raises(UserError, match="refused"):
        SlimInceptionV3(EXTRACTOR_NAME, ["logits"], feature_extractor_weights_path=path)
    assert not marker.exists()


def test_weights_that_do_not_fit_are_one_line_user_errors(state, tmp_path):
    def refused(bad, match):
        path = tmp_path / "bad.pth"
        torch_save(bad, path)
        with pytest.raises(UserError, match=match) as err:
            SlimInceptionV3(EXTRACTOR_NAME, ["logits"], feature_extractor_weights_path=path)
        assert "\n" not in str(err.value) and "convert-inception" in str(err.value)

    refused({**state, "conv0.weight": torch.zeros(32, 3, 3, 2)}, r"1 misshaped \(conv0.weight")
    refused({k: v for k, v in state.items() if "BatchNorm" not in k}, "282 missing")
    refused({**state, "conv0.BatchNorm.gamma": torch.ones(32)}, r"1 unknown \(conv0.BatchNorm.gamma")
    refused({k: v for k, v in state.items() if k != "logits.weight"}, "no logits.weight")
    with pytest.raises(UserError, match="needs its weights file"):
        SlimInceptionV3(EXTRACTOR_NAME, ["logits"])


def test_converter_reads_shadows_and_allows_only_known_bookkeeping(tf_vars):
    shapes = _checkpoint_shapes(tf_vars)
    bookkeeping = {"global_step": (), "aux_logits/proj/weights": (1, 1, 768, 128),
                   "aux_logits/FC/biases/ExponentialMovingAverage": (K + 1,),
                   "conv0/weights/RMSProp": (3, 3, 3, 32), "conv0/weights/RMSProp_1": (3, 3, 3, 32),
                   "logits/logits/biases/Momentum": (K + 1,),
                   "conv1/BatchNorm/moving_mean/biased": (32,), "conv1/BatchNorm/moving_mean/local_step": (),
                   "tower_0/tower_0/total_loss/avg": (), "tower_1/losses/cross_entropy/avg": ()}
    read = []

    def reader(name):
        read.append(name)
        return tf_vars[name[: -len(conv.SHADOW)]] if name.endswith(conv.SHADOW) else np.zeros(shapes[name])

    state = conv.state_from_checkpoint({**shapes, **bookkeeping}, reader, "ckpt")
    assert len(read) == len(tf_vars) and all(n.endswith(conv.SHADOW) for n in read)
    assert torch.equal(state["logits.bias"], torch.from_numpy(tf_vars["logits/logits/biases"]))


@pytest.mark.parametrize("change, match", [
    (lambda s: s.pop("mixed_8x8x2048b/branch_pool/Conv/weights"), "1 missing"),
    (lambda s: s.pop("conv2/BatchNorm/moving_variance/ExponentialMovingAverage"), "1 without an EMA shadow"),
    (lambda s: s.update({"conv2/BatchNorm/beta/ExponentialMovingAverage": (63,)}), "1 misshaped"),
    (lambda s: s.update({"conv2/BatchNorm/gamma": (64,), "InceptionV3/Logits/w": (3,)}), r"2 unknown"),
    (lambda s: s.update({"conv2/BatchNorm/gamma/RMSProp": (64,)}), r"1 unknown"),  # a slot of no model variable
    (lambda s: s.update({"tower_0/conv0/weights": (3, 3, 3, 32)}), r"1 unknown"),  # a tower's weights are not a loss average
    (lambda s: s.pop("logits/logits/weights"), "no logits/logits/weights"),
])
def test_converter_refuses_a_checkpoint_that_is_not_the_authors_model(tf_vars, change, match):
    shapes = _checkpoint_shapes(tf_vars)
    change(shapes)
    with pytest.raises(UserError, match=match) as err:
        conv.check_variables(shapes, "ckpt")
    assert "\n" not in str(err.value)


def test_num_classes_come_from_the_logits_shape():
    for k in (20, 50):
        variables = {n: np.zeros(s, np.float32) for n, s in expected_tf_variables(k).items()}
        assert len(conv.check_variables(_checkpoint_shapes(variables), "ckpt")) == 94 * 4 + 2
        assert conv.num_classes_of(_checkpoint_shapes(variables), "ckpt") == k


def test_without_tensorflow_the_cli_says_how_to_install_it(monkeypatch, capsys, tmp_path):
    monkeypatch.setitem(sys.modules, "tensorflow", None)  # makes `import tensorflow` raise ImportError
    rc = main(["convert-inception", str(tmp_path / "model.ckpt-5000"), "--out", str(tmp_path / "inc.pth")])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1 and 'pip install -e ".[tf]"' in err
    assert not (tmp_path / "inc.pth").exists()


def test_checkpoint_prefix_forms(tmp_path):
    class NoLatest:
        class train:
            @staticmethod
            def latest_checkpoint(folder):
                return None

    (tmp_path / "model.ckpt-5000.index").write_bytes(b"")
    (tmp_path / "model.ckpt-5000.data-00000-of-00001").write_bytes(b"")
    prefix = str(tmp_path / "model.ckpt-5000")
    assert conv.checkpoint_prefix(NoLatest, tmp_path) == prefix
    assert conv.checkpoint_prefix(NoLatest, prefix + ".index") == prefix
    assert conv.checkpoint_prefix(NoLatest, prefix + ".data-00000-of-00001") == prefix
    (tmp_path / "model.ckpt-4000.index").write_bytes(b"")
    with pytest.raises(UserError, match="holds 2 checkpoints"):
        conv.checkpoint_prefix(NoLatest, tmp_path)
    with pytest.raises(UserError, match="no TF checkpoint"):
        conv.checkpoint_prefix(NoLatest, tmp_path / "nothing")
