"""torch-fidelity extractor `inception-v3-slim`: an exact port of the old TF-slim Inception-v3
(tensorflow/models `inception/slim/inception_model.py`, the copy in hanzhanggit/StackGAN-inception-model)
that the authors' fine-tuned IS model runs in its `inception_score.py`, evaluated as they did
(is_training=False: BatchNorm on moving statistics, no dropout, aux head unused).

What slim does, and this port mirrors:
- every conv is `ops.conv2d` with `batch_norm_params`: conv without bias -> BatchNorm with a
  `beta` and *no* `gamma` (ops.batch_norm's scale=False), epsilon 0.001, moving mean/variance
  -> ReLU;
- the stem (conv0..pool2) defaults to VALID padding (conv2 alone is SAME); inside the mixed
  blocks everything is stride 1, SAME, except the stride-2 reductions, which are VALID. SAME
  here only ever meets stride 1 and odd kernels, where TF pads (k-1)/2 on both sides;
- `avg_pool` 3x3 stride 1 SAME in every block's branch_pool, incl. both 8x8x2048 blocks: TF
  leaves padded cells out of the mean (count_include_pad=False). torch-fidelity's 2015 graph
  max-pools the last block's branch_pool; slim does not, and neither does this port;
- the head: 8x8 VALID average pool -> 2048 features -> `logits/logits` (fc with bias, no
  activation) to K+1 outputs, output 0 being the unused background class.

Weights file (written by `stackgan convert-inception`, see convert_inception.py): a plain state
dict of float32 tensors, keys named after the TF variables, '/' -> '.':
    TF variable                                      state-dict key (torch shape)
    conv0/weights (kh, kw, in, out)                  conv0.weight (out, in, kh, kw)
    conv0/BatchNorm/beta (out,)                      conv0.BatchNorm.beta
    conv0/BatchNorm/moving_mean (out,)               conv0.BatchNorm.moving_mean
    conv0/BatchNorm/moving_variance (out,)           conv0.BatchNorm.moving_variance
    mixed_35x35x256a/branch5x5/Conv_1/weights        mixed_35x35x256a.branch5x5.Conv_1.weight
    ... (same for conv1..conv4 and every `<block>/<branch>/Conv[_i]`)
    logits/logits/weights (2048, K+1)                logits.weight (K+1, 2048)
    logits/logits/biases (K+1,)                      logits.bias (K+1,)
Convs inside a branch scope are `Conv`, `Conv_1`, ... in slim's creation order, the order in
which `_STEM` and `_BLOCKS` below list them. The background row 0 of the logits stays in the file.

Features: "2048" (pool features), "logits" (N, K): the known-class logits, background column
dropped, which is what the authors softmax; "logits_full" (N, K+1).
"""

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch_fidelity import register_feature_extractor
from torch_fidelity.registry import FEATURE_EXTRACTORS_REGISTRY

from stackgan.errors import UserError
from stackgan.metrics.fidelity import Extractor
from stackgan.metrics.weights import load_weights

EXTRACTOR_NAME = "inception-v3-slim"
INPUT_SIZE = 299
FEATURES = 2048
REMEDY = ("convert the authors' checkpoint with `stackgan convert-inception CKPT --out FILE` "
          "and pass that FILE")


def _c(out, k, stride=1, padding="SAME"):
    """One ops.conv2d: (filters out, (kh, kw), stride, padding)."""
    return out, (k, k) if isinstance(k, int) else tuple(k), stride, padding


# Transcribed from inception_model.py (line numbers of the StackGAN-inception-model copy).
# Stem (L85-106): arg_scope stride 1, VALID.
_STEM = (
    ("conv0", _c(32, 3, 2, "VALID")),
    ("conv1", _c(32, 3, 1, "VALID")),
    ("conv2", _c(64, 3, 1, "SAME")),
    ("pool1", None),  # max_pool 3x3 stride 2 VALID
    ("conv3", _c(80, 1, 1, "VALID")),
    ("conv4", _c(192, 3, 1, "VALID")),
    ("pool2", None),
)


def _mixed_35(pool_out):  # L112-158
    return (("branch1x1", None, (_c(64, 1),), 0),
            ("branch5x5", None, (_c(48, 1), _c(64, 5)), 0),
            ("branch3x3dbl", None, (_c(64, 1), _c(96, 3), _c(96, 3)), 0),
            ("branch_pool", "avg", (_c(pool_out, 1),), 0))


def _mixed_17(mid):  # L173-247
    return (("branch1x1", None, (_c(192, 1),), 0),
            ("branch7x7", None, (_c(mid, 1), _c(mid, (1, 7)), _c(192, (7, 1))), 0),
            ("branch7x7dbl", None, (_c(mid, 1), _c(mid, (7, 1)), _c(mid, (1, 7)), _c(mid, (7, 1)),
                                    _c(192, (1, 7))), 0),
            ("branch_pool", "avg", (_c(192, 1),), 0))


def _mixed_8():  # L282-316; the last two convs of branch3x3/branch3x3dbl both read the one before (fork 2)
    return (("branch1x1", None, (_c(320, 1),), 0),
            ("branch3x3", None, (_c(384, 1), _c(384, (1, 3)), _c(384, (3, 1))), 2),
            ("branch3x3dbl", None, (_c(448, 1), _c(384, 3), _c(384, (1, 3)), _c(384, (3, 1))), 2),
            ("branch_pool", "avg", (_c(192, 1),), 0))


# Blocks (L109-316): arg_scope stride 1, SAME. Each branch: (scope, pool first or None, convs, fork).
_BLOCKS = (
    ("mixed_35x35x256a", _mixed_35(32)),
    ("mixed_35x35x288a", _mixed_35(64)),
    ("mixed_35x35x288b", _mixed_35(64)),
    ("mixed_17x17x768a", (("branch3x3", None, (_c(384, 3, 2, "VALID"),), 0),
                          ("branch3x3dbl", None, (_c(64, 1), _c(96, 3), _c(96, 3, 2, "VALID")), 0),
                          ("branch_pool", "max", (), 0))),
    ("mixed_17x17x768b", _mixed_17(128)),
    ("mixed_17x17x768c", _mixed_17(160)),
    ("mixed_17x17x768d", _mixed_17(160)),
    ("mixed_17x17x768e", _mixed_17(192)),
    ("mixed_17x17x1280a", (("branch3x3", None, (_c(192, 1), _c(320, 3, 2, "VALID")), 0),
                           ("branch7x7x3", None, (_c(192, 1), _c(192, (1, 7)), _c(192, (7, 1)),
                                                  _c(192, 3, 2, "VALID")), 0),
                           ("branch_pool", "max", (), 0))),
    ("mixed_8x8x2048a", _mixed_8()),
    ("mixed_8x8x2048b", _mixed_8()),
)


def _conv_names(n):
    """slim's default variable scopes of n convs created in one scope: Conv, Conv_1, Conv_2, ..."""
    return ["Conv"] + [f"Conv_{i}" for i in range(1, n)]


def _branch_inputs(c_in, convs, fork):
    """In channels of each conv of a branch, and the branch's out channels."""
    ins, c = [], c_in
    for i, spec in enumerate(convs):
        ins.append(c)
        if i < len(convs) - fork:
            c = spec[0]
    return ins, (sum(spec[0] for spec in convs[len(convs) - fork:]) if fork else c)


def _conv_layout():
    """(TF scope, in channels, conv spec) of every conv in creation order, each block's in channels,
    and the width of the features the head pools."""
    layout, c = [], 3
    for scope, spec in _STEM:
        if spec is not None:
            layout.append((scope, c, spec))
            c = spec[0]
    block_in = {}
    for block, branches in _BLOCKS:
        block_in[block], width = c, 0
        for branch, _, convs, fork in branches:
            ins, out = _branch_inputs(c, convs, fork)
            layout += [(f"{block}/{branch}/{name}", c_conv, spec)
                       for name, c_conv, spec in zip(_conv_names(len(convs)), ins, convs)]
            width += out
        c = width
    return layout, block_in, c


def expected_tf_variables(num_classes) -> dict:
    """TF name -> TF shape of every model variable of the authors' checkpoint (K = num_classes known
    classes, K+1 logits), without EMA shadows, optimizer slots or the aux head."""
    layout, _, width = _conv_layout()
    shapes = {}
    for scope, c_in, (out, (kh, kw), _, _) in layout:
        shapes[f"{scope}/weights"] = (kh, kw, c_in, out)
        for name in ("beta", "moving_mean", "moving_variance"):
            shapes[f"{scope}/BatchNorm/{name}"] = (out,)
    shapes["logits/logits/weights"] = (width, num_classes + 1)
    shapes["logits/logits/biases"] = (num_classes + 1,)
    return shapes


class BatchNorm(nn.Module):
    """slim ops.batch_norm at inference: center (beta), no scale (gamma), moving statistics."""

    EPS = 0.001

    def __init__(self, channels):
        super().__init__()
        self.beta = nn.Parameter(torch.zeros(channels))
        self.register_buffer("moving_mean", torch.zeros(channels))
        self.register_buffer("moving_variance", torch.ones(channels))

    def forward(self, x):
        # tf.nn.batch_normalization's own arithmetic: x * inv + (beta - mean * inv).
        inv = torch.rsqrt(self.moving_variance + self.EPS)
        return x * inv[:, None, None] + (self.beta - self.moving_mean * inv)[:, None, None]


class Conv(nn.Module):
    """slim ops.conv2d with batch_norm_params: conv (no bias) -> BatchNorm -> ReLU."""

    def __init__(self, c_in, spec):
        super().__init__()
        out, (kh, kw), self.stride, padding = spec
        self.weight = nn.Parameter(torch.zeros(out, c_in, kh, kw))
        self.BatchNorm = BatchNorm(out)
        self.padding = ((kh - 1) // 2, (kw - 1) // 2) if padding == "SAME" else (0, 0)

    def forward(self, x):
        return F.relu(self.BatchNorm(F.conv2d(x, self.weight, None, self.stride, self.padding)))


def _pool(kind, x):
    if kind == "avg":  # 3x3 stride 1 SAME: TF averages only the cells inside the image
        return F.avg_pool2d(x, 3, 1, 1, count_include_pad=False)
    return F.max_pool2d(x, 3, 2)  # the reductions' 3x3 stride 2 VALID


class Branch(nn.Module):
    """One branch scope: an optional pool, then Conv, Conv_1, ...; the last `fork` convs all read
    the conv before them and are concatenated."""

    def __init__(self, c_in, pool, convs, fork):
        super().__init__()
        self.pool, self.fork = pool, fork
        ins, _ = _branch_inputs(c_in, convs, fork)
        for name, c, spec in zip(_conv_names(len(convs)), ins, convs):
            self.add_module(name, Conv(c, spec))

    def forward(self, x):
        if self.pool is not None:
            x = _pool(self.pool, x)
        convs = list(self.children())
        chain, forked = convs[:len(convs) - self.fork], convs[len(convs) - self.fork:]
        for conv in chain:
            x = conv(x)
        return torch.cat([conv(x) for conv in forked], 1) if forked else x


class Mixed(nn.Module):
    def __init__(self, c_in, branches):
        super().__init__()
        for name, pool, convs, fork in branches:
            self.add_module(name, Branch(c_in, pool, convs, fork))

    def forward(self, x):
        return torch.cat([branch(x) for branch in self.children()], 1)


class SlimInceptionNet(nn.Module):
    """The network: float (N, 3, 299, 299) in [-1, 1] -> (pool features (N, 2048), logits (N, K+1))."""

    def __init__(self, num_logits):
        super().__init__()
        layout, block_in, width = _conv_layout()
        for scope, c_in, spec in layout:
            if "/" not in scope:
                self.add_module(scope, Conv(c_in, spec))
        self._stem = [name for name, _ in _STEM]
        self._blocks = [name for name, _ in _BLOCKS]
        for name, branches in _BLOCKS:
            self.add_module(name, Mixed(block_in[name], branches))
        self.logits = nn.Linear(width, num_logits)

    def forward(self, x):
        for name in self._stem:
            x = getattr(self, name)(x) if name in self._modules else F.max_pool2d(x, 3, 2)
        for name in self._blocks:
            x = getattr(self, name)(x)
        pool = F.avg_pool2d(x, x.shape[-2:]).flatten(1)  # logits/pool: the whole 8x8 map, VALID
        return pool, self.logits(pool)


def load_net(path) -> SlimInceptionNet:
    """The network with the weights in `path`; a file that does not fit is a one-line UserError."""
    state = load_weights(path, REMEDY)
    logits = state.get("logits.weight")
    if logits is None or logits.dim() != 2 or logits.shape[1] != FEATURES or logits.shape[0] < 2:
        raise UserError(f"{path} has no logits.weight of shape (K+1, {FEATURES}), so it is not a converted slim "
                        f"Inception-v3; {REMEDY}")
    net = SlimInceptionNet(logits.shape[0])
    want = {k: tuple(v.shape) for k, v in net.state_dict().items()}
    missing = [k for k in want if k not in state]
    unknown = [k for k in state if k not in want]
    misshaped = [f"{k} {state[k].dtype} {tuple(state[k].shape)} vs float {want[k]}" for k in want
                 if k in state and (tuple(state[k].shape) != want[k] or not state[k].is_floating_point())]
    problems = [f"{len(names)} {what} ({', '.join(names[:3])})"
                for what, names in (("missing", missing), ("unknown", unknown), ("misshaped", misshaped)) if names]
    if problems:
        raise UserError(f"{path} does not fit the slim Inception-v3: {'; '.join(problems)}; {REMEDY}")
    net.load_state_dict(state)
    return net.requires_grad_(False).eval()


class SlimInceptionV3(Extractor):
    FEATURES = ("2048", "logits", "logits_full")
    METRIC_FEATURES = {"isc": "logits", "fid": "2048", "kid": "2048", "prc": "2048"}
    INPUT = (torch.uint8, INPUT_SIZE)

    def __init__(self, name, features_list, feature_extractor_weights_path=None, **kwargs):
        super().__init__(name, features_list)
        if feature_extractor_weights_path is None:
            raise UserError(f"the {EXTRACTOR_NAME} extractor needs its weights file; {REMEDY}")
        self.net = load_net(feature_extractor_weights_path)

    def forward(self, x):
        if not (torch.is_tensor(x) and x.dtype == torch.uint8 and x.dim() == 4
                and tuple(x.shape[1:]) == (3, INPUT_SIZE, INPUT_SIZE)):
            got = f"{x.dtype} {tuple(x.shape)}" if torch.is_tensor(x) else type(x).__name__
            raise ValueError(f"{EXTRACTOR_NAME} takes uint8 images (N, 3, {INPUT_SIZE}, {INPUT_SIZE}), already "
                             f"resized by the protocol; got {got}")
        # The authors' scaling, in float32 as numpy did it: x / 127.5 - 1.
        pool, logits = self.net(x.float() / 127.5 - 1)
        out = {"2048": pool, "logits": logits[:, 1:], "logits_full": logits}
        return tuple(out[k] for k in self.features_list)


if EXTRACTOR_NAME not in FEATURE_EXTRACTORS_REGISTRY:
    register_feature_extractor(EXTRACTOR_NAME, SlimInceptionV3)
