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
import hashlib
from pathlib import Path

import torch
import torch.nn as nn

from stackgan import checkpoint
from stackgan.data.loader import ImageOnlyDataset, TextImageDataset
from stackgan.errors import UserError
from stackgan.losses import v1 as L
from stackgan.methods import load_training_state, training_state
from stackgan.models.v1 import Stage1D, Stage1G, Stage2D, Stage2G

NET_NAMES = {1: ("G1", "D1"), 2: ("G2", "D2")}
# Stage-II rebuilds its frozen Stage-I from its own config; these must equal the parent's.
STAGE1_KEYS = ("gf_dim", "z_dim", "ef_dim", "text_dim", "ca", "ca_act")
# Switches a config may leave out (text-conditional configs, older model.pt files): the value
# they then mean. The parent must agree on these too.
KEY_DEFAULTS = {"conditional": True}
WRONG_PAIRS = ("dataset", "shift")


def net_names(cfg):
    if cfg.get("stage") not in NET_NAMES:
        raise UserError(f"experiment '{cfg.get('name')}': stage must be 1 or 2, got {cfg.get('stage')!r}")
    return NET_NAMES[cfg["stage"]]


def setting(cfg, key):
    return cfg.get(key, KEY_DEFAULTS.get(key))


def build_stage1_generator(cfg, out_size):
    return Stage1G(cfg["gf_dim"], z_dim=cfg["z_dim"], c_dim=cfg["ef_dim"], text_dim=cfg["text_dim"],
                   out_size=out_size, ca=cfg["ca"], ca_act=cfg["ca_act"], conditional=setting(cfg, "conditional"))


def build_generator(cfg):
    """The bare G1 or G2; G2's frozen Stage-I is freshly initialised (its weights come from the parent)."""
    if net_names(cfg)[0] == "G1":
        return build_stage1_generator(cfg, cfg["out_size"])
    return Stage2G(build_stage1_generator(cfg, cfg["stage1_size"]), cfg["gf_dim"], cfg["r_num"], c_dim=cfg["ef_dim"],
                   out_size=cfg["out_size"], text_twice=cfg["text_twice"], ca=cfg["ca"], text_dim=cfg["text_dim"],
                   ca_act=cfg["ca_act"], freeze_stage1_bn=cfg["freeze_stage1_bn"],
                   conditional=setting(cfg, "conditional"))


def build_networks(cfg):
    g_name, d_name = net_names(cfg)
    d_class = Stage1D if d_name == "D1" else Stage2D
    d = d_class(cfg["df_dim"], c_dim=cfg["ef_dim"], in_size=cfg["out_size"], conditional=setting(cfg, "conditional"))
    return {g_name: build_generator(cfg), d_name: d}


def companion_noise(eps):
    """N(0, 1) rows that are a pure function of each row of `eps` (hence independent of batch
    composition): the frozen Stage-I CA's noise when a caller passes only Stage-II's eps."""
    rows = eps.detach().to("cpu", torch.float32).numpy()
    seeds = [int.from_bytes(hashlib.sha256(r.tobytes()).digest()[:8], "little") for r in rows]
    noise = [torch.randn(eps.shape[1], generator=torch.Generator().manual_seed(s)) for s in seeds]
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


def parent_model_path(cfg):
    """The parent's model.pt, a sibling of this run's folder (runs/<profile>/<parent>/model.pt)."""
    return Path(cfg["paths"]["run"]).parent / cfg["parent"] / "model.pt"


def load_parent(cfg):
    name = cfg["name"]
    if not cfg.get("parent"):
        raise UserError(f"experiment '{name}' is Stage-II but names no parent; set experiments.{name}.parent "
                        "in params.yaml to its Stage-I experiment")
    path = parent_model_path(cfg)
    if not path.exists():
        raise UserError(f"{path} not found; run `stackgan train {cfg['parent']}` first (Stage-II '{name}' starts from it)")
    payload = checkpoint.load_model(path, f"re-run `stackgan train {cfg['parent']}` (Stage-II '{name}' starts from it)")
    pcfg = payload["config"]
    if payload.get("family") != "v1" or pcfg.get("stage") != 1:
        raise UserError(f"{path} is not a StackGAN-v1 Stage-I model; point experiments.{name}.parent at one")
    keys = STAGE1_KEYS + tuple(KEY_DEFAULTS)
    want = {**{k: setting(cfg, k) for k in keys}, "out_size": cfg["stage1_size"]}
    have = {**{k: setting(pcfg, k) for k in keys}, "out_size": pcfg.get("out_size")}
    diff = {k: (have[k], want[k]) for k in want if have[k] != want[k]}
    if diff:
        detail = ", ".join(f"{k} {h!r} (here {w!r}; out_size = stage1_size here)" if k == "out_size"
                           else f"{k} {h!r} (here {w!r})" for k, (h, w) in diff.items())
        raise UserError(f"{path} was trained with {detail}; make experiments.{name} match its parent '{cfg['parent']}'")
    return payload


class V1Method:
    family = "v1"
    build_networks = staticmethod(build_networks)

    @staticmethod
    def load_generator(payload, device):
        g = V1Generator(build_generator(payload["config"]))
        g.load_state_dict(payload["generator"])
        return g.to(device).eval()

    def __init__(self, cfg, device, grad_sync=None):
        self.cfg = cfg
        self.device = device
        self.grad_sync = grad_sync or (lambda module: None)
        self.g_name, self.d_name = net_names(cfg)
        self.conditional = setting(cfg, "conditional")
        if cfg["loss"]["wrong_pairs"] not in WRONG_PAIRS:
            raise UserError(f"experiment '{cfg['name']}': loss.wrong_pairs must be one of {WRONG_PAIRS}, "
                            f"got {cfg['loss']['wrong_pairs']!r}")
        self.parent = None
        if cfg["stage"] == 2:
            payload = load_parent(cfg)
            self.parent = {"name": cfg["parent"], "config_hash": payload["config_hash"], "step": payload["step"]}
            # Part of this config's hash (train.py hashes cfg after building the method): a Stage-II
            # checkpoint is not resumed on top of a retrained or extended parent.
            cfg["parent_model"] = dict(self.parent)
        with torch.random.fork_rng(devices=[]):  # the same initial weights on every run and rank
            torch.manual_seed(cfg["train"]["seed"])
            nets = build_networks(cfg)
        if self.parent is not None:
            nets["G2"].stage1.load_state_dict(V1Method.load_generator(payload, "cpu").net.state_dict())
        self.nets = {k: v.to(device) for k, v in nets.items()}
        opt = cfg["optim"]
        betas = tuple(opt["betas"])
        trainable = [p for p in self.nets[self.g_name].parameters() if p.requires_grad]  # G2: not the frozen Stage-I
        self.base_lr = {self.g_name: opt["lr_g"], self.d_name: opt["lr_d"]}
        self.optims = {
            self.g_name: torch.optim.Adam(trainable, lr=opt["lr_g"], betas=betas),
            self.d_name: torch.optim.Adam(self.nets[self.d_name].parameters(), lr=opt["lr_d"], betas=betas),
        }

    def make_dataset(self, split):
        """Real and wrong images at the output size only: no stage-I D is trained in Stage-II.
        Unconditional: real images only."""
        data = self.cfg["data_sampling"]
        if not self.conditional:
            return ImageOnlyDataset(split, view=self.cfg["view"], imsizes=[self.cfg["out_size"]], flip=data["flip"],
                                    seed=self.cfg["train"]["seed"])
        return TextImageDataset(split, view=self.cfg["view"], imsizes=[self.cfg["out_size"]], flip=data["flip"],
                                num_embeddings=data["num_embeddings"], wrong_rule=data["wrong_rule"],
                                seed=self.cfg["train"]["seed"])

    def draw_noise(self, gen, batch_size):
        cfg = self.cfg
        noise = {"z": torch.randn(batch_size, cfg["z_dim"], generator=gen)}
        if not self.conditional:
            return noise
        noise["eps"] = torch.randn(batch_size, cfg["ef_dim"], generator=gen)
        if cfg["stage"] == 2:
            noise["eps_stage1"] = torch.randn(batch_size, cfg["ef_dim"], generator=gen)
        return noise

    def _generate(self, batch, noise):
        g = self.nets[self.g_name]
        if not self.conditional:
            return g(noise["z"])
        if self.cfg["stage"] == 1:
            return g(noise["z"], batch["emb"], eps=noise["eps"])
        return g(noise["z"], batch["emb"], eps=noise["eps"], eps_stage1=noise["eps_stage1"])

    def train_step(self, batch, noise, step):
        cfg = self.cfg
        G, D = self.nets[self.g_name], self.nets[self.d_name]
        images, mu, logvar = self._generate(batch, noise)
        fake, real = images[-1], batch["imgs"][0]

        self.optims[self.d_name].zero_grad(set_to_none=True)
        if self.conditional:
            wrong = batch["wrong_imgs"][0] if cfg["loss"]["wrong_pairs"] == "dataset" else None
            err_d, parts_d = L.discriminator_loss(D, real, fake, mu, wrong)
        else:
            err_d, parts_d = L.unconditional_discriminator_loss(D, real, fake)
        err_d.backward()
        self.grad_sync(D)
        self.optims[self.d_name].step()

        self.optims[self.g_name].zero_grad(set_to_none=True)
        if self.conditional:
            err_g, parts_g = L.generator_loss(D, fake, mu, logvar, cfg["loss"]["kl"])
        else:
            err_g, parts_g = L.unconditional_generator_loss(D, fake)
        err_g.backward()
        self.grad_sync(G)
        self.optims[self.g_name].step()

        logs = {"loss_D": err_d.item(), "loss_G": err_g.item(), "lr": self.optims[self.g_name].param_groups[0]["lr"]}
        logs.update({f"D_{k}": v for k, v in parts_d.items()})
        logs.update({f"G_{k}": v for k, v in parts_g.items()})
        return logs

    def on_epoch(self, epoch):
        """lr = base * 0.5^(epoch // lr_decay_epochs): the reference halves at the start of every
        decay_epochs-th epoch after the first (V1PT trainer.py, V1TF trainer.py)."""
        factor = 0.5 ** (epoch // self.cfg["optim"]["lr_decay_epochs"])
        for name, optim in self.optims.items():
            for group in optim.param_groups:
                group["lr"] = self.base_lr[name] * factor

    def eval_generator(self):
        return V1Generator(copy.deepcopy(self.nets[self.g_name])).eval()

    def export_extra(self):
        return {"parent": self.parent} if self.parent else {}

    def state_dict(self):
        return training_state(self)

    def load_state_dict(self, state):
        load_training_state(self, state)
