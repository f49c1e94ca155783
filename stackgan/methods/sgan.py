"""SGAN (Huang et al. 2017) training: independent, then joint training of the two-level stack,
and the single-level DCGAN baselines of the paper's CIFAR-10 table (spec sgan-reference.md §2-3).
The networks are stackgan/models/sgan.py's (reference) and stackgan/models/sgan_variants.py's
(width, DCGAN baseline, the sampler model.pt saves).

variant `sgan`: G1 (y, z1) -> fc3-hat, G0 (fc3, z0) -> image, D1 on fc3, D0 on images; E is the
frozen pre-trained encoder (stackgan/encoder.py). The step index decides the phase:
- steps [0, train.independent_steps): both levels at once and apart, as mnist/train_independent.py
  (CIFAR runs train_gan0.py and train_gan1.py separately; the levels do not interact, so only
  the data order differs): G0 conditioned on the real E0(x) fc3, G1 on the real labels.
- then train.joint_steps of joint training (train_joint.py): G0 is fed G1's output and its cond
  target is that output; G1 is updated with L_G1 + 0.01 L_G0 (`joint_end_to_end`; MNIST: L_G1
  only), G0 with L_G0. Entering it, D1/D0 become their train_joint.py variants (more noise,
  dropout 0.3; same weights) and every optimiser restarts, as the reference's separate script does.
variant `dcgan`: one generator G(z[, y]) -> image judged by the same D0 (see DCGANGenerator).

One iteration: one D step per level on the batch (D applied to the real and the fake batch
separately), then G steps: 1, or on CIFAR-like data 1/3/5/7 from D's adversarial loss, each
with fresh z and the same real batch. Noise for every possible G step is drawn by draw_noise so
that a step is a pure function of (seed, step), like the rest of the engine.

Sampling (family sgan has class labels, not captions): `eval_generator()` returns an
SGANSampler, which gives uint8 images in [0, 255] (the sigmoid output x 255 before mean
subtraction, what the IS protocol scores); `sample_batches` labels sample i with class i % K.
"""

import contextlib
import copy
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from stackgan import speed
from stackgan.atomic import atomic_path
from stackgan.encoder import ENCODER_FILE, encoder_dir, load_encoder
from stackgan.errors import UserError
from stackgan.losses import sgan as L
from stackgan.methods.base import load_training_state, training_state
from stackgan.models.sgan import Z1_DIM, z0_dim
from stackgan.models.sgan_variants import SGANSampler, build_networks, check_architecture
from stackgan.settings import AdamSettings, RunConfig, TrainSettings

MAX_G_STEPS = 7  # the largest adaptive count (spec §3.1)
GRID_COLUMNS = 8


def label_attributes(class_id, dataset):
    """Caption-attribute ids a class label fixes (synthetic: shape and colour; -1 = not stated)."""
    if dataset != "synthetic":
        return None
    from stackgan.data.synthetic import ATTRIBUTES, CLASSES

    shape, colour = next((s, c) for cid, s, c in CLASSES if cid == class_id)
    return [shape, colour] + [-1] * (len(ATTRIBUTES) - 2)


@contextlib.contextmanager
def _frozen(*modules):
    """D's parameters need no gradient while G trains; saves the backward into D's weights."""
    for m in modules:
        m.requires_grad_(False)
    try:
        yield
    finally:
        for m in modules:
            m.requires_grad_(True)


@dataclass(frozen=True)
class PhaseTrainSettings(TrainSettings):
    independent_steps: int  # the run is independent_steps + joint_steps long
    joint_steps: int


@dataclass(frozen=True)
class SGANConfig(RunConfig):
    arch: str  # network set: cifar | mnist | svhn | synthetic
    variant: str  # sgan: the two-level stack; dcgan: the single-level baseline
    num_classes: int
    width: float
    dcgan_z_dim: int
    adaptive_g_steps: bool
    joint_end_to_end: bool
    loss: dict  # stackgan/losses/sgan.py SGANLossConfig's settings
    optim: AdamSettings
    encoder: str | None  # encoder.pt; None: the encoder stage's output for the dataset
    train: PhaseTrainSettings

    def __post_init__(self):
        check_architecture(self)  # before the encoder is read, so a bad variant is what is reported
        t = self.train
        for key in ("independent_steps", "joint_steps"):
            if getattr(t, key) < 0:
                raise UserError(f"train.{key} must be >= 0")
        if t.max_steps not in (None, t.independent_steps + t.joint_steps):
            raise UserError(f"{self.name}: train.max_steps={t.max_steps} but independent_steps + joint_steps "
                            f"= {t.independent_steps + t.joint_steps}; set max_steps: null")


def encoder_path(c):
    return c.encoder or f"{encoder_dir(c.profile, c.data['name'])}/{ENCODER_FILE}"


class SGANMethod:
    family = "sgan"
    Config = SGANConfig

    @staticmethod
    def build_networks(cfg):
        return build_networks(SGANConfig.of(cfg))

    @staticmethod
    def default_steps(cfg, n_items):
        """Independent, then joint training, each its own number of steps."""
        t = SGANConfig.of(cfg).train
        return t.independent_steps + t.joint_steps

    @staticmethod
    def load_generator(payload, device):
        c = SGANConfig.of(payload["config"])
        sampler = SGANSampler(c, build_networks(c))
        sampler.load_state_dict(payload["generator"])
        return sampler.to(device).eval()

    @staticmethod
    def output_resolution(cfg):
        """32: the CIFAR-like archs' side (the sgan settings have no out_size). MNIST's samples
        are 28 px; it has no FID protocol, this value's only use."""
        return 32

    # -- the paper's figures (stackgan/figures/): the t-SNE map, neighbours and baselines apply
    @staticmethod
    def figure_skips(cfg):
        why = "SGAN is conditioned on a class label: it has no caption embedding or CA noise to vary"
        return {"stages": "SGAN's two levels are a feature vector and an image, not two image resolutions "
                          "(the training grid's -fixed-fc3 image shows what each level controls)",
                "diversity": why, "interpolation": why}

    @staticmethod
    def discriminator_features(cfg, state, device):
        """Fig. 12's features: D0's trunk output (its last conv layer; D1 judges fc3, not images),
        on images in G0's output space (x / 255 minus the training mean G0 subtracts)."""
        c = SGANConfig.of(cfg)
        nets = state["method"]["nets"]
        g = nets["G" if c.variant == "dcgan" else "G0"]
        mean = next((v for k, v in g.items() if k.endswith("image_mean")), None)
        d = build_networks(c)["D0"]
        d.load_state_dict(nets["D0"])
        d = d.to(device).eval()

        @torch.no_grad()
        def features(images):
            x = torch.from_numpy(np.ascontiguousarray(images)).to(device).permute(0, 3, 1, 2).float() / 255
            if c.arch == "mnist":
                x = x[:, :1]
            if mean is not None:
                x = x - mean.to(device)
            return d.trunk(x).flatten(1).cpu()

        return features, "D0 trunk: its output before the adversarial and Q heads (CIFAR-like: the last 1x1 conv, LeakyReLU)"

    @staticmethod
    def sample_batches(cfg, payload, generator, batch_size):
        """Labels i % K (spread evenly, as the reference samples); items carry class_id (the
        prepared id) and attributes; no per-branch images."""
        class_ids = payload["class_ids"]
        dataset = payload["config"]["data"]["name"]
        ev = SGANConfig.of(cfg).eval
        num_samples, seed = ev.num_samples, ev.seed
        for start in range(0, num_samples, batch_size):
            labels = [i % len(class_ids) for i in range(start, min(num_samples, start + batch_size))]
            images = generator.sample_images(labels, seed, start)
            items = [{"label": k, "class_id": int(class_ids[k]), "caption_index": None,
                      "attributes": label_attributes(int(class_ids[k]), dataset)} for k in labels]
            yield images, items, None

    def __init__(self, cfg, device, grad_sync=None):
        self.c = c = SGANConfig.of(cfg)
        self.device = device
        self.grad_sync = grad_sync or (lambda module: None)
        self.independent_steps = c.train.independent_steps
        encoder, self.encoder_payload = load_encoder(encoder_path(c))
        enc = self.encoder_payload
        if enc["arch"] != c.arch or enc["num_classes"] != c.num_classes or enc["view"] != c.view:
            raise UserError(f"{encoder_path(c)} was trained for arch {enc['arch']}, {enc['num_classes']} classes, "
                            f"view {enc['view']}; {c.name} needs {c.arch}, {c.num_classes}, "
                            f"{c.view}: retrain the encoder or fix params.yaml")
        self.loss = L.loss_config(c.arch, **c.loss)
        self.adaptive = c.adaptive_g_steps
        self.phase = "joint" if c.variant == "sgan" and self.independent_steps == 0 else "independent"
        nets = build_networks(c, joint=self.phase == "joint", image_mean=enc["image_mean"], encoder=encoder)
        self.nets = {k: v.to(device) for k, v in nets.items()}
        self._make_optimisers()

    def _make_optimisers(self):
        opt = self.c.optim
        self.optims = {name: speed.adam(net.parameters(), opt.lr_d if name.startswith("D") else opt.lr_g, opt.betas,
                                        self.c.train.adam)
                       for name, net in self.nets.items() if name != "E"}

    def _enter_joint(self):
        """train_joint.py's discriminator variants, loaded with the trained weights; fresh Adam."""
        joint = build_networks(self.c, joint=True, image_mean=self.encoder_payload["image_mean"])
        new_nets = {}
        for name in ("D1", "D0"):
            old, new = self.nets[name], joint[name].to(self.device)
            with torch.no_grad():
                for a, b in zip(new.parameters(), old.parameters(), strict=True):
                    a.copy_(b)
                for a, b in zip(new.buffers(), old.buffers(), strict=True):
                    a.copy_(b)
            new_nets[name] = new
        speed.apply(new_nets, self.c.train)  # the engine switched the first phase's networks
        self.nets.update(new_nets)
        self.phase = "joint"
        self._make_optimisers()

    # -- protocol
    def make_dataset(self, split):
        from stackgan.data.labelled import LabelledImages

        recorded = self.encoder_payload.get("prepared_train")
        c = self.c
        current = split.manifest.get("files", {}).get(f"train/images_{c.view}.u8")
        if recorded != current:
            raise UserError(f"{encoder_path(c)} was trained on another version of {split.root}; "
                            f"re-run `stackgan encoder {c.data['name']}`")
        mean = self.encoder_payload["image_mean"]
        return LabelledImages(split, c.view, grey=c.arch == "mnist",
                              mean=None if mean is None else mean.numpy(), classes=self.encoder_payload["class_ids"],
                              input_on_device=c.train.input_on_device)

    def example_batch(self, batch_size, device):
        """Zeros shaped like a collated LabelledImages batch: "x" float32 in model space, one grey
        28 px channel for MNIST (view native28), 3 x 32 x 32 for the CIFAR-like archs; "y" int64 labels."""
        channels, side = (1, 28) if self.c.arch == "mnist" else (3, 32)
        return {"x": torch.zeros(batch_size, channels, side, side, device=device),
                "y": torch.zeros(batch_size, dtype=torch.int64, device=device)}

    def draw_noise(self, gen, batch_size):
        slots = 1 + (MAX_G_STEPS if self.adaptive else 1)  # slot 0: the D step; 1..n: G steps
        if self.c.variant == "dcgan":
            return {"z": torch.rand(batch_size, slots, self.c.dcgan_z_dim, generator=gen)}
        return {"z1": torch.rand(batch_size, slots, Z1_DIM, generator=gen),
                "z0": torch.rand(batch_size, slots, z0_dim(self.c.arch), generator=gen)}

    def on_epoch(self, epoch):
        """No schedule: Adam at a fixed 1e-4 throughout (spec §3.1)."""

    def train_step(self, batch, noise, step):
        x, y = batch["x"], batch["y"]
        if self.c.variant == "dcgan":
            return self._dcgan_step(x, y, noise["z"])
        if step >= self.independent_steps and self.phase != "joint":
            self._enter_joint()
        if self.phase == "joint":
            return self._joint_step(x, y, noise["z1"], noise["z0"])
        return self._independent_step(x, y, noise["z1"], noise["z0"])

    # -- pieces
    def _update(self, names, loss):
        for name in names:
            self.optims[name].zero_grad(set_to_none=True)
        loss.backward(inputs=[p for n in names for p in self.nets[n].parameters()])
        for name in names:
            self.grad_sync(self.nets[name])
            self.optims[name].step()

    def _d_step(self, name, real, fake, z, y, logs):
        d = self.nets[name]
        real_adv, _ = d(real)
        fake_adv, fake_q = d(fake)
        loss, parts = L.discriminator_loss(self.loss, real_adv, fake_adv, fake_q, z,
                                           labels=y if self.loss.kind == "kclass" else None)
        self._update([name], loss)
        logs.update({f"{name}/{k}": v for k, v in parts.items()})
        return parts["adv"]

    def _g_steps(self, d_adv, name, logs):
        # The one loss value read every step: it decides how many G steps run, so it cannot
        # wait for a log step. Without adaptive steps nothing is read.
        n = L.adaptive_g_steps(float(d_adv)) if self.adaptive else 1
        logs[f"{name}/steps"] = torch.tensor(float(n))
        return n

    def _g1_loss(self, fc3_fake, z1, y):
        adv, q = self.nets["D1"](fc3_fake)
        return L.g1_loss(self.loss, adv, q, z1, self.nets["E"].classify(fc3_fake), y)

    def _g0_loss(self, x_fake, z0, fc3_cond):
        adv, q = self.nets["D0"](x_fake)
        return L.g0_loss(self.loss, adv, q, z0, self.nets["E"].features(x_fake), fc3_cond)

    def _log(self, logs, name, parts):
        logs.update({f"{name}/{k}": v for k, v in parts.items()})

    def _independent_step(self, x, y, z1, z0):
        n = self.nets
        logs = {}
        with torch.no_grad():
            fc3_real = n["E"].features(x)
            x_fake, fc3_fake = n["G0"](fc3_real, z0[:, 0]), n["G1"](y, z1[:, 0])
        d0_adv = self._d_step("D0", x, x_fake, z0[:, 0], y, logs)
        d1_adv = self._d_step("D1", fc3_real, fc3_fake, z1[:, 0], y, logs)
        with _frozen(n["D0"], n["D1"]):
            for k in range(1, 1 + self._g_steps(d0_adv, "G0", logs)):
                loss, parts = self._g0_loss(n["G0"](fc3_real, z0[:, k]), z0[:, k], fc3_real)
                self._update(["G0"], loss)
                self._log(logs, "G0", parts)
            for k in range(1, 1 + self._g_steps(d1_adv, "G1", logs)):
                loss, parts = self._g1_loss(n["G1"](y, z1[:, k]), z1[:, k], y)
                self._update(["G1"], loss)
                self._log(logs, "G1", parts)
        return logs

    def _joint_step(self, x, y, z1, z0):
        n = self.nets
        logs = {}
        with torch.no_grad():
            fc3_real = n["E"].features(x)
            fc3_fake = n["G1"](y, z1[:, 0])
            x_fake = n["G0"](fc3_fake, z0[:, 0])
        d0_adv = self._d_step("D0", x, x_fake, z0[:, 0], y, logs)
        self._d_step("D1", fc3_real, fc3_fake, z1[:, 0], y, logs)
        g0_params, g1_params = list(n["G0"].parameters()), list(n["G1"].parameters())
        with _frozen(n["D0"], n["D1"]):
            for k in range(1, 1 + self._g_steps(d0_adv, "G", logs)):
                fc3_hat = n["G1"](y, z1[:, k])
                loss1, parts1 = self._g1_loss(fc3_hat, z1[:, k], y)
                loss0, parts0 = self._g0_loss(n["G0"](fc3_hat, z0[:, k]), z0[:, k], fc3_hat)
                objective = (L.joint_g1_objective(self.loss, loss1, loss0)[0] if self.c.joint_end_to_end
                             else loss1)
                g0_grads = torch.autograd.grad(loss0, g0_params, retain_graph=True)
                for name in ("G0", "G1"):
                    self.optims[name].zero_grad(set_to_none=True)
                objective.backward(inputs=g1_params)
                for p, g in zip(g0_params, g0_grads):
                    p.grad = g
                for name in ("G0", "G1"):
                    self.grad_sync(n[name])
                    self.optims[name].step()
                self._log(logs, "G0", parts0)
                self._log(logs, "G1", parts1)
        return logs

    def _dcgan_step(self, x, y, z):
        n = self.nets
        logs = {}
        with torch.no_grad():
            x_fake = n["G"](y, z[:, 0])
        d0_adv = self._d_step("D0", x, x_fake, z[:, 0], y, logs)
        with _frozen(n["D0"]):
            for k in range(1, 1 + self._g_steps(d0_adv, "G", logs)):
                x_hat = n["G"](y, z[:, k])
                adv, q = n["D0"](x_hat)
                logits = n["E"](x_hat)[1] if self.loss.use_cond else None
                loss, parts = L.g1_loss(self.loss, adv, q, z[:, k], logits, y)
                self._update(["G"], loss)
                self._log(logs, "G", parts)
        return logs

    # -- outputs
    def eval_generator(self):
        """A copy of the generator(s) in eval mode (BN in inference mode, as sampling.py)."""
        return copy.deepcopy(SGANSampler(self.c, self.nets)).eval()

    def export_extra(self):
        return {"class_ids": list(self.encoder_payload["class_ids"]), "phase": self.phase,
                "encoder_sha256_of_weights": self.encoder_sha256()}

    def trained_from(self):
        """The frozen encoder E: a retrained one starts the run afresh."""
        return {"encoder": self.encoder_sha256()}

    def encoder_sha256(self):
        return self.encoder_payload.get("report", {}).get("weights_sha256")

    def progress_grid(self, prepared_dir):
        """One row per class (up to 10, spread over the classes), GRID_COLUMNS samples each, and
        for variant sgan a -fixed-fc3 grid beside it. The rows are class labels, so prepared_dir
        is not read."""
        return self._write_grid

    def _write_grid(self, path):
        from stackgan.grids import compose

        columns = GRID_COLUMNS
        sampler = self.eval_generator()
        k = self.c.num_classes
        rows = np.unique(np.linspace(0, k - 1, min(k, 10)).round().astype(int))
        labels = np.repeat(rows, columns)
        images = sampler.sample_images(labels, self.c.eval.seed)
        grid = images.reshape(len(rows), columns, *images.shape[1:])
        class_ids = self.encoder_payload["class_ids"]
        captions = [f"class {class_ids[r]}" for r in rows]
        with atomic_path(path) as tmp:
            compose([grid[:, c] for c in range(columns)], captions).save(tmp, format="PNG")
        if self.c.variant == "sgan":
            levels = sampler.fixed_fc3_images(rows, self.c.eval.seed, columns)
            level_path = Path(path).with_name(Path(path).stem + "-fixed-fc3.png")
            with atomic_path(level_path) as tmp:
                compose([levels[:, c] for c in range(columns)],
                        [c + ": one fc3 (z1), varying z0" for c in captions]).save(tmp, format="PNG")

    def state_dict(self):
        return {"phase": self.phase, **training_state(self)}

    def load_state_dict(self, state):
        if state["phase"] == "joint" and self.phase != "joint":
            self._enter_joint()
        load_training_state(self, state)
