from pathlib import Path

import pytest
import torch

from stackgan import config as C
from stackgan.methods.v2 import V2Config, build_networks, discriminator_names
from stackgan.models.v2 import GLU, Discriminator, Generator, init_weights

# The reference architecture: cub-v2 as the paper profile resolves it (models.v2's defaults).
REF = C.experiment_config(C.load_params(Path(__file__).resolve().parents[1] / "params.yaml"), "cub-v2", "paper")


def v2_config(**over):
    return V2Config.of({**REF, **over, "loss": {**REF["loss"], **over.get("loss", {})}})


def count(module):
    return sum(p.numel() for p in module.parameters())


def meta_networks(**over):
    with torch.device("meta"):
        return build_networks(v2_config(**over))


# Hand derivation from stackgan-reference.md §1 (conv3x3 has no bias: 9*cin*cout; BN: 2*C).
def conv3(cin, cout):
    return 9 * cin * cout


def bn(c):
    return 2 * c


def up(cin, cout):  # upBlock: conv3x3(cin -> 2*cout) + BN(2*cout) -> GLU
    return conv3(cin, 2 * cout) + bn(2 * cout)


def res(c):
    return conv3(c, 2 * c) + bn(2 * c) + conv3(c, c) + bn(c)


def next_stage(c, ef):
    return conv3(c + ef, 2 * c) + bn(2 * c) + 2 * res(c) + up(c, c // 2)


CA = 1024 * 512 + 512
INIT = 228 * 32768 + bn(32768) + up(1024, 512) + up(512, 256) + up(256, 128) + up(128, 64)
G_COND = CA + INIT + conv3(64, 3) + next_stage(64, 128) + conv3(32, 3) + next_stage(32, 128) + conv3(16, 3)
G_UNCOND = (100 * 32768 + bn(32768) + up(1024, 512) + up(512, 256) + up(256, 128) + up(128, 64) + conv3(64, 3)
            + next_stage(64, 100) + conv3(32, 3) + next_stage(32, 100) + conv3(16, 3))
ENC16 = 16 * (3 * 64 + 64 * 128 + 128 * 256 + 256 * 512) + bn(128) + bn(256) + bn(512)
HEAD = 512 * 16 + 1  # Conv2d(512, 1, 4, 4) with bias
JOINT = conv3(512 + 128, 512) + bn(512)
D64_TRUNK = ENC16
D128_TRUNK = ENC16 + 16 * 512 * 1024 + bn(1024) + conv3(1024, 512) + bn(512)
D256_TRUNK = (ENC16 + 16 * 512 * 1024 + bn(1024) + 16 * 1024 * 2048 + bn(2048)
              + conv3(2048, 1024) + bn(1024) + conv3(1024, 512) + bn(512))


def test_parameter_counts_match_hand_derivation():
    nets = meta_networks()
    assert count(nets["G"]) == G_COND == 21_239_696  # spec: ~21.24 M
    assert count(nets["D64"]) == D64_TRUNK + JOINT + 2 * HEAD  # ~5.72 M
    assert count(nets["D128"]) == D128_TRUNK + JOINT + 2 * HEAD  # ~18.83 M
    assert count(nets["D256"]) == D256_TRUNK + JOINT + 2 * HEAD  # ~71.27 M
    unc = meta_networks(conditional=False)
    assert count(unc["G"]) == G_UNCOND  # spec: ~16.47 M
    assert [count(unc[k]) for k in ("D64", "D128", "D256")] == [t + HEAD for t in (D64_TRUNK, D128_TRUNK, D256_TRUNK)]


def test_nojcu_drops_the_unconditional_head():
    nets = meta_networks(loss={"uncond": 0.0})
    assert count(nets["D64"]) == D64_TRUNK + JOINT + HEAD


def test_table5_variants_build_the_described_trees():
    g3 = v2_config(emit=[False, False, True], discriminators=[0])
    assert discriminator_names(g3) == ["D256"]
    g33 = v2_config(emit=[False, False, True], discriminators=[0, 0, 0])
    assert discriminator_names(g33) == ["D256", "D256b", "D256c"]
    nets = meta_networks(emit=[False, False, True], discriminators=[0])
    assert count(nets["G"]) == G_COND - conv3(64, 3) - conv3(32, 3)
    all256 = meta_networks(branch_sizes=[256, 256, 256])
    assert list(all256) == ["G", "D256", "D256b", "D256c"]


def tiny_generator(**over):
    kw = dict(gf_dim=4, z_dim=8, ef_dim=6, text_dim=12, branch_sizes=(16, 32, 64), r_num=1)
    kw.update(over)
    return Generator(**kw)


def test_generator_branch_shapes_and_range():
    torch.manual_seed(0)
    g = tiny_generator()
    init_weights(g)
    imgs, mu, logvar = g(torch.randn(3, 8), torch.randn(3, 12))
    assert [tuple(x.shape) for x in imgs] == [(3, 3, 16, 16), (3, 3, 32, 32), (3, 3, 64, 64)]
    assert mu.shape == logvar.shape == (3, 6)
    assert all(x.abs().max() <= 1 for x in imgs)
    same, _, _ = tiny_generator(branch_sizes=(16, 16, 32))(torch.randn(2, 8), torch.randn(2, 12))
    assert [x.shape[-1] for x in same] == [16, 16, 32]


def test_unconditional_generator_retiles_z():
    g = tiny_generator(conditional=False)
    imgs, mu, logvar = g(torch.randn(2, 8))
    assert mu is None and logvar is None and imgs[-1].shape == (2, 3, 64, 64)
    assert g.stages[1].joint[0].in_channels == g.stages[0].out_channels + 8


def test_discriminator_outputs_probabilities():
    d = Discriminator(32, df_dim=4, ef_dim=6)
    cond, uncond = d(torch.randn(5, 3, 32, 32), torch.randn(5, 6))
    assert cond.shape == uncond.shape == (5,)
    assert ((cond > 0) & (cond < 1)).all()
    with pytest.raises(ValueError):
        Discriminator(48)


def test_glu_gates_second_half():
    x = torch.tensor([[[[2.0]], [[0.0]]]])
    assert torch.allclose(GLU()(x), torch.tensor([[[[1.0]]]]))


def test_deterministic_forward_pinned_slice():
    torch.manual_seed(1234)
    g = tiny_generator()
    init_weights(g)
    g.eval()
    gen = torch.Generator().manual_seed(5)
    z, emb, eps = torch.randn(2, 8, generator=gen), torch.randn(2, 12, generator=gen), torch.randn(2, 6, generator=gen)
    imgs, mu, _ = g(z, emb, eps=eps)
    got = imgs[-1][0, :, 30, 30:33].flatten()
    pinned = torch.tensor(PINNED)
    assert torch.allclose(got, pinned, atol=1e-4), got.tolist()


PINNED = [-0.104606, -0.104658, -0.104786, 0.128428, 0.128545, 0.128351, -0.052525, -0.052259, -0.052522]
