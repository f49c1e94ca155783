"""TensorFlow reference of the authors' IS network, for the converter's parity test (run it in a
child process: it keeps TensorFlow out of the torch test process).

An independent build, in TensorFlow's own ops (tf.compat.v1 graph mode), of the old slim
Inception-v3 exactly as hanzhanggit/StackGAN-inception-model (commit 971a2ef) evaluates it; the
line numbers below cite that repository:
- layers, scopes, kernels, strides and paddings: inception/slim/inception_model.py:80-330; every
  conv is ops.conv2d (ops.py:213-246: a `Conv`/`Conv_1`/... variable scope unless named, no bias)
  followed by ops.batch_norm (ops.py:80-132: scope `BatchNorm`, beta only, scale=False);
- batch_norm_params {'epsilon': 0.001} and ReLU on every conv: inception_score.py:167-178;
- evaluation: is_training=False (moving statistics, dropout off: inception_score.py:211, ops.py:
  122-125, 417), softmax over logits[:, 1:] (inception_score.py:213-216), and the EMA shadows
  restored through ExponentialMovingAverage(0.9999).variables_to_restore()
  (inception_score.py:220-224).
The checkpoint holds what tensorflow/models' inception_train.py (the authors' fine-tuning script)
saves with Saver(tf.all_variables()): the model variables, their EMA shadows (trainable variables
+ BatchNorm moving statistics), RMSProp's two slots of every trainable variable, and a float32
`global_step`.

Weights are random but calibrated (`build`): per-output-channel scales spread the BatchNorm
variances over four decades (so epsilon 1e-3 vs 1e-5 changes the output), the moving statistics
are the calibration batch's moments (non-zero means), and the logits layer is scaled
for a non-degenerate softmax. The raw variables differ from their shadows, so a converter that
reads the raw ones fails the parity test.

    python tests/tf_slim_reference.py build OUT_PREFIX [--classes 50] [--seed 0] [--calibration IMAGES.npy]
    python tests/tf_slim_reference.py break PREFIX OUT_DIR [--kinds missing extra misshaped missing-shadow]
    python tests/tf_slim_reference.py run PREFIX IMAGES.npy OUT.npy [--endpoints FILE.npz]

`run` takes float32 NHWC images of 299x299 already scaled to [-1, 1] and writes the (N, classes)
softmax; `--endpoints` also writes every block's activation, the 2048-d pool and the logits.
`break` writes OUT_DIR/<kind>/model.ckpt-5000: the checkpoint with one defect (see BREAKS).
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")  # before the import: TF logs at import time

import argparse  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from PIL import Image  # noqa: E402

v1 = tf.compat.v1
v1.disable_eager_execution()

EPSILON = 0.001  # inception_score.py:171
EMA_DECAY = 0.9999  # inception_score.py:62
SHADOW = "ExponentialMovingAverage"
CHECKPOINT_NAME = "model.ckpt-5000"
LOGIT_SPREAD = 2.0  # std of the centred logits over the calibration batch
MOVING = [v1.GraphKeys.GLOBAL_VARIABLES, v1.GraphKeys.MOVING_AVERAGE_VARIABLES]  # ops.py:99


def _session():
    return v1.Session(config=v1.ConfigProto(intra_op_parallelism_threads=2, inter_op_parallelism_threads=1))


class Slim:
    """slim's ops in TensorFlow ops. batch_stats=True normalises with the batch moments instead
    of the moving ones (slim's training branch, ops.py:112-121) and records them per conv: one
    run then calibrates every BatchNorm layer at once."""

    def __init__(self, batch_stats=False):
        self.batch_stats = batch_stats
        self.moments = {}  # conv scope name -> (mean, variance) tensors

    def conv(self, x, filters, kernel, stride=1, padding="SAME", scope=None):
        kh, kw = (kernel, kernel) if isinstance(kernel, int) else kernel
        zeros = v1.zeros_initializer()
        with v1.variable_scope(scope, default_name="Conv") as vs:
            w = v1.get_variable("weights", [kh, kw, x.shape[-1], filters], initializer=zeros)
            y = tf.nn.conv2d(x, w, [1, stride, stride, 1], padding)
            with v1.variable_scope(None, default_name="BatchNorm"):
                beta = v1.get_variable("beta", [filters], initializer=zeros)
                moving_mean = v1.get_variable("moving_mean", [filters], initializer=zeros,
                                              trainable=False, collections=MOVING)
                moving_var = v1.get_variable("moving_variance", [filters], initializer=zeros,
                                             trainable=False, collections=MOVING)
                if self.batch_stats:
                    mean, var = tf.nn.moments(y, [0, 1, 2])
                    self.moments[vs.name] = (mean, var)
                else:
                    mean, var = moving_mean, moving_var
                y = tf.nn.batch_normalization(y, mean, var, beta, None, EPSILON)
            return tf.nn.relu(y)

    @staticmethod
    def fc(x, units, scope=None):  # ops.fc with activation=None (inception_model.py:259, 325)
        zeros = v1.zeros_initializer()
        with v1.variable_scope(scope, default_name="FC"):
            w = v1.get_variable("weights", [x.shape[-1], units], initializer=zeros)
            b = v1.get_variable("biases", [units], initializer=zeros)
            return tf.compat.v1.nn.xw_plus_b(x, w, b)


def _avg(x, k, stride=1, padding="SAME"):
    k = (k, k) if isinstance(k, int) else k
    return tf.nn.avg_pool2d(x, [1, *k, 1], [1, stride, stride, 1], padding)


def _max(x, k, stride, padding):
    return tf.nn.max_pool2d(x, [1, k, k, 1], [1, stride, stride, 1], padding)


def _scope(name):
    return v1.variable_scope(name)


def _block_35(s, x, pool_filters):  # mixed_35x35x256a/288a/288b, inception_model.py:112-158
    with _scope("branch1x1"):
        b1 = s.conv(x, 64, 1)
    with _scope("branch5x5"):
        b5 = s.conv(s.conv(x, 48, 1), 64, 5)
    with _scope("branch3x3dbl"):
        b3 = s.conv(s.conv(s.conv(x, 64, 1), 96, 3), 96, 3)
    with _scope("branch_pool"):
        bp = s.conv(_avg(x, 3), pool_filters, 1)
    return tf.concat([b1, b5, b3, bp], 3)


def _block_17(s, x, c7):  # mixed_17x17x768b..e, inception_model.py:173-247
    with _scope("branch1x1"):
        b1 = s.conv(x, 192, 1)
    with _scope("branch7x7"):
        b7 = s.conv(s.conv(s.conv(x, c7, 1), c7, [1, 7]), 192, [7, 1])
    with _scope("branch7x7dbl"):
        d = s.conv(x, c7, 1)
        d = s.conv(d, c7, [7, 1])
        d = s.conv(d, c7, [1, 7])
        d = s.conv(d, c7, [7, 1])
        d = s.conv(d, 192, [1, 7])
    with _scope("branch_pool"):
        bp = s.conv(_avg(x, 3), 192, 1)
    return tf.concat([b1, b7, d, bp], 3)


def _block_8(s, x):  # mixed_8x8x2048a/b, inception_model.py:282-316; its pool branch averages
    with _scope("branch1x1"):
        b1 = s.conv(x, 320, 1)
    with _scope("branch3x3"):
        b3 = s.conv(x, 384, 1)
        b3 = tf.concat([s.conv(b3, 384, [1, 3]), s.conv(b3, 384, [3, 1])], 3)
    with _scope("branch3x3dbl"):
        d = s.conv(s.conv(x, 448, 1), 384, 3)
        d = tf.concat([s.conv(d, 384, [1, 3]), s.conv(d, 384, [3, 1])], 3)
    with _scope("branch_pool"):
        bp = s.conv(_avg(x, 3), 192, 1)
    return tf.concat([b1, b3, d, bp], 3)


def inception_v3(inputs, num_logits, s):
    """(logits, end_points) of inception_model.py:52-330 at is_training=False."""
    ep = {}
    # Stem: arg_scope stride 1, padding VALID (inception_model.py:83-107).
    ep["conv0"] = s.conv(inputs, 32, 3, stride=2, padding="VALID", scope="conv0")
    ep["conv1"] = s.conv(ep["conv0"], 32, 3, padding="VALID", scope="conv1")
    ep["conv2"] = s.conv(ep["conv1"], 64, 3, padding="SAME", scope="conv2")
    ep["pool1"] = _max(ep["conv2"], 3, 2, "VALID")
    ep["conv3"] = s.conv(ep["pool1"], 80, 1, padding="VALID", scope="conv3")
    ep["conv4"] = s.conv(ep["conv3"], 192, 3, padding="VALID", scope="conv4")
    ep["pool2"] = net = _max(ep["conv4"], 3, 2, "VALID")
    # Blocks: arg_scope stride 1, padding SAME (inception_model.py:109-110).
    for name, pool_filters in (("mixed_35x35x256a", 32), ("mixed_35x35x288a", 64), ("mixed_35x35x288b", 64)):
        with _scope(name):
            ep[name] = net = _block_35(s, net, pool_filters)
    with _scope("mixed_17x17x768a"):  # inception_model.py:160-171
        with _scope("branch3x3"):
            b3 = s.conv(net, 384, 3, stride=2, padding="VALID")
        with _scope("branch3x3dbl"):
            d = s.conv(s.conv(net, 64, 1), 96, 3)
            d = s.conv(d, 96, 3, stride=2, padding="VALID")
        with _scope("branch_pool"):
            bp = _max(net, 3, 2, "VALID")
        ep["mixed_17x17x768a"] = net = tf.concat([b3, d, bp], 3)
    for name, c7 in (("mixed_17x17x768b", 128), ("mixed_17x17x768c", 160), ("mixed_17x17x768d", 160),
                     ("mixed_17x17x768e", 192)):
        with _scope(name):
            ep[name] = net = _block_17(s, net, c7)
    with _scope("aux_logits"):  # inception_model.py:249-261: built (and restored) at evaluation too
        aux = _avg(tf.identity(net), 5, stride=3, padding="VALID")
        aux = s.conv(aux, 128, 1, scope="proj")
        aux = s.conv(aux, 768, [int(d) for d in aux.shape[1:3]], padding="VALID")
        ep["aux_logits"] = Slim.fc(tf.reshape(aux, [-1, 768]), num_logits)
    with _scope("mixed_17x17x1280a"):  # inception_model.py:266-280
        with _scope("branch3x3"):
            b3 = s.conv(s.conv(net, 192, 1), 320, 3, stride=2, padding="VALID")
        with _scope("branch7x7x3"):
            d = s.conv(s.conv(s.conv(net, 192, 1), 192, [1, 7]), 192, [7, 1])
            d = s.conv(d, 192, 3, stride=2, padding="VALID")
        with _scope("branch_pool"):
            bp = _max(net, 3, 2, "VALID")
        ep["mixed_17x17x1280a"] = net = tf.concat([b3, d, bp], 3)
    for name in ("mixed_8x8x2048a", "mixed_8x8x2048b"):
        with _scope(name):
            ep[name] = net = _block_8(s, net)
    with _scope("logits"):  # inception_model.py:318-329; dropout is the identity at evaluation
        pooled = _avg(net, [int(d) for d in net.shape[1:3]], padding="VALID")
        ep["pool"] = tf.reshape(pooled, [-1, int(net.shape[-1])])
        ep["logits"] = Slim.fc(ep["pool"], num_logits, scope="logits")
    return ep["logits"], ep


# ---- build: calibrated random weights ------------------------------------------------------

def _calibration_images(rng, n=8, size=299):
    """Smooth random colour fields with fine noise, in [-1, 1]: varied enough that a random
    net's features differ between images."""
    fields = [Image.fromarray(rng.integers(0, 256, (6, 6, 3), dtype=np.uint8)).resize((size, size), Image.BILINEAR)
              for _ in range(n)]
    smooth = np.stack([np.asarray(f, np.float32) / 127.5 - 1 for f in fields])
    return np.clip(smooth + 0.2 * rng.standard_normal(smooth.shape), -1, 1).astype(np.float32)


def _model_variables(num_logits, batch_stats):
    """(inputs placeholder, end points, Slim) of the network, built in the current graph."""
    inputs = v1.placeholder(tf.float32, [None, 299, 299, 3], name="inputs")
    s = Slim(batch_stats=batch_stats)
    _, ep = inception_v3(inputs, num_logits, s)
    return inputs, ep, s


def _shadow_values(rng, variables, num_logits, calibrate):
    """Calibrated evaluation weights: what the EMA shadows hold. calibrate(values) -> (the
    BatchNorm moments of each conv, the pool features) on the calibration batch."""
    values = {}
    for v in variables:
        name, shape = v.op.name, v.shape.as_list()
        if name.endswith("/weights") and len(shape) == 4:
            fan_in = shape[0] * shape[1] * shape[2]
            # Per-channel gain: BatchNorm variances then span ~1e-3.5..1e0.5, around epsilon.
            gain = 10.0 ** rng.uniform(-1.75, 0.25, size=shape[3])
            values[name] = rng.standard_normal(shape) * np.sqrt(2.0 / fan_in) * gain
        elif name.endswith("/beta"):
            # Mostly active ReLUs (~16% cut): with beta ~ 0 a random BatchNorm net is chaotic and
            # float32 round-off grows ~1.2x per layer, to near the parity tolerance at the logits.
            values[name] = rng.normal(1.0, 0.3, size=shape)
        elif name.startswith("aux_logits/FC/"):
            values[name] = rng.normal(0.0, 0.01, size=shape)
    moments, feats = calibrate(values)
    # The batch's own moments: evaluation then computes exactly what the calibration run did.
    for conv, (mean, var) in moments.items():
        values[f"{conv}/BatchNorm/moving_mean"] = mean
        values[f"{conv}/BatchNorm/moving_variance"] = var
    centred = feats - feats.mean(0)
    w = rng.standard_normal((feats.shape[1], num_logits))
    # A peaked but varied softmax, with no probability underflowing float32.
    w *= LOGIT_SPREAD / (centred @ w).std()
    values["logits/logits/weights"] = w
    values["logits/logits/biases"] = -feats.mean(0) @ w + rng.normal(0.0, 0.5, size=num_logits)
    return {k: np.asarray(a, np.float32) for k, a in values.items()}


def _perturbed(rng, name, value):
    """A raw variable: its shadow moved clearly away, as a short EMA leaves it."""
    if name.endswith("moving_variance"):
        return (value * np.exp(0.3 * rng.standard_normal(value.shape))).astype(np.float32)
    return (value + 0.2 * value.std() * rng.standard_normal(value.shape)).astype(np.float32)


def build(prefix, classes, seed, calibration=None):
    """calibration: float32 (N, 299, 299, 3) images in [-1, 1] of the kind the net will be run on
    (a random net's fixed BatchNorm statistics only fit images like those they were taken on)."""
    rng = np.random.default_rng(seed)
    num_logits = classes + 1  # label 0: the unused background class (inception_score.py:200-202)
    images = _calibration_images(rng) if calibration is None else _checked_images(calibration)
    with tf.Graph().as_default():
        inputs, ep, s = _model_variables(num_logits, batch_stats=True)
        variables = v1.global_variables()
        trainable = {v.op.name for v in v1.trainable_variables()}
        averaged = trainable | {v.op.name for v in v1.moving_average_variables()}
        with _session() as sess:
            load = _loader(variables)

            def calibrate(values):
                load(sess, values)
                moments, feats = sess.run((s.moments, ep["pool"]), {inputs: images})
                moments = {k: (m.astype(np.float64), va.astype(np.float64)) for k, (m, va) in moments.items()}
                return moments, feats.astype(np.float64)

            shadows = _shadow_values(rng, variables, num_logits, calibrate)
    ckpt = {}
    for v in variables:  # creation order: every draw below comes in a fixed order
        name = v.op.name
        ckpt[name] = _perturbed(rng, name, shadows[name])
        if name in averaged:
            ckpt[f"{name}/{SHADOW}"] = shadows[name]
        if name in trainable:  # RMSPropOptimizer's slots `rms` and `momentum`
            ckpt[f"{name}/RMSProp"] = np.ones_like(shadows[name])
            ckpt[f"{name}/RMSProp_1"] = np.zeros_like(shadows[name])
    ckpt["global_step"] = np.float32(5000)
    save({prefix: ckpt})


def _loader(variables):
    """load(sess, values): sets every variable in one run (absent ones to zeros)."""
    feeds = {v.op.name: v1.placeholder(v.dtype.base_dtype, v.shape) for v in variables}
    assign = tf.group(*[v.assign(feeds[v.op.name]) for v in variables])

    def load(sess, values):
        sess.run(assign, {ph: values.get(name, np.zeros(ph.shape, np.float32)) for name, ph in feeds.items()})
    return load


def save(checkpoints):
    """Name-based checkpoints written by tf.compat.v1.train.Saver: {prefix: {name: array}}.
    One graph serves them all (TF builds ~5 ms of Python per variable): arrays the
    checkpoints share become one variable."""
    with tf.Graph().as_default():
        feeds, made, savers = {}, {}, []
        for prefix, arrays in checkpoints.items():
            var_list = {}
            for name, value in arrays.items():
                key = (name, id(value))
                if key not in made:
                    value = np.asarray(value)
                    ph = v1.placeholder(tf.as_dtype(value.dtype), value.shape)
                    made[key] = v1.Variable(ph, trainable=False, name=f"v{len(made)}")
                    feeds[ph] = value
                var_list[name] = made[key]
            savers.append((prefix, v1.train.Saver(var_list)))
        with _session() as sess:
            sess.run(v1.global_variables_initializer(), feeds)
            for prefix, saver in savers:
                Path(prefix).parent.mkdir(parents=True, exist_ok=True)
                saver.save(sess, str(prefix), write_meta_graph=False)


def read(prefix):
    reader = tf.train.load_checkpoint(str(prefix))
    return {name: reader.get_tensor(name) for name in reader.get_variable_to_shape_map()}


# ---- break: one defect per checkpoint ------------------------------------------------------

def _missing(ckpt):  # a model variable and its shadow gone
    name = "mixed_17x17x768c/branch7x7dbl/Conv_3/BatchNorm/moving_variance"
    del ckpt[name], ckpt[f"{name}/{SHADOW}"]


def _extra(ckpt):  # a conv the architecture does not have (with its shadow, as training writes it)
    name = "mixed_8x8x2048b/branch1x1/Conv_1/weights"
    ckpt[name] = ckpt[f"{name}/{SHADOW}"] = np.zeros((1, 1, 2048, 320), np.float32)


def _misshaped(ckpt):  # a 3x3 kernel where the net has 5x5, raw and shadow alike
    name = "mixed_35x35x288a/branch5x5/Conv_1/weights"
    for key in (name, f"{name}/{SHADOW}"):
        ckpt[key] = ckpt[key][1:4, 1:4]


def _missing_shadow(ckpt):  # the raw variable is there, the evaluated shadow is not
    del ckpt[f"conv2/BatchNorm/moving_mean/{SHADOW}"]


BREAKS = {"missing": _missing, "extra": _extra, "misshaped": _misshaped, "missing-shadow": _missing_shadow}


def write_broken(prefix, out_dir, kinds):
    good = read(prefix)
    broken = {}
    for kind in kinds:
        broken[Path(out_dir) / kind / CHECKPOINT_NAME] = ckpt = dict(good)
        BREAKS[kind](ckpt)
    save(broken)


# ---- run: the authors' evaluation ----------------------------------------------------------

def _checked_images(path):
    images = np.load(path)
    if images.dtype != np.float32 or images.ndim != 4 or images.shape[1:] != (299, 299, 3):
        raise SystemExit(f"{path}: want float32 (N, 299, 299, 3) in [-1, 1], got {images.dtype} {images.shape}")
    return images


def run(prefix, images_path, out_path, endpoints_path=None):
    images = _checked_images(images_path)
    num_logits = read_shapes(prefix)["logits/logits/biases"][0]
    with tf.Graph().as_default():
        inputs, ep, _ = _model_variables(num_logits, batch_stats=False)
        probs = tf.nn.softmax(ep["logits"][:, 1:])  # background logit dropped (inception_score.py:213-216)
        restore = tf.train.ExponentialMovingAverage(EMA_DECAY).variables_to_restore()
        with _session() as sess:
            v1.train.Saver(restore).restore(sess, str(prefix))
            got = sess.run({"probs": probs, **ep} if endpoints_path else {"probs": probs}, {inputs: images})
    np.save(out_path, got.pop("probs"))
    if endpoints_path:
        np.savez(endpoints_path, **got)


def read_shapes(prefix):
    return tf.train.load_checkpoint(str(prefix)).get_variable_to_shape_map()


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("build")
    b.add_argument("prefix")
    b.add_argument("--classes", type=int, default=50)
    b.add_argument("--seed", type=int, default=0)
    b.add_argument("--calibration", help="float32 (N, 299, 299, 3) .npy in [-1, 1] to calibrate on")
    k = sub.add_parser("break")
    k.add_argument("prefix")
    k.add_argument("out_dir")
    k.add_argument("--kinds", nargs="+", choices=sorted(BREAKS), default=sorted(BREAKS))
    r = sub.add_parser("run")
    r.add_argument("prefix")
    r.add_argument("images")
    r.add_argument("out")
    r.add_argument("--endpoints")
    a = p.parse_args(argv)
    if a.cmd == "build":
        build(a.prefix, a.classes, a.seed, a.calibration)
    elif a.cmd == "break":
        write_broken(a.prefix, a.out_dir, a.kinds)
    else:
        run(a.prefix, a.images, a.out, a.endpoints)


if __name__ == "__main__":
    main()
