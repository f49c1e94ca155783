"""StackGAN-v2 training iteration, EMA and snapshot behaviour (reference code/trainer.py).

One iteration: G runs once; each D_i takes one Adam step on detached fakes; G takes one step
on the sum over branches (plus KL, plus color consistency when enabled); the EMA of G's
parameters is updated. Every `ema.snapshot_interval` iterations the reference saves a snapshot
and, as a side effect, leaves the *live* G holding the EMA weights; `ema.snapshot_reset`
replicates that (the faithful default).
"""

import copy

import torch

from stackgan.data.loader import ImageOnlyDataset, TextImageDataset
from stackgan.losses import v2 as L
from stackgan.methods import load_training_state, training_state
from stackgan.models.v2 import Discriminator, Generator, init_weights


def build_generator(cfg):
    return Generator(
        gf_dim=cfg["gf_dim"], z_dim=cfg["z_dim"], ef_dim=cfg["ef_dim"], text_dim=cfg["text_dim"],
        branch_sizes=cfg["branch_sizes"], r_num=cfg["r_num"], conditional=cfg["conditional"], emit=cfg["emit"],
    )


def emitted_sizes(cfg):
    return [s for s, e in zip(cfg["branch_sizes"], cfg["emit"]) if e]


def discriminator_names(cfg):
    """D<size> per judged branch; repeats get a suffix (3G3: D256, D256b, D256c)."""
    names, seen = [], {}
    sizes = emitted_sizes(cfg)
    for i in cfg["discriminators"]:
        size = sizes[i]
        k = seen.get(size, 0)
        seen[size] = k + 1
        names.append(f"D{size}" + ("" if k == 0 else "bcdefgh"[k - 1]))
    return names


def build_discriminators(cfg):
    sizes = emitted_sizes(cfg)
    uncond_head = cfg["loss"]["uncond"] > 0
    return {
        name: Discriminator(sizes[i], df_dim=cfg["df_dim"], ef_dim=cfg["ef_dim"],
                            conditional=cfg["conditional"], uncond_head=uncond_head)
        for name, i in zip(discriminator_names(cfg), cfg["discriminators"])
    }


def build_networks(cfg):
    nets = {"G": build_generator(cfg), **build_discriminators(cfg)}
    for net in nets.values():
        init_weights(net)
    return nets


class V2Method:
    family = "v2"
    build_networks = staticmethod(build_networks)

    @staticmethod
    def load_generator(payload, device):
        g = build_generator(payload["config"])
        g.load_state_dict(payload["generator"])
        return g.to(device).eval()

    def __init__(self, cfg, device, grad_sync=None):
        self.cfg = cfg
        self.device = device
        self.grad_sync = grad_sync or (lambda module: None)
        self.nets = {k: v.to(device) for k, v in build_networks(cfg).items()}
        self.d_names = [k for k in self.nets if k != "G"]
        self.d_branch = dict(zip(self.d_names, cfg["discriminators"]))
        opt = cfg["optim"]
        betas = tuple(opt["betas"])
        self.optims = {"G": torch.optim.Adam(self.nets["G"].parameters(), lr=opt["lr_g"], betas=betas)}
        for name in self.d_names:
            self.optims[name] = torch.optim.Adam(self.nets[name].parameters(), lr=opt["lr_d"], betas=betas)
        self.ema = [p.detach().clone() for p in self.nets["G"].parameters()]

    @property
    def generator(self):
        return self.nets["G"]

    def make_dataset(self, split):
        """Real (and wrong) images at every emitted branch's size, from one crop."""
        data = self.cfg["data_sampling"]
        if not self.cfg["conditional"]:
            return ImageOnlyDataset(split, view=self.cfg["view"], imsizes=emitted_sizes(self.cfg), flip=data["flip"],
                                    seed=self.cfg["train"]["seed"])
        return TextImageDataset(split, view=self.cfg["view"], imsizes=emitted_sizes(self.cfg), flip=data["flip"],
                                num_embeddings=data["num_embeddings"], wrong_rule=data["wrong_rule"],
                                seed=self.cfg["train"]["seed"])

    def train_step(self, batch, noise, step):
        cfg, G = self.cfg, self.nets["G"]
        u = cfg["loss"]["uncond"]
        reals = batch["imgs"]
        images, mu, logvar = G(noise["z"], batch.get("emb"), eps=noise.get("eps"))
        logs = {}
        for name in self.d_names:
            d, i = self.nets[name], self.d_branch[name]
            self.optims[name].zero_grad(set_to_none=True)
            if cfg["conditional"]:
                err, parts = L.d_loss_conditional(d, reals[i], batch["wrong_imgs"][i], images[i], mu, u)
            else:
                err, parts = L.d_loss_unconditional(d, reals[i], images[i])
            err.backward()
            self.grad_sync(d)
            self.optims[name].step()
            logs[f"loss_{name}"] = err.item()

        self.optims["G"].zero_grad(set_to_none=True)
        err_g = sum(
            L.g_adv_loss(self.nets[name], images[self.d_branch[name]], mu if cfg["conditional"] else None, u)
            for name in self.d_names
        )
        logs["loss_G_adv"] = err_g.item()
        if cfg["conditional"]:
            kl = L.kl_loss(mu, logvar)
            err_g = err_g + cfg["loss"]["kl"] * kl
            logs["kl"] = kl.item()
        if cfg["loss"]["color"] > 0:
            color = L.color_consistency(images, cfg["loss"]["color"])
            err_g = err_g + color
            logs["color"] = color.item()
        err_g.backward()
        self.grad_sync(G)
        self.optims["G"].step()
        logs["loss_G"] = err_g.item()

        self._update_ema()
        ema = cfg["ema"]
        if ema["snapshot_reset"] and (step + 1) % ema["snapshot_interval"] == 0:
            self._load_ema_into_live()
        return logs

    @torch.no_grad()
    def _update_ema(self):
        decay = self.cfg["ema"]["decay"]
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

    def draw_noise(self, gen, batch_size):
        noise = {"z": torch.randn(batch_size, self.cfg["z_dim"], generator=gen)}
        if self.cfg["conditional"]:
            noise["eps"] = torch.randn(batch_size, self.cfg["ef_dim"], generator=gen)
        return noise
