"""`stackgan convert-inception` against TensorFlow itself: a checkpoint laid out as the authors'
fine-tuned Inception (tests/tf_slim_reference.py: 50 classes + background, EMA shadows that differ
from the raw variables, RMSProp slots, global_step) is evaluated by the slim graph in TensorFlow
and, converted, by our `inception-v3-slim` extractor on the same images.

TensorFlow runs only in child processes (the reference, the converter): it stays out of this
torch process. About three minutes on 2 cores, most of it TensorFlow imports and checkpoint writes.
"""

import importlib.util
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

pytestmark = [
    pytest.mark.subprocess,
    pytest.mark.skipif(importlib.util.find_spec("tensorflow") is None,
                       reason='needs TensorFlow: pip install -e ".[tf]"'),
]

REFERENCE = Path(__file__).with_name("tf_slim_reference.py")
CLASSES = 50
SIZE = 256  # not 299: the authors' resize is part of what is compared
# The variable each broken checkpoint gets wrong (tf_slim_reference.BREAKS): the refusal must name it.
BROKEN = {
    "missing": "mixed_17x17x768c/branch7x7dbl/Conv_3/BatchNorm/moving_variance",
    "extra": "mixed_8x8x2048b/branch1x1/Conv_1/weights",
    "misshaped": "mixed_35x35x288a/branch5x5/Conv_1/weights",
    "missing-shadow": "conv2/BatchNorm/moving_mean",
}


def _run(args, cwd):
    return subprocess.run([sys.executable, *args], cwd=cwd, capture_output=True, text=True, timeout=600)


def _reference(*args, cwd):
    proc = _run([str(REFERENCE), *map(str, args)], cwd)
    assert proc.returncode == 0, proc.stderr[-3000:]


def _convert(ckpt, out, cwd):
    return _run(["-m", "stackgan.cli", "convert-inception", str(ckpt), "--out", str(out)], cwd)


def _inception_score(probs, splits):
    """inception_score.py:116-126 of the authors' repository (their split boundaries)."""
    scores = []
    for i in range(splits):
        part = probs[i * len(probs) // splits:(i + 1) * len(probs) // splits]
        kl = part * (np.log(part) - np.log(np.mean(part, 0, keepdims=True)))
        scores.append(np.exp(np.mean(np.sum(kl, 1))))
    return float(np.mean(scores)), float(np.std(scores))


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    path = tmp_path_factory.mktemp("convert_inception")
    yield path
    shutil.rmtree(path, ignore_errors=True)  # ~2 GB of checkpoints


def _authors_input(images):
    return images.astype(np.float32) / 127.5 - 1.0  # inception_score.py:76-79


@pytest.fixture(scope="module")
def image_sets():
    """16 uint8 images of one kind, resized to 299 as the authors' preprocess did
    (scipy.misc.imresize bilinear = PIL bilinear on the uint8 image, inception_score.py:74-75):
    8 calibrate the random net's BatchNorm statistics, 8 are compared."""
    rng = np.random.default_rng(20170101)
    out = []
    for _ in range(16):
        field = Image.fromarray(rng.integers(0, 256, (6, 6, 3), dtype=np.uint8)).resize((SIZE, SIZE), Image.BILINEAR)
        img = np.asarray(field, np.float32) + rng.normal(0, 25, (SIZE, SIZE, 3))
        img = Image.fromarray(np.clip(img, 0, 255).astype(np.uint8))
        out.append(np.asarray(img.resize((299, 299), Image.BILINEAR)))
    return np.stack(out[:8]), np.stack(out[8:])


@pytest.fixture(scope="module")
def images(image_sets):
    return image_sets[1]


@pytest.fixture(scope="module")
def checkpoint(work, image_sets):
    prefix = work / "birds_valid299" / "model.ckpt-5000"
    np.save(work / "calibration.npy", _authors_input(image_sets[0]))
    _reference("build", prefix, "--classes", CLASSES, "--seed", 0, "--calibration", work / "calibration.npy",
               cwd=work)
    return prefix


@pytest.fixture(scope="module")
def tf_probs(checkpoint, images, work):
    np.save(work / "inputs.npy", _authors_input(images))
    _reference("run", checkpoint, work / "inputs.npy", work / "tf_probs.npy", cwd=work)
    return np.load(work / "tf_probs.npy")


@pytest.fixture(scope="module")
def converted(checkpoint, work):
    out = work / "converted" / "cub-inc.pth"
    proc = _convert(checkpoint, out, work)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out


@pytest.fixture(scope="module")
def broken(checkpoint, work):
    out = work / "broken"
    _reference("break", checkpoint, out, "--kinds", *BROKEN, cwd=work)
    return out


def test_converted_model_matches_tensorflow(converted, images, tf_probs):
    from torch_fidelity.utils import create_feature_extractor

    import stackgan.metrics.slim_inception  # noqa: F401  (registers inception-v3-slim)

    net = create_feature_extractor("inception-v3-slim", ["logits"], cuda=False,
                                   feature_extractor_weights_path=str(converted))
    with torch.no_grad():
        (logits,) = net(torch.from_numpy(images).permute(0, 3, 1, 2).contiguous())
    ours = torch.softmax(logits, dim=1).numpy()
    assert ours.shape == tf_probs.shape == (8, CLASSES)
    # The fixture is no trivial case: varied, peaked predictions (IS of 8 images is at most 8).
    tf_is = _inception_score(tf_probs, 1)[0]
    assert 1.5 < tf_is < 8 and tf_probs.max() < 0.9999, (tf_is, tf_probs.max(1))
    assert np.abs(ours - tf_probs).max() < 1e-4
    for splits in (1, 2):
        (m_ours, s_ours), (m_tf, s_tf) = _inception_score(ours, splits), _inception_score(tf_probs, splits)
        assert abs(m_ours - m_tf) < 1e-3 and abs(s_ours - s_tf) < 1e-3, (splits, m_ours, m_tf, s_ours, s_tf)


@pytest.mark.parametrize("kind", sorted(BROKEN))
def test_converter_refuses_broken_checkpoint(broken, kind, work):
    out_dir = work / f"refused-{kind}"
    proc = _convert(broken / kind / "model.ckpt-5000", out_dir / "cub-inc.pth", work)
    assert proc.returncode == 2, proc.stderr[-3000:]
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("stackgan: error: "), proc.stderr[-3000:]
    assert BROKEN[kind] in lines[0], lines[0]
    assert not out_dir.exists() or not any(out_dir.iterdir())


def test_converted_file_is_plain_tensors(converted):
    state = torch.load(converted, map_location="cpu", weights_only=True)
    assert isinstance(state, dict) and state
    assert all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items())
    # The background row stays in the file; the extractor drops it before the softmax.
    assert state["logits.weight"].shape == (CLASSES + 1, 2048)
    assert state["logits.bias"].shape == (CLASSES + 1,)
