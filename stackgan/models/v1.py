"""StackGAN-v1 Stage-I / Stage-II generators and discriminators, as the authors' PyTorch code
(hanzhanggit/StackGAN-Pytorch code/model.py) builds them, parameterised by width.

Reference widths: GF=128, DF=64 (CUB/Oxford; R_NUM 4 at 256, 2 at 128) and GF=192, DF=96,
R_NUM=2 (the COCO cfgs). v1 uses ReLU (no GLU), bias-free 3x3 convs, the CA net with a ReLU
after its FC (so logvar >= 0), conditioning concatenated after the features ((z, c) in
Stage-I, (image, c) in Stage-II and D), and D heads that output sigmoid probabilities.

Table 4 ablations, built from the same blocks (choices recorded in results/DEVIATIONS.md):
  * `ca=False`: the text is compressed deterministically (FC + the same activation), no
    sampling and no KL: the "fixed conditioning text variable" the paper contrasts CA with;
  * Stage-I at 256: two more upsampling blocks, continuing the channel halving;
  * Stage-II with `text_twice=False`: no text path in Stage-II at all (no CA, the joint conv
    reads image features only); D is then conditioned on the frozen Stage-I's mu;
  * Stage-II at 128: the last upsampling block is dropped (encoder still ends at 16x16).
Unconditional v1 (Table 3's LSUN / ImageNet columns; no code was released for it), built with
`conditional=False`: Stage-I G maps z alone (no CA), Stage-II G reads only the Stage-I image
(the text-once path; z is not re-injected, paper §4.3: "the random noise z is not used in this
stage"), and both discriminators keep the unconditional head only.
The embedded CPU profile scales the same rules down one octave: Stage-I at 32 (three
upsampling blocks), Stage-II 32 -> 64 (encoder ends at 8x8), discriminators at 32.

Every CA takes an optional `eps` (its N(0, 1) noise) so the training engine can draw all noise
for the global batch up front: N processes then see the noise one process would.
"""

import math

import torch
import torch.nn as nn

from stackgan.errors import UserError

CA_ACTIVATIONS = ("relu", "leaky_relu", "none")


def conv3x3(cin, cout):
    return nn.Conv2d(cin, cout, 3, 1, 1, bias=False)


def activation(name):
    if name == "relu":
        return nn.ReLU(inplace=True)
    if name == "leaky_relu":
        return nn.LeakyReLU(0.2, inplace=True)
    if name == "none":
        return nn.Identity()
    raise UserError(f"unknown CA activation {name!r}; use one of {', '.join(CA_ACTIVATIONS)}")


def up_block(cin, cout):
    return nn.Sequential(
        nn.Upsample(scale_factor=2, mode="nearest"), conv3x3(cin, cout), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)
    )


class ResBlock(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.block = nn.Sequential(
            conv3x3(c, c), nn.BatchNorm2d(c), nn.ReLU(inplace=True), conv3x3(c, c), nn.BatchNorm2d(c)
        )
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x):
        return self.relu(x + self.block(x))


def image_head(cin):
    return nn.Sequential(conv3x3(cin, 3), nn.Tanh())


def doublings(size, base, allowed, what):
    """How many x2 steps lead from `base` to `size`, for the sizes the ablations use."""
    if size not in allowed:
        raise UserError(f"{what} size {size} is unsupported; use one of {', '.join(map(str, allowed))}")
    return int(math.log2(size // base))


def check_halvable(width, steps, what):
    if width % (1 << steps):
        raise UserError(f"{what}={width} cannot be halved {steps} times; use a multiple of {1 << steps}")


class CANet(nn.Module):
    """Conditioning augmentation: embedding -> (c, mu, logvar), c = mu + exp(logvar/2) * eps.

    act="relu" is the reference code (forces logvar >= 0, i.e. sigma >= 1); "leaky_relu" is the
    v1 TensorFlow code; "none" is the paper text (an FC layer yields mu and sigma).
    """

    def __init__(self, text_dim=1024, c_dim=128, act="relu"):
        super().__init__()
        self.c_dim = c_dim
        self.fc = nn.Linear(text_dim, 2 * c_dim)
        self.act = activation(act)

    def forward(self, emb, generator=None, eps=None):
        h = self.act(self.fc(emb))
        mu, logvar = h[:, : self.c_dim], h[:, self.c_dim :]
        if eps is None:
            eps = torch.randn(mu.shape, generator=generator, device=mu.device, dtype=mu.dtype)
        return mu + eps * torch.exp(0.5 * logvar), mu, logvar


class FixedTextCode(nn.Module):
    """The "no CA" condition: embedding -> (c, c, None), c = act(FC(embedding)); no noise, no KL."""

    def __init__(self, text_dim=1024, c_dim=128, act="relu"):
        super().__init__()
        self.fc = nn.Linear(text_dim, c_dim)
        self.act = activation(act)

    def forward(self, emb, generator=None, eps=None):
        c = self.act(self.fc(emb))
        return c, c, None


def text_condition(ca, text_dim, c_dim, act):
    return CANet(text_dim, c_dim, act) if ca else FixedTextCode(text_dim, c_dim, act)


class Stage1G(nn.Module):
    """STAGE1_G. forward(z, emb, generator=None) -> ([image], mu, logvar); logvar None without CA,
    mu and logvar None when unconditional (emb is then ignored and may be None)."""

    def __init__(self, gf, z_dim=100, c_dim=128, text_dim=1024, out_size=64, ca=True, ca_act="relu",
                 conditional=True):
        super().__init__()
        n_up = doublings(out_size, 4, (32, 64, 256), "Stage-I output")
        ngf = 8 * gf
        check_halvable(ngf, n_up, "8*gf")
        self.ngf, self.out_size, self.conditional = ngf, out_size, conditional
        self.condition = text_condition(ca, text_dim, c_dim, ca_act) if conditional else None
        fc_in = z_dim + (c_dim if conditional else 0)
        self.fc = nn.Sequential(nn.Linear(fc_in, ngf * 16, bias=False), nn.BatchNorm1d(ngf * 16), nn.ReLU(True))
        self.ups = nn.Sequential(*[up_block(ngf >> k, ngf >> (k + 1)) for k in range(n_up)])
        self.image = image_head(ngf >> n_up)
        init_weights(self)

    def forward(self, z, emb=None, generator=None, eps=None):
        if self.conditional:
            c, mu, logvar = self.condition(emb, generator, eps)
            z = torch.cat([z, c], 1)
        else:
            mu = logvar = None
        h = self.fc(z).view(-1, self.ngf, 4, 4)
        return [self.image(self.ups(h))], mu, logvar


class Stage2G(nn.Module):
    """STAGE2_G around a frozen Stage-I G.

    forward(z, emb, generator=None, eps=None, eps_stage1=None) -> ([stage-I image (detached),
    stage-II image], mu, logvar); eps feeds Stage-II's CA, eps_stage1 the frozen Stage-I's.
    mu/logvar are Stage-II's own CA outputs; with text_twice=False Stage-II reads no text and
    returns the frozen Stage-I's mu (for D's condition) with logvar None (no KL to train).

    Unconditional (conditional=False, around an unconditional Stage-I): no text path, as with
    text_twice=False, and mu = logvar = None.

    The reference leaves Stage-I in train() mode, so its BN running stats keep updating while
    its weights are frozen; freeze_stage1_bn=True keeps it in eval() instead.
    """

    def __init__(self, stage1_g, gf, r_num, c_dim=128, out_size=256, text_twice=True, ca=True,
                 text_dim=1024, ca_act="relu", freeze_stage1_bn=False, conditional=True):
        super().__init__()
        low = getattr(stage1_g, "out_size", None)
        if low not in (32, 64):
            raise UserError("Stage-II needs a 64x64 (or, embedded, 32x32) Stage-I generator; "
                            "build Stage1G with out_size=64")
        if stage1_g.conditional != conditional:
            raise UserError(f"Stage-II (conditional={conditional}) needs a Stage-I G built with the same "
                            "`conditional`; set it alike for both stages")
        n_up = doublings(out_size, low // 4, (2 * low, 4 * low), "Stage-II output")
        check_halvable(4 * gf, n_up, "4*gf")
        text_twice = text_twice and conditional
        self.text_twice, self.freeze_stage1_bn, self.out_size = text_twice, freeze_stage1_bn, out_size
        self.stage1 = stage1_g
        for p in self.stage1.parameters():
            p.requires_grad_(False)
        if freeze_stage1_bn:
            self.stage1.eval()
        self.condition = text_condition(ca, text_dim, c_dim, ca_act) if text_twice else None
        self.encoder = nn.Sequential(
            conv3x3(3, gf), nn.ReLU(True),
            nn.Conv2d(gf, 2 * gf, 4, 2, 1, bias=False), nn.BatchNorm2d(2 * gf), nn.ReLU(True),
            nn.Conv2d(2 * gf, 4 * gf, 4, 2, 1, bias=False), nn.BatchNorm2d(4 * gf), nn.ReLU(True),
        )
        joint_in = 4 * gf + (c_dim if text_twice else 0)
        self.joint = nn.Sequential(conv3x3(joint_in, 4 * gf), nn.BatchNorm2d(4 * gf), nn.ReLU(True))
        self.res = nn.Sequential(*[ResBlock(4 * gf) for _ in range(r_num)])
        self.ups = nn.Sequential(*[up_block((4 * gf) >> k, (4 * gf) >> (k + 1)) for k in range(n_up)])
        self.image = image_head((4 * gf) >> n_up)
        init_weights(self)  # skips the frozen Stage-I

    def train(self, mode=True):
        super().train(mode)
        if self.freeze_stage1_bn:
            self.stage1.eval()
        return self

    def forward(self, z, emb=None, generator=None, eps=None, eps_stage1=None):
        with torch.no_grad():  # = the reference's frozen weights + detached Stage-I image
            (low,), mu1, _ = self.stage1(z, emb, generator, eps_stage1)
        h = self.encoder(low)
        if self.text_twice:
            c, mu, logvar = self.condition(emb, generator, eps)
            s = h.size(2)
            h = torch.cat([h, c.view(c.size(0), c.size(1), 1, 1).expand(-1, -1, s, s)], 1)
        else:
            mu, logvar = mu1, None
        h = self.ups(self.res(self.joint(h)))
        return [low, self.image(h)], mu, logvar


def lrelu():
    return nn.LeakyReLU(0.2, inplace=True)


class V1Discriminator(nn.Module):
    """STAGE1_D / STAGE2_D trunk and heads for a 64, 128 or 256 input.

    The trunk halves with 4x4 stride-2 convs down to 4x4 (channels DF * 2^k, no BN on the
    first), then 3x3 conv-BN-LReLU blocks bring the channels back to 8*DF, the rule the
    reference follows for 64 (no 3x3 blocks) and 256 (two). At 32 (embedded) it ends at 4*DF.
    forward(x, c) -> [cond_prob] (+ [uncond_prob] with the uncond head), each of shape (B,).
    conditional=False: no cond head, the uncond head only; forward(x, c=None) -> [uncond_prob].
    """

    # Called by the losses besides forward (wrong pairs reuse the real features); torch.compile
    # must wrap them too (stackgan/speed.py), or their eager BatchNorm would update buffers that
    # a compiled graph saved for its backward.
    entry_points = ("encode", "heads")

    def __init__(self, df, c_dim=128, in_size=64, uncond=False, conditional=True):
        super().__init__()
        n_down = doublings(in_size, 4, (32, 64, 128, 256), "discriminator input")
        widths = [df << k for k in range(n_down)]
        layers = [nn.Conv2d(3, df, 4, 2, 1, bias=False), lrelu()]
        for k in range(1, n_down):
            layers += [nn.Conv2d(widths[k - 1], widths[k], 4, 2, 1, bias=False), nn.BatchNorm2d(widths[k]), lrelu()]
        for k in range(n_down - 1, 3, -1):
            layers += [conv3x3(widths[k], widths[k - 1]), nn.BatchNorm2d(widths[k - 1]), lrelu()]
        self.encode_image = nn.Sequential(*layers)
        ch = widths[min(n_down, 4) - 1]
        self.conditional = conditional
        if conditional:
            self.cond_joint = nn.Sequential(conv3x3(ch + c_dim, ch), nn.BatchNorm2d(ch), lrelu())
            self.cond_logits = nn.Sequential(nn.Conv2d(ch, 1, 4, 4), nn.Sigmoid())
        uncond = uncond or not conditional
        self.uncond_logits = nn.Sequential(nn.Conv2d(ch, 1, 4, 4), nn.Sigmoid()) if uncond else None
        init_weights(self)

    def encode(self, x):
        return self.encode_image(x)

    def heads(self, features, c=None):
        """Probabilities from already-encoded images, so wrong pairs can reuse real features."""
        probs = []
        if self.conditional:
            s = features.size(2)
            tiled = c.view(c.size(0), c.size(1), 1, 1).expand(-1, -1, s, s)
            probs.append(self.cond_logits(self.cond_joint(torch.cat([features, tiled], 1))).view(-1))
        if self.uncond_logits is not None:
            probs.append(self.uncond_logits(features).view(-1))
        return probs

    def forward(self, x, c=None):
        return self.heads(self.encode(x), c)


class Stage1D(V1Discriminator):
    """STAGE1_D: cond head only (64 input; 256 for the Stage-I-alone-at-256 ablation);
    unconditional: the uncond head only."""

    def __init__(self, df, c_dim=128, in_size=64, conditional=True):
        super().__init__(df, c_dim, in_size, uncond=False, conditional=conditional)


class Stage2D(V1Discriminator):
    """STAGE2_D: cond and uncond heads (256 input; 128 for StackGAN-v1 at 128);
    unconditional: the uncond head only."""

    def __init__(self, df, c_dim=128, in_size=256, conditional=True):
        super().__init__(df, c_dim, in_size, uncond=True, conditional=conditional)


def init_weights(module):
    """The reference's weights_init: conv/linear weights N(0, 0.02), linear bias 0, BN weight
    N(1, 0.02) bias 0; conv biases keep PyTorch's default. Frozen (requires_grad=False)
    layers are skipped so a trained Stage-I held by Stage-II is never re-initialised."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)) and m.weight.requires_grad:
            nn.init.normal_(m.weight, 0.0, 0.02)
            if isinstance(m, nn.Linear) and m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)) and m.weight.requires_grad:
            nn.init.normal_(m.weight, 1.0, 0.02)
            nn.init.zeros_(m.bias)
