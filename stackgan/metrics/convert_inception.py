"""`stackgan convert-inception CKPT --out FILE`: the authors' fine-tuned TF Inception-v3 checkpoint
(StackGAN-inception-model, e.g. `birds_valid299/model.ckpt-5000`) as a plain state dict for the
`inception-v3-slim` extractor (slim_inception.py documents the names and shapes).

Which values: the authors' inception_score.py restores `ExponentialMovingAverage(0.9999)
.variables_to_restore()`, i.e. for every trainable variable *and* every variable in the
MOVING_AVERAGE_VARIABLES collection its shadow `<var>/ExponentialMovingAverage`. slim's
batch_norm puts moving_mean/moving_variance in that collection (ops.py, `moving_collections`),
and tensorflow/models' inception_train.py averages `trainable_variables() +
moving_average_variables()` (its "double-average" of the BatchNorm statistics). So every value
here, the BatchNorm moving statistics included, comes from its EMA shadow; the raw variables are
only checked for presence and shape.

A checkpoint is refused unless it holds exactly the model's variables, each with its shadow, all
of the expected shapes. Known bookkeeping is allowed and ignored: `global_step`, the aux head
(`aux_logits/...`, unused by the authors' IS), optimizer slots of model variables (`/RMSProp`,
`/RMSProp_1`, `/Momentum`), the zero-debias state TF's assign_moving_average keeps beside each
BatchNorm moving statistic (`/biased`, `/local_step`), the training losses' moving averages that
tensorflow/models' inception_train.py keeps per GPU tower (`tower_<i>/.../avg`), and EMA shadows of
any of these.
TensorFlow is needed only here (`pip install -e ".[tf]"`), imported when a conversion runs.
"""

import os
import re
from pathlib import Path

import numpy as np
import torch

from stackgan.atomic import torch_save
from stackgan.errors import UserError
from stackgan.hashing import sha256_file
from stackgan.metrics.slim_inception import FEATURES, expected_tf_variables

SHADOW = "/ExponentialMovingAverage"
LOGITS = "logits/logits/weights"
REMEDY = ("pass the authors' birds or flowers checkpoint (prefix such as .../birds_valid299/model.ckpt-5000, "
          "or its folder) from `stackgan fetch stackgan-inception`")
_SLOTS = ("/RMSProp", "/RMSProp_1", "/Momentum")
_DEBIAS = re.compile(r"/BatchNorm/moving_(mean|variance)/(biased|local_step)$")
_LOSS_AVERAGE = re.compile(r"^tower_\d+/.+/avg$")


def torch_key(tf_name: str) -> str:
    """The state-dict key of a TF model variable: '/' -> '.', `weights` -> `weight`; the class layer
    `logits/logits/{weights,biases}` -> `logits.{weight,bias}`."""
    if tf_name.startswith("logits/logits/"):
        return {"weights": "logits.weight", "biases": "logits.bias"}[tf_name.rsplit("/", 1)[1]]
    key = tf_name.replace("/", ".")
    return key[: -len("weights")] + "weight" if key.endswith(".weights") else key


def to_torch(tf_name: str, value) -> torch.Tensor:
    """A TF variable's value in torch layout: conv (kh, kw, in, out) -> (out, in, kh, kw); fc
    (in, out) -> (out, in); vectors as they are. CPU float32, contiguous."""
    a = np.asarray(value, dtype=np.float32)
    if a.ndim == 4:
        a = a.transpose(3, 2, 0, 1)
    elif a.ndim == 2:
        a = a.T
    return torch.from_numpy(np.ascontiguousarray(a))


def _bookkeeping(name: str, model: dict) -> bool:
    base = name[: -len(SHADOW)] if name.endswith(SHADOW) else name
    if base == "global_step" or base.startswith("aux_logits/") or _LOSS_AVERAGE.match(base):
        return True
    slot = next((s for s in _SLOTS if base.endswith(s)), None)
    if slot is not None and base[: -len(slot)] in model:
        return True
    debias = _DEBIAS.search(base)
    return debias is not None and base[: debias.start()] + f"/BatchNorm/moving_{debias.group(1)}" in model


def _listed(names, limit=3):
    return ", ".join(names[:limit]) + (", ..." if len(names) > limit else "")


def num_classes_of(shapes: dict, source) -> int:
    shape = tuple(shapes.get(LOGITS, ()))
    if len(shape) != 2 or shape[0] != FEATURES or shape[1] < 2:
        raise UserError(f"{source} has no {LOGITS} of shape ({FEATURES}, K+1) (got {shape or 'none'}), so it is "
                        f"not a slim Inception-v3 checkpoint; {REMEDY}")
    return shape[1] - 1


def check_variables(shapes: dict, source) -> dict:
    """The expected model variables (TF name -> shape) of a checkpoint whose variable -> shape map is
    `shapes`; a one-line UserError naming the first offenders when it is not the authors' model."""
    shapes = {name: tuple(shape) for name, shape in shapes.items()}
    model = expected_tf_variables(num_classes_of(shapes, source))
    missing = [n for n in model if n not in shapes]
    no_shadow = [n for n in model if n in shapes and n + SHADOW not in shapes]
    misshaped = [f"{n} {shapes[n]} vs {model[v]}" for v in model for n in (v, v + SHADOW)
                 if n in shapes and shapes[n] != model[v]]
    unknown = [n for n in shapes
               if n not in model and not (n.endswith(SHADOW) and n[: -len(SHADOW)] in model)
               and not _bookkeeping(n, model)]
    problems = [f"{len(names)} {what} ({_listed(names)})"
                for what, names in (("missing", missing), ("without an EMA shadow", no_shadow),
                                    ("misshaped", misshaped), ("unknown", unknown)) if names]
    if problems:
        raise UserError(f"{source} is not the authors' slim Inception-v3 checkpoint: {'; '.join(problems)}; "
                        f"{REMEDY}")
    return model


def state_from_checkpoint(shapes: dict, read, source) -> dict:
    """The state dict of the `inception-v3-slim` extractor: every model variable's EMA shadow, read
    with `read(name) -> array`, in torch layout; the background logit row is kept."""
    model = check_variables(shapes, source)
    return {torch_key(name): to_torch(name, read(name + SHADOW)) for name in model}


def _tensorflow():
    # TF's C++ start-up messages would bury the converter's one-line summary.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    try:
        import tensorflow as tf
    except ImportError:
        raise UserError("TensorFlow is not installed, and reading a TF checkpoint needs it; "
                        "install it with pip install -e \".[tf]\"") from None
    return tf


def checkpoint_prefix(tf, ckpt) -> str:
    """The checkpoint prefix named by CKPT: a prefix, one of its files (.index / .data-*), or a folder
    (its `checkpoint` file's latest, else its single *.index)."""
    path = Path(ckpt)
    if path.is_dir():
        latest = tf.train.latest_checkpoint(str(path))
        if latest:
            return latest
        indexes = sorted(path.glob("*.index"))
        if len(indexes) != 1:
            raise UserError(f"{path} holds {len(indexes)} checkpoints (*.index) and no `checkpoint` file naming "
                            f"one; pass a checkpoint prefix, e.g. {path / 'model.ckpt-5000'}")
        return str(indexes[0])[: -len(".index")]
    prefix = re.sub(r"\.(index|data-\d+-of-\d+)$", "", str(path))
    if Path(prefix + ".index").is_file():
        return prefix
    if path.is_file():
        return str(path)  # a single file: TF's old V1 checkpoint format
    raise UserError(f"no TF checkpoint at {ckpt} (neither {prefix}.index nor a file); {REMEDY}")


def convert(ckpt, out) -> dict:
    """Convert the TF checkpoint `ckpt` into the weights file `out`; return a summary."""
    tf = _tensorflow()
    prefix = checkpoint_prefix(tf, ckpt)
    try:
        reader = tf.train.load_checkpoint(prefix)
        shapes = reader.get_variable_to_shape_map()
        state = state_from_checkpoint(shapes, reader.get_tensor, prefix)
    except (tf.errors.OpError, ValueError) as err:
        first = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise UserError(f"{prefix} cannot be read as a TF checkpoint ({first[:160]}); {REMEDY}") from None
    torch_save(state, out)
    return {"source": Path(prefix).name, "num_classes": state["logits.weight"].shape[0] - 1,
            "variables_read": len(state), "out": str(out), "sha256": sha256_file(out)}
