"""StackGAN-v1 networks: shapes of every Table 4 variant, parameter counts derived by hand from
the reference layer lists, a pinned forward, the frozen Stage-I, CA and init."""

import pytest
import torch

from stackgan.errors import UserError
from stackgan.models.v1 import CANet, FixedTextCode, Stage1D, Stage1G, Stage2D, Stage2G, init_weights

# Tiny widths for the forward tests: Stage-I G 8*GF = 32 channels at 4x4.
GF, DF, C = 4, 2, 8


# --- hand arithmetic for parameter counts (all convs bias-free except the 4x4/s4 logit convs) --
def trainable_parameters(net):
    """What the reference optimizer receives: every parameter outside a frozen Stage-I."""
    return [p for p in net.parameters() if p.requires_grad]


def conv3(cin, cout):
    return 9 * cin * cout


def conv4(cin, cout):
    return 16 * cin * cout


def bn(c):
    return 2 * c


def ca(c_dim=128):
    return 1024 * 2 * c_dim + 2 * c_dim  # Linear(1024 -> 2*c_dim) with bias


def logit_head(ch):
    return conv4(ch, 1) + 1  # Conv2d(ch, 1, 4, stride 4) keeps its bias


def up(cin, cout):
    return conv3(cin, cout) + bn(cout)


def count(module, trainable_only=False):
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)


def stage1_g_by_hand(gf):
    ngf = 8 * gf
    fc = 228 * ngf * 16 + bn(ngf * 16)  # cat(z 100, c 128) -> ngf x 4 x 4, no bias
    ups = up(ngf, ngf // 2) + up(ngf // 2, ngf // 4) + up(ngf // 4, ngf // 8) + up(ngf // 8, ngf // 16)
    return ca() + fc + ups + conv3(ngf // 16, 3)


def stage1_d_by_hand(df):
    trunk = conv4(3, df) + conv4(df, 2 * df) + bn(2 * df) + conv4(2 * df, 4 * df) + bn(4 * df)
    trunk += conv4(4 * df, 8 * df) + bn(8 * df)
    cond = conv3(8 * df + 128, 8 * df) + bn(8 * df) + logit_head(8 * df)
    return trunk + cond


def stage2_g_trainable_by_hand(gf, r_num):
    encoder = conv3(3, gf) + conv4(gf, 2 * gf) + bn(2 * gf) + conv4(2 * gf, 4 * gf) + bn(4 * gf)
    joint = conv3(4 * gf + 128, 4 * gf) + bn(4 * gf)
    res = r_num * (2 * conv3(4 * gf, 4 * gf) + 2 * bn(4 * gf))
    ups = up(4 * gf, 2 * gf) + up(2 * gf, gf) + up(gf, gf // 2) + up(gf // 2, gf // 4)
    return ca() + encoder + joint + res + ups + conv3(gf // 4, 3)


def stage2_d_by_hand(df):
    trunk = conv4(3, df)
    for k in range(1, 6):  # 2df, 4df, 8df, 16df, 32df, each with BN
        trunk += conv4(df << (k - 1), df << k) + bn(df << k)
    trunk += conv3(32 * df, 16 * df) + bn(16 * df) + conv3(16 * df, 8 * df) + bn(8 * df)
    cond = conv3(8 * df + 128, 8 * df) + bn(8 * df) + logit_head(8 * df)
    return trunk + cond + logit_head(8 * df)


@pytest.mark.parametrize("gf,df,r_num", [(192, 96, 2), (128, 64, 4)], ids=["coco", "cub"])
def test_reference_parameter_counts_match_hand_derivation(gf, df, r_num):
    with torch.device("meta"):
        g1, d1 = Stage1G(gf), Stage1D(df)
        g2, d2 = Stage2G(Stage1G(gf), gf, r_num), Stage2D(df)
    assert count(g1) == stage1_g_by_hand(gf)
    assert count(d1) == stage1_d_by_hand(df)
    assert count(g2, trainable_only=True) == stage2_g_trainable_by_hand(gf, r_num)
    assert count(g2) == stage2_g_trainable_by_hand(gf, r_num) + stage1_g_by_hand(gf)
    assert count(d2) == stage2_d_by_hand(df)


def test_coco_counts_agree_with_spec_analytic_values():
    # spec §3a: Stage-I G ~20.0 M, Stage-I D ~12.4 M, Stage-II G trainable ~37.1 M, Stage-II D ~159.9 M
    assert stage1_g_by_hand(192) == 20_020_832
    assert stage1_d_by_hand(96) == 12_407_425
    assert stage2_g_trainable_by_hand(192, 2) == 37_130_480
    assert stage2_d_by_hand(96) == 159_889_538


def test_variant_parameter_counts_differ_by_the_hand_derived_layers():
    gf, df = 128, 64
    ngf = 8 * gf
    with torch.device("meta"):
        s1_256 = Stage1G(gf, out_size=256)
        s1_noca = Stage1G(gf, ca=False)
        once = Stage2G(Stage1G(gf), gf, 4, text_twice=False)
        at128 = Stage2G(Stage1G(gf), gf, 2, out_size=128)
        d1_256, d2_128 = Stage1D(df, in_size=256), Stage2D(df, in_size=128)
    # Stage-I at 256: two more upBlocks continuing the halving, image head reads ngf/64
    extra = up(ngf // 16, ngf // 32) + up(ngf // 32, ngf // 64) - conv3(ngf // 16, 3) + conv3(ngf // 64, 3)
    assert count(s1_256) == stage1_g_by_hand(gf) + extra
    # no CA: Linear(1024 -> 128) instead of Linear(1024 -> 256)
    assert count(s1_noca) == stage1_g_by_hand(gf) - ca() + (1024 * 128 + 128)
    # text once: no Stage-II CA, joint conv reads only the 4*gf image channels
    assert count(once, True) == stage2_g_trainable_by_hand(gf, 4) - ca() - conv3(128, 4 * gf)
    # 128 output: R_NUM 2, last upBlock dropped, image head reads gf/2
    at128_hand = stage2_g_trainable_by_hand(gf, 2) - up(gf // 2, gf // 4) - conv3(gf // 4, 3) + conv3(gf // 2, 3)
    assert count(at128, True) == at128_hand
    # Stage-I D at 256: Stage-II D's trunk with the cond head only
    assert count(d1_256) == stage2_d_by_hand(df) - logit_head(8 * df)
    # Stage-II D at 128: five stride-2 convs to 16*df, one 3x3 back to 8*df
    d128_trunk = conv4(3, df) + sum(conv4(df << (k - 1), df << k) + bn(df << k) for k in range(1, 5))
    d128_trunk += conv3(16 * df, 8 * df) + bn(8 * df)
    assert count(d2_128) == d128_trunk + conv3(8 * df + 128, 8 * df) + bn(8 * df) + 2 * logit_head(8 * df)


def test_reference_width_shapes_on_meta_device():
    with torch.device("meta"):
        g2 = Stage2G(Stage1G(128), 128, 4)
        images, mu, logvar = g2(torch.zeros(2, 100), torch.zeros(2, 1024))
        probs = Stage2D(64)(images[1], mu)
        probs1 = Stage1D(64)(images[0], mu)
    assert [tuple(i.shape) for i in images] == [(2, 3, 64, 64), (2, 3, 256, 256)]
    assert tuple(mu.shape) == tuple(logvar.shape) == (2, 128)
    assert [tuple(p.shape) for p in probs] == [(2,), (2,)]
    assert [tuple(p.shape) for p in probs1] == [(2,)]


def inputs(batch=2, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, 100, generator=g), torch.randn(batch, 1024, generator=g)


@pytest.mark.parametrize("out_size,ca_on", [(64, True), (64, False), (256, True), (256, False)])
def test_stage1_shapes(out_size, ca_on):
    torch.manual_seed(0)
    g = Stage1G(GF if out_size == 64 else 2 * GF, c_dim=C, out_size=out_size, ca=ca_on)  # 256 halves 6 times
    z, emb = inputs()
    (img,), mu, logvar = g(z, emb)
    assert img.shape == (2, 3, out_size, out_size)
    assert img.abs().max() <= 1
    assert mu.shape == (2, C)
    assert (logvar is None) == (not ca_on)
    d = Stage1D(DF, c_dim=C, in_size=out_size)
    (prob,) = d(img, mu)
    assert prob.shape == (2,) and ((prob > 0) & (prob < 1)).all()


@pytest.mark.parametrize("out_size", [128, 256])
@pytest.mark.parametrize("text_twice,ca_on", [(True, True), (False, True), (True, False)])
def test_stage2_shapes(out_size, text_twice, ca_on):
    torch.manual_seed(0)
    g = Stage2G(Stage1G(GF, c_dim=C), GF, 1, c_dim=C, out_size=out_size, text_twice=text_twice, ca=ca_on)
    z, emb = inputs()
    (low, high), mu, logvar = g(z, emb)
    assert low.shape == (2, 3, 64, 64) and not low.requires_grad
    assert high.shape == (2, 3, out_size, out_size)
    assert mu.shape == (2, C)
    assert (logvar is not None) == (text_twice and ca_on)
    probs = Stage2D(DF, c_dim=C, in_size=out_size)(high, mu)
    assert [p.shape for p in probs] == [(2,), (2,)]


def test_text_once_conditions_d_on_stage1_mu():
    torch.manual_seed(0)
    s1 = Stage1G(GF, c_dim=C)
    g = Stage2G(s1, GF, 1, c_dim=C, text_twice=False)
    z, emb = inputs()
    _, mu, _ = g(z, emb)
    assert torch.equal(mu, s1.condition.act(s1.condition.fc(emb))[:, :C])


def test_pinned_forward():
    torch.manual_seed(0)
    g1 = Stage1G(GF, c_dim=C)
    g2 = Stage2G(g1, GF, 1, c_dim=C)
    d2 = Stage2D(DF, c_dim=C)
    z, emb = inputs()
    (low, high), mu, logvar = g2(z, emb, generator=torch.Generator().manual_seed(7))
    cond, uncond = d2(high, mu)
    torch.testing.assert_close(low[0, 0, 0, :4], torch.tensor(PINNED_LOW), atol=1e-4, rtol=0)
    torch.testing.assert_close(high[1, 2, 100, 60:64], torch.tensor(PINNED_HIGH), atol=1e-4, rtol=0)
    torch.testing.assert_close(mu[1, 3:7], torch.tensor(PINNED_MU), atol=1e-4, rtol=0)
    torch.testing.assert_close(logvar[0, 1:5], torch.tensor(PINNED_LOGVAR), atol=1e-4, rtol=0)
    torch.testing.assert_close(torch.stack([cond, uncond]), torch.tensor(PINNED_D), atol=1e-4, rtol=0)


# Computed once with this code (torch 2.14.1, CPU, one thread) and pasted.
PINNED_LOW = [0.102601, -0.040695, -0.047658, 0.003924]
PINNED_HIGH = [-0.009456, -0.010893, -0.042614, -0.054300]
PINNED_MU = [0.337337, 0.175886, 0.830107, 0.273278]
PINNED_LOGVAR = [0.912036, 0.563454, 0.0, 0.633176]
PINNED_D = [[0.550093, 0.412683], [0.490331, 0.452200]]


def test_frozen_stage1_gets_no_gradient_and_is_not_trainable():
    torch.manual_seed(0)
    s1 = Stage1G(GF, c_dim=C)
    g = Stage2G(s1, GF, 1, c_dim=C)
    frozen = {id(p) for p in s1.parameters()}
    trainable = trainable_parameters(g)
    assert trainable and not frozen & {id(p) for p in trainable}
    assert len(trainable) + len(frozen) == len(list(g.parameters()))
    z, emb = inputs()
    (_, high), mu, logvar = g(z, emb)
    (high.mean() + mu.sum() + logvar.sum()).backward()
    assert all(p.grad is None for p in s1.parameters())
    assert all(p.grad is not None for p in trainable)


def stage1_bn_mean(s1):
    return s1.fc[1].running_mean.clone()


@pytest.mark.parametrize("freeze", [False, True])
def test_stage1_bn_stats_update_unless_frozen(freeze):
    torch.manual_seed(0)
    s1 = Stage1G(GF, c_dim=C)
    g = Stage2G(s1, GF, 1, c_dim=C, freeze_stage1_bn=freeze).train()
    assert s1.training is not freeze and g.encoder.training
    before = stage1_bn_mean(s1)
    g(*inputs())
    # the reference keeps Stage-I in train(): its BN running stats move though its weights don't
    assert torch.equal(stage1_bn_mean(s1), before) is freeze


def test_ca_relu_sampling_and_generator():
    torch.manual_seed(0)
    ca_net = CANet(1024, C, act="relu")
    emb = inputs(batch=4)[1]
    c, mu, logvar = ca_net(emb, generator=torch.Generator().manual_seed(3))
    assert (logvar >= 0).all()  # the reference's ReLU quirk: sigma >= 1
    eps = torch.randn(mu.shape, generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(c, mu + eps * torch.exp(0.5 * logvar))
    c2, _, _ = ca_net(emb, generator=torch.Generator().manual_seed(3))
    assert torch.equal(c, c2)
    _, _, logvar_paper = CANet(1024, C, act="none")(emb)
    assert (logvar_paper < 0).any()


def test_fixed_text_code_is_deterministic():
    torch.manual_seed(0)
    code = FixedTextCode(1024, C)
    emb = inputs()[1]
    c, mu, logvar = code(emb)
    assert logvar is None and torch.equal(c, mu) and torch.equal(c, code(emb)[0])


def test_init_weights_statistics_and_frozen_layers_skipped():
    torch.manual_seed(0)
    d = Stage1D(16, c_dim=C)
    w = d.cond_joint[0].weight
    assert abs(w.std().item() - 0.02) < 0.002 and abs(w.mean().item()) < 0.002
    bn_layer = d.cond_joint[1]
    assert torch.equal(bn_layer.bias, torch.zeros_like(bn_layer.bias))
    assert abs(bn_layer.weight.mean().item() - 1) < 0.01
    s1 = Stage1G(GF, c_dim=C)
    with torch.no_grad():
        s1.image[0].weight.fill_(0.5)
    g = Stage2G(s1, GF, 1, c_dim=C)
    init_weights(g)
    assert (s1.image[0].weight == 0.5).all()


def test_bad_sizes_raise_user_errors():
    with pytest.raises(UserError):
        Stage1G(GF, out_size=128)
    with pytest.raises(UserError):
        Stage2G(Stage1G(8, out_size=256), GF, 1)
    with pytest.raises(UserError):
        Stage2G(Stage1G(GF), GF, 1, out_size=512)
    with pytest.raises(UserError):
        Stage2D(DF, in_size=96)
    with pytest.raises(UserError):
        CANet(act="gelu")
