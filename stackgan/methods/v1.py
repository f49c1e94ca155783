"""StackGAN-v1 training, stage by stage (reference V1PT code/trainer.py; V1TF stageI/stageII).

`stage: 1` trains G1 + D1 from scratch. `stage: 2` loads the finished Stage-I experiment named by
`parent`, freezes its generator inside G2 and trains G2's own part + D2 (no Stage-I D).
One iteration (both reference codes): G runs once; D takes one Adam step on real, wrong and
detached fake images; G takes one Adam step on the same fakes, judged by the just-updated D.
Both learning rates are halved every `optim.lr_decay_epochs` epochs of the stage. No EMA: the
reference snapshots and samples the live G.

`conditional: false` (Table 3's LSUN / ImageNet runs; absent = true): images only, G draws from z
alone, D has the unconditional head only, plain real/fake BCE losses (stackgan/models/v1.py).
"""

import copy
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn as nn

from stackgan import checkpoint, seeding, speed
from stackgan.data.loader import ImageOnlyDataset, TextImageDataset
from stackgan.errors import UserError
from stackgan.grids import to_uint8
from stackgan.losses import v1 as L
from stackgan.methods.base import load_training_state, training_state
from stackgan.methods.text_to_image import TextToImageConfig, TextToImageMethod, check_text_width, image_features
from stackgan.models.v1 import Stage1D, Stage1G, Stage2D, Stage2G
from stackgan.settings import AdamSettings

NET_NAMES = {1: ("G1", "D1"), 2: ("G2", "D2")}
# Stage-II rebuilds its frozen Stage-I from its own config; these must equal the parent's.
STAGE1_KEYS = ("gf_dim", "z_dim", "ef_dim", "text_dim", "ca", "ca_act", "conditional")
WRONG_PAIRS = ("dataset", "shift")


@dataclass(frozen=True)
class V1Loss:
    kl: float
    wrong_pairs: str  # dataset: the TF code's wrong images; shift: the PyTorch code's in-batch shift


@dataclass(frozen=True)
class V1Optim(AdamSettings):
    lr_decay_epochs: int


@dataclass(frozen=True)
class V1Config(TextToImageConfig):
    stage: int
    parent: str | None  # Stage-II: the Stage-I experiment it starts from
    ca: bool
    ca_act: str
    text_twice: bool
    freeze_stage1_bn: bool
    out_size: int  # this stage's output
    stage1_size: int  # Stage-II: its parent's output size
    loss: V1Loss
    optim: V1Optim

    def __post_init__(self):
        if self.stage not in NET_NAMES:
            raise UserError(f"experiment '{self.name}': stage must be 1 or 2, got {self.stage!r}")
        if self.loss.wrong_pairs not in WRONG_PAIRS:
            raise UserError(f"experiment '{self.name}': loss.wrong_pairs must be one of {WRONG_PAIRS}, "
                            f"got {self.loss.wrong_pairs!r}")


def build_stage1_generator(c, out_size):
    return Stage1G(c.gf_dim, z_dim=c.z_dim, c_dim=c.ef_dim, text_dim=c.text_dim, out_size=out_size, ca=c.ca,
                   ca_act=c.ca_act, conditional=c.conditional)


def build_generator(c):
    """The bare G1 or G2; G2's frozen Stage-I is freshly initialised (its weights come from the parent)."""
    if c.stage == 1:
        return build_stage1_generator(c, c.out_size)
    return Stage2G(build_stage1_generator(c, c.stage1_size), c.gf_dim, c.r_num, c_dim=c.ef_dim, out_size=c.out_size,
                   text_twice=c.text_twice, ca=c.ca, text_dim=c.text_dim, ca_act=c.ca_act,
                   freeze_stage1_bn=c.freeze_stage1_bn, conditional=c.conditional)


def build_discriminator(c):
    d_class = Stage1D if c.stage == 1 else Stage2D
    return d_class(c.df_dim, c_dim=c.ef_dim, in_size=c.out_size, conditional=c.conditional)


def build_networks(c):
    g_name, d_name = NET_NAMES[c.stage]
    d = build_discriminator(c)  # before G: the initial weights follow this order
    return {g_name: build_generator(c), d_name: d}


def companion_noise(eps):
    """N(0, 1) rows that are a pure function of each row of `eps` (hence independent of batch
    composition): the frozen Stage-I CA's noise when a caller passes only Stage-II's eps."""
    rows = eps.detach().to("cpu", torch.float32).numpy()
    noise = [torch.randn(eps.shape[1], generator=seeding.torch_generator(seeding.content_seed(r.tobytes())))
             for r in rows]
    return torch.stack(noise).to(eps)


class V1Generator(nn.Module):
    """The sampling interface shared with v2: g(z, emb, eps=None) -> (images, mu, logvar),
    images = every stage's output (Stage-I first, final resolution last). Unconditional:
    g(z, emb=None) -> (images, None, None)."""

    def __init__(self, net):
        super().__init__()
        self.net = net

    def forward(self, z, emb=None, eps=None, eps_stage1=None):
        if isinstance(self.net, Stage1G):
            return self.net(z, emb, eps=eps)
        if eps is not None and eps_stage1 is None:
            eps_stage1 = companion_noise(eps)
        return self.net(z, emb, eps=eps, eps_stage1=eps_stage1)


def parent_model_path(c):
    """The parent's model.pt, a sibling of this run's folder (runs/<profile>/<parent>/model.pt)."""
    return Path(c.paths["run"]).parent / c.parent / "model.pt"


def load_parent(c):
    name = c.name
    if not c.parent:
        raise UserError(f"experiment '{name}' is Stage-II but names no parent; set experiments.{name}.parent "
                        "in params.yaml to its Stage-I experiment")
    path = parent_model_path(c)
    if not path.exists():
        raise UserError(f"{path} not found; run `stackgan train {c.parent}` first (Stage-II '{name}' starts from it)")
    payload = checkpoint.load_model(path, f"re-run `stackgan train {c.parent}` (Stage-II '{name}' starts from it)")
    pcfg = payload["config"]
    if payload.get("family") != "v1" or pcfg.get("stage") != 1:
        raise UserError(f"{path} is not a StackGAN-v1 Stage-I model; point experiments.{name}.parent at one")
    want = {**{k: getattr(c, k) for k in STAGE1_KEYS}, "out_size": c.stage1_size}
    have = {**{k: pcfg.get(k) for k in STAGE1_KEYS}, "out_size": pcfg.get("out_size")}
    diff = {k: (have[k], want[k]) for k in want if have[k] != want[k]}
    if diff:
        detail = ", ".join(f"{k} {h!r} (here {w!r}; out_size = stage1_size here)" if k == "out_size"
                           else f"{k} {h!r} (here {w!r})" for k, (h, w) in diff.items())
        raise UserError(f"{path} was trained with {detail}; make experiments.{name} match its parent '{c.parent}'")
    return payload


class V1Method(TextToImageMethod):
    family = "v1"
    Config = V1Config
    networks = staticmethod(build_networks)

    @staticmethod
    def sampling_generator(c):
        return V1Generator(build_generator(c))

    @staticmethod
    def output_resolution(cfg):
        return V1Config.of(cfg).out_size

    # -- the paper's figures (stackgan/figures/)
    @staticmethod
    def branch_names(cfg):
        c = V1Config.of(cfg)
        if c.stage == 1:
            return [f"Stage-I ({c.out_size} px)"]
        return [f"Stage-I ({c.stage1_size} px)", f"Stage-II ({c.out_size} px)"]

    @staticmethod
    @torch.no_grad()
    def generate(cfg, generator, z, emb=None, eps=None):
        """As TextToImageMethod.generate; a Stage-II's frozen Stage-I CA takes the same eps, so
        eps = 0 means every CA gives its mean."""
        device = next(generator.parameters()).device
        eps = None if eps is None else eps.to(device)
        images, _, _ = generator(z.to(device), None if emb is None else emb.to(device), eps=eps, eps_stage1=eps)
        return [to_uint8(x) for x in images]

    @staticmethod
    def discriminator_features(cfg, state, device):
        """Fig. 12's features: the stage's D trunk output (its last conv block, before the heads)."""
        c = V1Config.of(cfg)
        name = NET_NAMES[c.stage][1]
        d = build_discriminator(c)
        d.load_state_dict(state["method"]["nets"][name])
        d = d.to(device).eval()
        return image_features(d.encode, device), f"{name} (the Stage-{'I' * c.stage} D) encode_image: the last conv block (conv, BN, LeakyReLU)"

    def __init__(self, cfg, device, grad_sync=None):
        self.c = c = V1Config.of(cfg)
        self.device = device
        self.grad_sync = grad_sync or (lambda module: None)
        self.g_name, self.d_name = NET_NAMES[c.stage]
        self.parent = None
        if c.stage == 2:
            payload = load_parent(c)
            self.parent = {"name": c.parent, "config_hash": payload["config_hash"], "step": payload["step"]}
        with torch.random.fork_rng(devices=[]):  # the same initial weights on every run and rank
            torch.manual_seed(c.train.seed)
            nets = build_networks(c)
        if self.parent is not None:
            nets["G2"].stage1.load_state_dict(V1Method.load_generator(payload, "cpu").net.state_dict())
        self.nets = {k: v.to(device) for k, v in nets.items()}
        opt = c.optim
        trainable = [p for p in self.nets[self.g_name].parameters() if p.requires_grad]  # G2: not the frozen Stage-I
        self.base_lr = {self.g_name: opt.lr_g, self.d_name: opt.lr_d}
        self.optims = {
            self.g_name: speed.adam(trainable, opt.lr_g, opt.betas, c.train.adam),
            self.d_name: speed.adam(self.nets[self.d_name].parameters(), opt.lr_d, opt.betas, c.train.adam),
        }

    def image_sizes(self):
        """The sides of the real images a step takes: the stage's output only."""
        return [self.c.out_size]

    def make_dataset(self, split):
        """Real and wrong images at the output size only: no stage-I D is trained in Stage-II.
        Unconditional: real images only."""
        c, data = self.c, self.c.data_sampling
        check_text_width(c, split)
        if not c.conditional:
            return ImageOnlyDataset(split, view=c.view, imsizes=self.image_sizes(), flip=data.flip, seed=c.train.seed,
                                    input_on_device=c.train.input_on_device)
        return TextImageDataset(split, view=c.view, imsizes=self.image_sizes(), flip=data.flip,
                                num_embeddings=data.num_embeddings, wrong_rule=data.wrong_rule, seed=c.train.seed,
                                input_on_device=c.train.input_on_device)

    def draw_noise(self, gen, batch_size):
        c = self.c
        noise = {"z": torch.randn(batch_size, c.z_dim, generator=gen)}
        if not c.conditional:
            return noise
        noise["eps"] = torch.randn(batch_size, c.ef_dim, generator=gen)
        if c.stage == 2:
            noise["eps_stage1"] = torch.randn(batch_size, c.ef_dim, generator=gen)
        return noise

    def _generate(self, batch, noise):
        g = self.nets[self.g_name]
        if not self.c.conditional:
            return g(noise["z"])
        if self.c.stage == 1:
            return g(noise["z"], batch["emb"], eps=noise["eps"])
        return g(noise["z"], batch["emb"], eps=noise["eps"], eps_stage1=noise["eps_stage1"])

    def train_step(self, batch, noise, step):
        c = self.c
        G, D = self.nets[self.g_name], self.nets[self.d_name]
        images, mu, logvar = self._generate(batch, noise)
        fake, real = images[-1], batch["imgs"][0]

        self.optims[self.d_name].zero_grad(set_to_none=True)
        if c.conditional:
            wrong = batch["wrong_imgs"][0] if c.loss.wrong_pairs == "dataset" else None
            err_d, parts_d = L.discriminator_loss(D, real, fake, mu, wrong)
        else:
            err_d, parts_d = L.unconditional_discriminator_loss(D, real, fake)
        err_d.backward()
        self.grad_sync(D)
        self.optims[self.d_name].step()

        self.optims[self.g_name].zero_grad(set_to_none=True)
        if c.conditional:
            err_g, parts_g = L.generator_loss(D, fake, mu, logvar, c.loss.kl)
        else:
            err_g, parts_g = L.unconditional_generator_loss(D, fake)
        err_g.backward()
        self.grad_sync(G)
        self.optims[self.g_name].step()

        logs = {"loss_D": err_d.detach(), "loss_G": err_g.detach(), "lr": self.optims[self.g_name].param_groups[0]["lr"]}
        logs.update({f"D_{k}": v for k, v in parts_d.items()})
        logs.update({f"G_{k}": v for k, v in parts_g.items()})
        return logs

    def on_epoch(self, epoch):
        """lr = base * 0.5^(epoch // lr_decay_epochs): the reference halves at the start of every
        decay_epochs-th epoch after the first (V1PT trainer.py, V1TF trainer.py)."""
        factor = 0.5 ** (epoch // self.c.optim.lr_decay_epochs)
        for name, optim in self.optims.items():
            for group in optim.param_groups:
                group["lr"] = self.base_lr[name] * factor

    def eval_generator(self):
        return V1Generator(copy.deepcopy(self.nets[self.g_name])).eval()

    def export_extra(self):
        return {"parent": self.parent} if self.parent else {}

    def trained_from(self):
        """A Stage-II starts from its parent: a retrained or extended parent starts it afresh."""
        return {"parent": self.parent} if self.parent else {}

    def state_dict(self):
        return training_state(self)

    def load_state_dict(self, state):
        load_training_state(self, state)
