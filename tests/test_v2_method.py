"""One StackGAN-v2 iteration: update order, EMA, the snapshot reset quirk, and the GPU switches."""

import copy

import pytest
import torch

from configs import resolved
from stackgan.methods.v2 import V2Method

CFG = resolved("synthetic-v2", conditional=True, gf_dim=2, df_dim=2, z_dim=4, ef_dim=3, text_dim=6, r_num=1,
               branch_sizes=[16, 32], emit=[True, True], discriminators=[0, 1],
               loss={"uncond": 1.0, "kl": 2.0, "color": 0.0},
               optim={"lr_g": 2e-4, "lr_d": 2e-4, "betas": [0.5, 0.999]},
               ema={"decay": 0.9, "snapshot_reset": True, "snapshot_interval": 3})


def batch(b=4, sizes=(16, 32)):
    g = torch.Generator().manual_seed(0)
    return {"imgs": [torch.rand(b, 3, s, s, generator=g) * 2 - 1 for s in sizes],
            "wrong_imgs": [torch.rand(b, 3, s, s, generator=g) * 2 - 1 for s in sizes],
            "emb": torch.randn(b, 6, generator=g)}


def method(**over):
    torch.manual_seed(0)
    return V2Method(copy.deepcopy({**CFG, **over}), torch.device("cpu"))


def noise(m, b=4, seed=1):
    return m.draw_noise(torch.Generator().manual_seed(seed), b)


def test_discriminators_step_before_the_generator_and_g_sees_updated_ds():
    m = method()
    order = []
    for name, opt in m.optims.items():
        original = opt.step
        opt.step = lambda *a, _n=name, _f=original, **k: (order.append(_n), _f(*a, **k))[1]
    d_forward_params = []
    hook = m.nets["D32"].register_forward_pre_hook(
        lambda mod, inp: d_forward_params.append(next(mod.parameters()).detach().clone()))
    m.train_step(batch(), noise(m), step=0)
    hook.remove()
    assert order == ["D16", "D32", "G"]
    # D32 ran 3 times in its own step (real, wrong, fake) and once more in G's step, after its update
    assert len(d_forward_params) == 4
    assert torch.equal(d_forward_params[0], d_forward_params[2])
    assert not torch.equal(d_forward_params[2], d_forward_params[3])


def test_ema_update_and_snapshot_reset_quirk():
    m = method()
    before = [p.detach().clone() for p in m.nets["G"].parameters()]
    m.train_step(batch(), noise(m), step=0)
    live = [p.detach() for p in m.nets["G"].parameters()]
    for avg, b, p in zip(m.ema, before, live):
        assert torch.allclose(avg, 0.9 * b + 0.1 * p, atol=1e-7)
    m.train_step(batch(), noise(m, seed=2), step=1)
    assert any(not torch.equal(a, p) for a, p in zip(m.ema, m.nets["G"].parameters()))
    m.train_step(batch(), noise(m, seed=3), step=2)  # (step + 1) % 3 == 0: live G := EMA
    assert all(torch.equal(a, p) for a, p in zip(m.ema, m.nets["G"].parameters()))
    off = method(ema={"decay": 0.9, "snapshot_reset": False, "snapshot_interval": 3})
    for s in range(3):
        off.train_step(batch(), noise(off, seed=s + 1), step=s)
    assert any(not torch.equal(a, p) for a, p in zip(off.ema, off.nets["G"].parameters()))


def test_kl_gradient_reaches_ca_and_d_gradient_flows_through_mu():
    m = method(loss={"uncond": 1.0, "kl": 2.0, "color": 0.0})
    fc = m.nets["G"].ca.fc.weight
    before = fc.detach().clone()
    m.train_step(batch(), noise(m), step=0)
    assert not torch.equal(before, fc.detach())


def test_unconditional_with_color_consistency_runs_and_logs_it():
    m = method(conditional=False, loss={"uncond": 1.0, "kl": 2.0, "color": 50.0})
    logs = m.train_step({"imgs": batch()["imgs"]}, noise(m), step=0)
    assert logs["color"] > 0 and "kl" not in logs


def test_bf16_autocast_step_runs_on_cpu():
    m = method()
    with torch.autocast(device_type="cpu", dtype=torch.bfloat16):
        logs = m.train_step(batch(), noise(m), step=0)
    assert all(torch.isfinite(torch.as_tensor(v)) for v in logs.values())


@pytest.mark.gpu
def test_channels_last_bf16_step_on_cuda():
    m = V2Method(copy.deepcopy(CFG), torch.device("cuda"))
    b = {k: [t.cuda().contiguous(memory_format=torch.channels_last) for t in v] if isinstance(v, list) else v.cuda()
         for k, v in batch().items()}
    with torch.autocast(device_type="cuda", dtype=torch.bfloat16):
        logs = m.train_step(b, {k: v.cuda() for k, v in noise(m).items()}, step=0)
    assert all(torch.isfinite(torch.as_tensor(v)) for v in logs.values())
