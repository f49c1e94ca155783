"""StackGAN-v2 generator tree and discriminators, as the authors' code builds them.

Faithful to hanzhanggit/StackGAN-v2 code/model.py (see results/DEVIATIONS.md for where that
code departs from the paper): GLU everywhere in G, bias-free 3x3 convs, post-GLU widths
16*GF at 4x4 halving per upsampling, CA with GLU *before* the mu/logvar split, conditioning
concatenated c-first, D heads that output sigmoid probabilities.

Generalisations beyond the reference (needed by the Table 5 ablations and the small embedded
profile) keep the reference's layers exactly at its settings (branches 64/128/256, GF=DF=64):
  * `branch_sizes` may start below 64 (fewer upsampling blocks in the first stage) and may
    repeat a size (a later stage without upsampling: StackGAN-v2-all256);
  * `emit` chooses which branches have an image head (StackGAN-v2-G3 keeps only the last);
  * a discriminator is built for any power-of-two size >= 16 by the same rule the reference
    follows for 64/128/256 (stride-2 convs down to 4x4, then 3x3 blocks back to 8*DF).
"""

import math

import torch
import torch.nn as nn


class GLU(nn.Module):
    def forward(self, x):
        half = x.size(1) // 2
        return x[:, :half] * torch.sigmoid(x[:, half:])


def conv3x3(cin, cout):
    return nn.Conv2d(cin, cout, 3, 1, 1, bias=False)


def up_block(cin, cout):
    return nn.Sequential(
        nn.Upsample(scale_factor=2, mode="nearest"), conv3x3(cin, 2 * cout), nn.BatchNorm2d(2 * cout), GLU()
    )


def glu_block3x3(cin, cout):
    # The reference calls this Block3x3_relu, but it gates with GLU.
    return nn.Sequential(conv3x3(cin, 2 * cout), nn.BatchNorm2d(2 * cout), GLU())


class ResBlock(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.block = nn.Sequential(
            conv3x3(c, 2 * c), nn.BatchNorm2d(2 * c), GLU(), conv3x3(c, c), nn.BatchNorm2d(c)
        )

    def forward(self, x):
        return x + self.block(x)  # no activation after the sum, as in the reference


class CANet(nn.Module):
    """Conditioning augmentation: text embedding -> (c, mu, logvar)."""

    def __init__(self, text_dim, ef_dim):
        super().__init__()
        self.ef_dim = ef_dim
        self.fc = nn.Linear(text_dim, 4 * ef_dim)
        self.glu = GLU()

    def forward(self, emb, eps=None):
        h = self.glu(self.fc(emb))
        mu, logvar = h[:, : self.ef_dim], h[:, self.ef_dim :]
        # eps may be given so that a data-parallel run draws the same noise as a single process.
        eps = torch.randn_like(mu) if eps is None else eps
        return mu + eps * torch.exp(0.5 * logvar), mu, logvar


class InitStage(nn.Module):
    """(c, z) -> h0 at `size`: FC to 4x4, then upsampling blocks halving the channels."""

    def __init__(self, ngf, in_dim, size):
        super().__init__()
        self.ngf = ngf
        self.fc = nn.Sequential(nn.Linear(in_dim, ngf * 4 * 4 * 2, bias=False), nn.BatchNorm1d(ngf * 4 * 4 * 2), GLU())
        n_up = int(math.log2(size // 4))
        self.ups = nn.Sequential(*[up_block(ngf >> k, ngf >> (k + 1)) for k in range(n_up)])
        self.out_channels = ngf >> n_up

    def forward(self, cz):
        return self.ups(self.fc(cz).view(-1, self.ngf, 4, 4))


class NextStage(nn.Module):
    """(h, c) -> next h: joint conv, residual blocks, then x2 upsampling if the size doubles."""

    def __init__(self, cin, ef_dim, r_num, upsample):
        super().__init__()
        self.joint = glu_block3x3(cin + ef_dim, cin)
        self.res = nn.Sequential(*[ResBlock(cin) for _ in range(r_num)])
        self.up = up_block(cin, cin // 2) if upsample else nn.Identity()
        self.out_channels = cin // 2 if upsample else cin

    def forward(self, h, c):
        s = h.size(2)
        c = c.view(c.size(0), c.size(1), 1, 1).expand(-1, -1, s, s)
        return self.up(self.res(self.joint(torch.cat([c, h], 1))))


def image_head(cin):
    return nn.Sequential(conv3x3(cin, 3), nn.Tanh())


class Generator(nn.Module):
    """G_NET. forward(z, emb, eps=None) -> ([images of emitted branches], mu, logvar)."""

    def __init__(self, gf_dim=64, z_dim=100, ef_dim=128, text_dim=1024, branch_sizes=(64, 128, 256),
                 r_num=2, conditional=True, emit=None):
        super().__init__()
        self.conditional = conditional
        emit = list(emit) if emit is not None else [True] * len(branch_sizes)
        if len(emit) != len(branch_sizes) or not any(emit):
            raise ValueError("emit must flag each branch and keep at least one")
        self.emit = emit
        # Unconditional G re-tiles the noise itself at later stages (c_code := z).
        cond_dim = ef_dim if conditional else z_dim
        self.ca = CANet(text_dim, ef_dim) if conditional else None
        in_dim = ef_dim + z_dim if conditional else z_dim
        self.stages = nn.ModuleList([InitStage(16 * gf_dim, in_dim, branch_sizes[0])])
        channels = [self.stages[0].out_channels]
        for prev, size in zip(branch_sizes, branch_sizes[1:]):
            if size not in (prev, 2 * prev):
                raise ValueError(f"branch sizes must stay or double, got {prev} -> {size}")
            stage = NextStage(channels[-1], cond_dim, r_num, upsample=size == 2 * prev)
            self.stages.append(stage)
            channels.append(stage.out_channels)
        self.heads = nn.ModuleList([image_head(ch) if e else nn.Identity() for ch, e in zip(channels, emit)])

    def forward(self, z, emb=None, eps=None):
        if self.conditional:
            c, mu, logvar = self.ca(emb, eps)
            h = self.stages[0](torch.cat([c, z], 1))
        else:
            c, mu, logvar = z, None, None
            h = self.stages[0](z)
        images = []
        for i, stage in enumerate(self.stages):
            if i > 0:
                h = stage(h, c)
            if self.emit[i]:
                images.append(self.heads[i](h))
        return images, mu, logvar


def lrelu():
    return nn.LeakyReLU(0.2, inplace=True)


def down_conv(cin, cout, bn=True):
    layers = [nn.Conv2d(cin, cout, 4, 2, 1, bias=False)]
    if bn:
        layers.append(nn.BatchNorm2d(cout))
    layers.append(lrelu())
    return layers


def lrelu_block3x3(cin, cout):
    return [conv3x3(cin, cout), nn.BatchNorm2d(cout), lrelu()]


class Discriminator(nn.Module):
    """D_NET64/128/256. forward(x, c=None) -> [cond_prob, uncond_prob] or [prob]."""

    def __init__(self, size, df_dim=64, ef_dim=128, conditional=True, uncond_head=True):
        super().__init__()
        n_down = int(math.log2(size // 4))
        if 4 << n_down != size or n_down < 2:
            raise ValueError(f"discriminator size must be a power of two >= 16, got {size}")
        widths = [df_dim << k for k in range(n_down)]
        layers = down_conv(3, widths[0], bn=False)
        for k in range(1, n_down):
            layers += down_conv(widths[k - 1], widths[k])
        for k in range(n_down - 1, 3, -1):
            layers += lrelu_block3x3(widths[k], widths[k - 1])
        self.trunk = nn.Sequential(*layers)
        ch = widths[min(n_down - 1, 3)]
        self.conditional = conditional
        if conditional:
            self.joint = nn.Sequential(*lrelu_block3x3(ch + ef_dim, ch))
            self.logits = nn.Sequential(nn.Conv2d(ch, 1, 4, 4), nn.Sigmoid())
        self.uncond_logits = nn.Sequential(nn.Conv2d(ch, 1, 4, 4), nn.Sigmoid()) if uncond_head or not conditional else None

    def forward(self, x, c=None):
        h = self.trunk(x)
        outs = []
        if self.conditional:
            c = c.view(c.size(0), c.size(1), 1, 1).expand(-1, -1, 4, 4)
            outs.append(self.logits(self.joint(torch.cat([c, h], 1))).view(-1))
        if self.uncond_logits is not None:
            outs.append(self.uncond_logits(h).view(-1))
        return outs


def init_weights(module):
    """The reference's weights_init: orthogonal conv/linear, BN weight N(1, 0.02)."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            nn.init.orthogonal_(m.weight, 1.0)
            if isinstance(m, nn.Linear) and m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
            nn.init.normal_(m.weight, 1.0, 0.02)
            nn.init.zeros_(m.bias)
