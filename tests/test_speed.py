"""The speed switches (stackgan/speed.py) against the faithful run they replace: fp32, eager,
torch's single-tensor Adam, inputs finished on the CPU. Each compares losses (and weights)
over five iterations of a tiny StackGAN-v2 on the CPU; the bounds are measured drifts with
headroom, so a switch that computed something else fails."""

import copy

import pytest
import torch

from configs import resolved
from stackgan import speed
from stackgan.errors import UserError
from stackgan.methods import build_method

STEPS = 5
CFG = resolved("synthetic-v2", gf_dim=4, df_dim=4, z_dim=8, ef_dim=4, text_dim=16, r_num=1,
               branch_sizes=[16, 32, 64], ema={"decay": 0.9, "snapshot_reset": True, "snapshot_interval": 3})
# StackGAN-v1 Stage-I: its losses call D's encode and heads besides forward
V1_CFG = resolved("synthetic-v1-s1", gf_dim=4, df_dim=4, z_dim=8, ef_dim=4, text_dim=16)


def random_batch(method, b):
    """The family's example batch with seeded values: images in [-1, 1], embeddings N(0, 1)."""
    g = torch.Generator().manual_seed(0)
    batch = method.example_batch(b, torch.device("cpu"))

    def fill(t):
        if not t.is_floating_point():
            return t
        return torch.rand(t.shape, generator=g) * 2 - 1 if t.dim() == 4 else torch.randn(t.shape, generator=g)

    fmt = torch.channels_last if method.c.train.channels_last else torch.contiguous_format
    return {k: [fill(t).contiguous(memory_format=fmt) for t in v] if isinstance(v, list) else fill(v)
            for k, v in batch.items()}


def run(cfg=CFG, **train_settings):
    """Losses of STEPS iterations ({name: float} per step) and the final weights of every net."""
    cfg = copy.deepcopy(cfg)
    cfg["train"].update(train_settings)
    torch.manual_seed(0)
    m = build_method(cfg, torch.device("cpu"))
    speed.apply(m.nets, m.c.train)
    b = 4
    batch = random_batch(m, b)
    losses = []
    for step in range(STEPS):
        with speed.autocast(torch.device("cpu"), m.c.train.amp):
            logs = m.train_step(batch, m.draw_noise(torch.Generator().manual_seed(step), b), step)
        losses.append({k: float(v) for k, v in logs.items()})
    weights = {f"{n}.{k}": v.detach().clone() for n, net in m.nets.items() for k, v in net.state_dict().items()}
    return losses, weights


def largest_loss_gap(a, b):
    return max(abs(x[k] - y[k]) for x, y in zip(a, b) for k in x)


def largest_weight_gap(a, b):
    assert a.keys() == b.keys()  # compiled or not, the state-dict keys are the eager ones
    return max((a[k].float() - b[k].float()).abs().max().item() for k in a if a[k].is_floating_point())


@pytest.fixture(scope="module")
def reference():
    return run()


@pytest.mark.parametrize("impl", ["foreach", "fused"])
def test_adam_implementations_match_the_single_tensor_loop(reference, impl):
    losses, weights = run(adam=impl)
    # Measured: 0 (foreach) and 1e-6 on losses, 2e-7 on weights (fused) after five steps.
    assert largest_loss_gap(reference[0], losses) < 1e-5
    assert largest_weight_gap(reference[1], weights) < 1e-5


@pytest.mark.parametrize("cfg", [CFG, V1_CFG], ids=["v2", "v1"])
def test_compile_traces_the_eager_computation(reference, cfg):
    """aot_eager runs dynamo's capture and AOTAutograd's joint graph without codegen: the traced
    networks (BatchNorm in train mode, several D calls per backward, v1's encode/heads entry
    points, the EMA's in-place update) must give eager's bits. Inductor's fused kernels round
    differently: the slow test below."""
    want = reference if cfg is CFG else run(cfg)
    losses, weights = run(cfg, compile=True, compile_backend="aot_eager")
    assert losses == want[0]
    assert largest_weight_gap(want[1], weights) == 0


@pytest.mark.slow
def test_inductor_losses_stay_near_eager(reference):
    # Measured on CPU: 1.5e-4 at the first step (reassociated reductions over BatchNorm and the
    # loss sums), growing to 4e-2 by the fifth, as any rounding change does in a GAN this small.
    losses, _ = run(compile=True, compile_backend="inductor")
    assert largest_loss_gap(reference[0][:1], losses[:1]) < 1e-3
    assert largest_loss_gap(reference[0], losses) < 0.2


def test_bf16_autocast_drift_from_fp32_is_bounded(reference):
    losses, weights = run(amp=True, channels_last=True)
    gap = largest_loss_gap(reference[0], losses)
    # Measured: 0.10 on losses of 4-5 after five steps (bf16 keeps 8 bits of mantissa), 4e-3 on
    # weights; the weights and optimiser stay fp32.
    assert 1e-4 < gap < 0.2
    assert all(v.dtype == torch.float32 for v in weights.values() if v.is_floating_point())  # master weights


def test_channels_last_alone_keeps_the_run_close(reference):
    losses, _ = run(channels_last=True)
    assert largest_loss_gap(reference[0], losses) < 1e-4  # measured 2.4e-6: other convolution kernels


def test_unknown_switch_values_are_one_line_errors():
    with pytest.raises(UserError, match="train.adam is 'fast'; use one of loop, foreach, fused"):
        run(adam="fast")
    with pytest.raises(UserError, match="train.compile_backend is 'inductr'"):
        run(compile=True, compile_backend="inductr")
