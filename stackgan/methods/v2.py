"""StackGAN-v2 training iteration, EMA and snapshot behaviour (reference code/trainer.py).

One iteration: G runs once; each D_i takes one Adam step on detached fakes; G takes one step
on the sum over branches (plus KL, plus color consistency when enabled); the EMA of G's
parameters is updated. Every `ema.snapshot_interval` iterations the reference saves a snapshot
and, as a side effect, leaves the *live* G holding the EMA weights; `ema.snapshot_reset`
replicates that (the faithful default).
"""

import copy
from dataclasses import dataclass

import torch

from stackgan import speed
from stackgan.data.loader import ImageOnlyDataset, TextImageDataset
from stackgan.losses import v2 as L
from stackgan.methods.base import load_training_state, training_state
from stackgan.methods.text_to_image import TextToImageConfig, TextToImageMethod, check_text_width, image_features
from stackgan.models.v2 import Discriminator, Generator, init_weights
from stackgan.settings import AdamSettings


@dataclass(frozen=True)
class V2Loss:
    uncond: float  # weight of D's unconditional head (0: no such head)
    kl: float
    color: float  # colour-consistency weight (the unconditional runs: 50)


@dataclass(frozen=True)
class EMA:
    decay: float
    snapshot_reset: bool  # the reference's snapshot leaves the live G holding the EMA weights
    snapshot_interval: int


@dataclass(frozen=True)
class V2Config(TextToImageConfig):
    branch_sizes: list
    emit: list  # which branches have an image head
    discriminators: list  # the emitted branch each D judges
    loss: V2Loss
    optim: AdamSettings
    ema: EMA


def build_generator(c):
    return Generator(gf_dim=c.gf_dim, z_dim=c.z_dim, ef_dim=c.ef_dim, text_dim=c.text_dim,
                     branch_sizes=c.branch_sizes, r_num=c.r_num, conditional=c.conditional, emit=c.emit)


def emitted_sizes(c):
    return [s for s, e in zip(c.branch_sizes, c.emit) if e]


def discriminator_names(c):
    """D<size> per judged branch; repeats get a suffix (3G3: D256, D256b, D256c)."""
    names, seen = [], {}
    sizes = emitted_sizes(c)
    for i in c.discriminators:
        size = sizes[i]
        k = seen.get(size, 0)
        seen[size] = k + 1
        names.append(f"D{size}" + ("" if k == 0 else "bcdefgh"[k - 1]))
    return names


def build_discriminators(c):
    sizes = emitted_sizes(c)
    return {
        name: Discriminator(sizes[i], df_dim=c.df_dim, ef_dim=c.ef_dim, conditional=c.conditional,
                            uncond_head=c.loss.uncond > 0)
        for name, i in zip(discriminator_names(c), c.discriminators)
    }


def build_networks(c):
    nets = {"G": build_generator(c), **build_discriminators(c)}
    for net in nets.values():
        init_weights(net)
    return nets


class V2Method(TextToImageMethod):
    family = "v2"
    Config = V2Config
    networks = staticmethod(build_networks)
    sampling_generator = staticmethod(build_generator)

    @staticmethod
    def output_resolution(cfg):
        return emitted_sizes(V2Config.of(cfg))[-1]

    # -- the paper's figures (stackgan/figures/)
    @staticmethod
    def branch_names(cfg):
        c = V2Config.of(cfg)
        return [f"G{i + 1} ({s} px)" for i, (s, e) in enumerate(zip(c.branch_sizes, c.emit)) if e]

    @staticmethod
    def discriminator_features(cfg, state, device):
        """Fig. 12's features: the trunk output (the last conv block, before the heads) of the D
        judging the largest branch (D256 at paper size; the first of 3G3's three)."""
        c = V2Config.of(cfg)
        sizes = emitted_sizes(c)
        judged = dict(zip(discriminator_names(c), (sizes[i] for i in c.discriminators)))
        name = max(judged, key=lambda k: (judged[k], -list(judged).index(k)))
        d = build_discriminators(c)[name]
        d.load_state_dict(state["method"]["nets"][name])
        d = d.to(device).eval()
        return image_features(d.trunk, device), f"{name} trunk: the last conv block (conv, BN, LeakyReLU)"

    def __init__(self, cfg, device, grad_sync=None):
        self.c = c = V2Config.of(cfg)
        self.device = device
        self.grad_sync = grad_sync or (lambda module: None)
        self.nets = {k: v.to(device) for k, v in build_networks(c).items()}
        self.d_names = [k for k in self.nets if k != "G"]
        self.d_branch = dict(zip(self.d_names, c.discriminators))
        opt, impl = c.optim, c.train.adam
        self.optims = {"G": speed.adam(self.nets["G"].parameters(), opt.lr_g, opt.betas, impl)}
        for name in self.d_names:
            self.optims[name] = speed.adam(self.nets[name].parameters(), opt.lr_d, opt.betas, impl)
        self.ema = [p.detach().clone() for p in self.nets["G"].parameters()]

    @property
    def generator(self):
        return self.nets["G"]

    def image_sizes(self):
        """The sides of the real images a step takes: every emitted branch's."""
        return emitted_sizes(self.c)

    def make_dataset(self, split):
        """Real (and wrong) images at every emitted branch's size, from one crop."""
        c, data = self.c, self.c.data_sampling
        check_text_width(c, split)
        if not c.conditional:
            return ImageOnlyDataset(split, view=c.view, imsizes=self.image_sizes(), flip=data.flip, seed=c.train.seed,
                                    input_on_device=c.train.input_on_device)
        return TextImageDataset(split, view=c.view, imsizes=self.image_sizes(), flip=data.flip,
                                num_embeddings=data.num_embeddings, wrong_rule=data.wrong_rule, seed=c.train.seed,
                                input_on_device=c.train.input_on_device)

    def train_step(self, batch, noise, step):
        c, G = self.c, self.nets["G"]
        u = c.loss.uncond
        reals = batch["imgs"]
        images, mu, logvar = G(noise["z"], batch.get("emb"), eps=noise.get("eps"))
        logs = {}
        for name in self.d_names:
            d, i = self.nets[name], self.d_branch[name]
            self.optims[name].zero_grad(set_to_none=True)
            if c.conditional:
                err, parts = L.d_loss_conditional(d, reals[i], batch["wrong_imgs"][i], images[i], mu, u)
            else:
                err, parts = L.d_loss_unconditional(d, reals[i], images[i])
            err.backward()
            self.grad_sync(d)
            self.optims[name].step()
            logs[f"loss_{name}"] = err.detach()

        self.optims["G"].zero_grad(set_to_none=True)
        err_g = sum(
            L.g_adv_loss(self.nets[name], images[self.d_branch[name]], mu if c.conditional else None, u)
            for name in self.d_names
        )
        logs["loss_G_adv"] = err_g.detach()
        if c.conditional:
            kl = L.kl_loss(mu, logvar)
            err_g = err_g + c.loss.kl * kl
            logs["kl"] = kl.detach()
        if c.loss.color > 0:
            color = L.color_consistency(images, c.loss.color)
            err_g = err_g + color
            logs["color"] = color.detach()
        err_g.backward()
        self.grad_sync(G)
        self.optims["G"].step()
        logs["loss_G"] = err_g.detach()

        self._update_ema()
        if c.ema.snapshot_reset and (step + 1) % c.ema.snapshot_interval == 0:
            self._load_ema_into_live()
        return logs

    @torch.no_grad()
    def _update_ema(self):
        decay = self.c.ema.decay
        for avg, p in zip(self.ema, self.nets["G"].parameters()):
            avg.mul_(decay).add_(p.detach(), alpha=1 - decay)

    @torch.no_grad()
    def _load_ema_into_live(self):
        for avg, p in zip(self.ema, self.nets["G"].parameters()):
            p.copy_(avg)

    def eval_generator(self):
        """A copy of G holding the EMA weights (what the reference's snapshots contain), in eval mode."""
        g = copy.deepcopy(self.nets["G"])
        with torch.no_grad():
            for avg, p in zip(self.ema, g.parameters()):
                p.copy_(avg)
        return g.eval()

    def state_dict(self):
        return {**training_state(self), "ema": [t.clone() for t in self.ema]}

    def load_state_dict(self, state):
        load_training_state(self, state)
        for avg, saved in zip(self.ema, state["ema"]):
            avg.copy_(saved)

    def on_epoch(self, epoch):
        """No learning-rate schedule: the reference keeps 2e-4 throughout."""

    def export_extra(self):
        return {}

    def trained_from(self):
        return {}

    def draw_noise(self, gen, batch_size):
        noise = {"z": torch.randn(batch_size, self.c.z_dim, generator=gen)}
        if self.c.conditional:
            noise["eps"] = torch.randn(batch_size, self.c.ef_dim, generator=gen)
        return noise
