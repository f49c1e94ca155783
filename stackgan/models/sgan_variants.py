"""The networks an SGAN experiment's config asks for, built on the reference networks of
stackgan/models/sgan.py: those at a channel width (the embedded profile's CPU-sized G0/D0), the
single-level DCGAN baseline of the paper's CIFAR-10 table, and SGANSampler, the eval generator
that model.pt saves (its state_dict keys are the model.pt format).
"""

import copy

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from stackgan import seeding
from stackgan.encoder import build_encoder
from stackgan.errors import UserError
from stackgan.models.sgan import FC3_DIM, Z1_DIM, ImageGenerator, build_sgan, init_normal, z0_dim

VARIANTS = ("sgan", "dcgan")


def _scaled(n, width):
    return max(1, round(n * width))


def narrowed(module, width, image_channels):
    """A copy of a conv net with every hidden channel count scaled by `width`; heads keep their
    outputs. Used for the embedded profile's CPU-sized discriminator (width 1 = the reference)."""
    net = copy.deepcopy(module)
    for parent in list(net.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, nn.Conv2d):
                c_in = child.in_channels if child.in_channels == image_channels else _scaled(child.in_channels, width)
                new = nn.Conv2d(c_in, _scaled(child.out_channels, width), child.kernel_size, child.stride,
                                child.padding, bias=child.bias is not None)
            elif isinstance(child, nn.BatchNorm2d):
                new = nn.BatchNorm2d(_scaled(child.num_features, width), eps=child.eps, momentum=child.momentum)
            elif isinstance(child, nn.Linear):  # a head: its input is the (flattened) scaled map
                new = nn.Linear(_scaled(child.in_features, width), child.out_features, bias=child.bias is not None)
            else:
                continue
            setattr(parent, name, new)
    return net


def _image_generator(width, z_dim, z_embed_layers, mean):
    """G0's layers (CIFAR-like) at `width`, for a z of z_dim."""
    w = width
    c = _scaled(256, w)
    return ImageGenerator(z_dim, z_embed_layers, (c, 5, 5), (c, _scaled(128, w), _scaled(128, w), 3),
                          image_mean=mean)


def _replace_q_output(d0, z_dim):
    """Resize D0's Q head to predict a z of another size (the DCGAN baseline's z)."""
    last = [m for m in d0.q_head.modules() if isinstance(m, nn.Linear)][-1]
    for name, child in d0.q_head.named_children():
        if child is last:
            setattr(d0.q_head, name, nn.Linear(last.in_features, z_dim))


class DCGANGenerator(nn.Module):
    """The single-level baseline G(z[, y]) -> image: G0's layers with z ~ U[0,1)^dcgan_z_dim in
    G0's z slot, and the 256-d slot that carries fc3 in SGAN fed a label code
    (Dense K->256 + ReLU of one-hot y) when conditional, zeros when not (so it adds nothing)."""

    def __init__(self, body: ImageGenerator, num_classes, conditional):
        super().__init__()
        self.body = body
        self.num_classes = num_classes
        self.label_code = nn.Sequential(nn.Linear(num_classes, FC3_DIM), nn.ReLU()) if conditional else None

    def _code(self, y, z):
        if self.label_code is None:
            return z.new_zeros(len(z), FC3_DIM)
        return self.label_code(F.one_hot(y.long(), self.num_classes).to(z.dtype))

    def pixels(self, y, z):
        return self.body.pixels(self._code(y, z), z)

    def forward(self, y, z):
        return self.body(self._code(y, z), z)


def check_architecture(c):
    if c.variant not in VARIANTS:
        raise UserError(f"sgan variant must be one of {VARIANTS}, got {c.variant!r}")
    if c.arch == "mnist" and (c.width != 1 or c.variant != "sgan"):
        raise UserError("SGAN on mnist supports variant sgan at width 1 only")


def build_networks(c, joint=False, image_mean=None, encoder=None):
    """{"E", "G1", "G0", "D1", "D0"} (sgan) or {"E", "G", "D0"} (dcgan), reference-initialised.
    E is a frozen placeholder unless the pre-trained `encoder` is given; joint: the
    train_joint.py discriminators."""
    check_architecture(c)
    arch, k, w = c.arch, c.num_classes, c.width
    nets = build_sgan(arch, num_classes=k, joint=joint, image_mean=image_mean)
    if w != 1:
        nets["G0"] = _image_generator(w, z0_dim(arch), 2, nets["G0"].image_mean)
        nets["D0"] = narrowed(nets["D0"], w, image_channels=3)
        nets["E"] = build_encoder(arch, k, w).requires_grad_(False)
        init_normal(nets["G0"])
        init_normal(nets["D0"])
    if c.variant == "dcgan":
        z_dim = c.dcgan_z_dim
        body = _image_generator(w, z_dim, 2, nets["G0"].image_mean)
        nets = {"E": nets["E"], "G": DCGANGenerator(body, k, conditional=c.loss["use_cond"]),
                "D0": nets["D0"]}
        _replace_q_output(nets["D0"], z_dim)
        init_normal(nets["G"])
        init_normal(nets["D0"].q_head)
    if encoder is not None:
        nets["E"] = encoder
    return nets


class SGANSampler(nn.Module):
    """The eval-mode generator: labels (0..K-1) and noise -> images. Saved in model.pt."""

    def __init__(self, c, nets):
        super().__init__()
        self.variant, self.arch = c.variant, c.arch
        self.gens = nn.ModuleDict({k: nets[k] for k in (("G",) if self.variant == "dcgan" else ("G1", "G0"))})
        self.z_dims = ({"z": c.dcgan_z_dim} if self.variant == "dcgan"
                       else {"z1": Z1_DIM, "z0": z0_dim(self.arch)})

    def noise(self, count, seed, start=0):
        """U[0,1) noise per item, item i from its own generator: chunking does not change it."""
        out = {k: [] for k in self.z_dims}
        for i in range(start, start + count):
            gen = seeding.eval_mixed_generator(seed, i)
            for k, dim in self.z_dims.items():
                out[k].append(torch.rand(dim, generator=gen))
        return {k: torch.stack(v) for k, v in out.items()}

    def pixels(self, labels, noise):
        """[0, 1] images (before mean subtraction), NCHW."""
        if self.variant == "dcgan":
            return self.gens["G"].pixels(labels, noise["z"])
        return self.gens["G0"].pixels(self.gens["G1"](labels, noise["z1"]), noise["z0"])

    @torch.no_grad()
    def fixed_fc3_images(self, labels, seed, columns):
        """uint8 (rows, columns, H, W, 3): per label one G1 output (one z1), `columns` draws of z0.

        Shows what each level controls (the SGAN paper's MNIST/SVHN figures): the row is fixed
        by y and z1 through fc3, the columns vary only G0's noise.
        """
        device = next(self.parameters()).device
        labels = torch.as_tensor(np.repeat(labels, columns), dtype=torch.long, device=device)
        noise = self.noise(len(labels), seed)
        z1 = noise["z1"].reshape(-1, columns, noise["z1"].shape[1])[:, :1].expand(-1, columns, -1)
        fc3 = self.gens["G1"](labels, z1.reshape(len(labels), -1).to(device))
        x = self.gens["G0"].pixels(fc3, noise["z0"].to(device)).clamp(0, 1).mul(255).round().to(torch.uint8).cpu()
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        return x.permute(0, 2, 3, 1).reshape(-1, columns, x.shape[2], x.shape[3], 3).numpy()

    @torch.no_grad()
    def sample_images(self, labels, seed, start=0):
        """uint8 (N, H, W, 3) images for labels; item i's noise depends on (seed, start + i) only."""
        device = next(self.parameters()).device
        labels = torch.as_tensor(labels, dtype=torch.long, device=device)
        noise = {k: v.to(device) for k, v in self.noise(len(labels), seed, start).items()}
        x = self.pixels(labels, noise).clamp(0, 1).mul(255).round().to(torch.uint8).cpu()
        if x.shape[1] == 1:
            x = x.repeat(1, 3, 1, 1)
        return x.permute(0, 2, 3, 1).numpy()
