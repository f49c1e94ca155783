"""Speed switches of a training run (params.yaml `models.<family>.train`). Each one that can
change a bit of the faithful run (fp32, eager, torch's single-tensor Adam, inputs prepared on the
CPU) is off by default, and each has a parity test against that run (tests/test_speed.py).

- `adam`: `loop` is torch's single-tensor Adam, the arithmetic of the reference's optimiser;
  `foreach` (multi-tensor) and `fused` (one kernel per parameter group) compute the same update
  with other rounding.
- `compile`: torch.compile of every network, in place, so state-dict keys (checkpoints, model.pt)
  are the same as an eager run's, with `compile_backend`: inductor (fused kernels, whose rounding
  differs from eager: measured in tests/test_speed.py) or another backend, e.g. `aot_eager`, which
  traces the same graphs and keeps eager's bits (how the CPU tests check the capture).
- `tf32`: TF32 tensor cores for fp32 convolutions and matrix products on CUDA (cuDNN's default
  is on; ours off, as the reference's GPUs had none).
- `amp`: bf16 autocast (BCE and KL stay fp32, stackgan/losses/common.py); `channels_last`: NHWC
  memory layout.
- `input_on_device`: crops leave the loader as uint8 and are resized on the device
  (stackgan/data/device_resize.py), with the same pixels as the CPU path.
"""

import torch
import torch.distributed as dist

from stackgan.errors import UserError

ADAM_IMPLS = ("loop", "foreach", "fused")


def adam(params, lr, betas, impl):
    """torch.optim.Adam with the implementation `impl` (one of ADAM_IMPLS)."""
    if impl not in ADAM_IMPLS:
        raise UserError(f"train.adam is {impl!r}; use one of {', '.join(ADAM_IMPLS)} in params.yaml")
    return torch.optim.Adam(params, lr=lr, betas=tuple(betas), foreach=impl == "foreach", fused=impl == "fused")


def apply(nets, t):
    """The run's network switches (`t`: its TrainSettings), in place on the dict `nets`: called on
    the networks a method builds and on any it builds later (SGAN's joint phase). sync_bn
    converts only across ranks (stackgan/train.py refuses it without CUDA)."""
    if t.sync_bn and dist.is_initialized() and dist.get_world_size() > 1:
        for name, net in nets.items():
            nets[name] = torch.nn.SyncBatchNorm.convert_sync_batchnorm(net)
    if t.channels_last:
        to_channels_last(nets)
    if t.compile:
        compile_nets(nets, t.compile_backend)


def set_tf32(enabled):
    """TF32 for CUDA convolutions and matrix products (cuDNN's default is on, which rounds fp32
    inputs to 10 bits of mantissa; the reference's GPUs had no TF32): off unless train.tf32."""
    torch.backends.cudnn.allow_tf32 = enabled
    torch.backends.cuda.matmul.allow_tf32 = enabled


def compile_nets(nets, backend="inductor"):
    """torch.compile each network of `nets` (a dict) in place with `backend`: its forward and the
    methods it lists in `entry_points` (those its callers use besides forward)."""
    known = torch.compiler.list_backends(exclude_tags=())
    if backend not in known:
        raise UserError(f"train.compile_backend is {backend!r}; use inductor or another torch.compile backend "
                        f"({', '.join(b for b in known if 'TESTING' not in b)})")
    # Networks of one class share their code objects, and each instance, input dtype (fp32 reals,
    # bf16 fakes) and requires_grad is a version of it; past dynamo's limit (8) it runs eagerly.
    torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, 16 * len(nets))
    for net in nets.values():
        net.compile(backend=backend)
        for name in getattr(net, "entry_points", ()):
            setattr(net, name, torch.compile(getattr(net, name), backend=backend))


def to_channels_last(nets):
    for net in nets.values():
        net.to(memory_format=torch.channels_last)


def autocast(device, enabled):
    """bf16 autocast on `device` when `enabled`."""
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=enabled)
