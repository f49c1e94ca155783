"""SGAN (Huang et al. 2017) training: independent, then joint training of the two-level stack,
and the single-level DCGAN baselines of the paper's CIFAR-10 table (spec sgan-reference.md §2-3).

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
SGANSampler; `SGANSampler.sample_images(labels, seed, start)` gives uint8 images in [0, 255]
(the sigmoid output x 255 before mean subtraction, what the IS protocol scores); see
`sample_batches` for the items the sample stage writes.
"""

import contextlib
import copy
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from stackgan.atomic import atomic_path
from stackgan.encoder import ENCODER_FILE, build_encoder, encoder_dir, load_encoder
from stackgan.errors import UserError
from stackgan.losses import sgan as L
from stackgan.methods import load_training_state, training_state
from stackgan.models.sgan import (FC3_DIM, Z1_DIM, ImageGenerator, build_sgan, init_normal, z0_dim)

MAX_G_STEPS = 7  # the largest adaptive count (spec §3.1)
VARIANTS = ("sgan", "dcgan")


def _mix(*ints):
    return int(np.random.SeedSequence([int(i) for i in ints]).generate_state(1)[0])


# ------------------------------------------------------------------ networks
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


def _image_generator(cfg, z_dim, z_embed_layers, mean):
    """G0's layers (CIFAR-like) at cfg width, for a z of z_dim."""
    w = cfg["width"]
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


def _check(cfg):
    if cfg["variant"] not in VARIANTS:
        raise UserError(f"sgan variant must be one of {VARIANTS}, got {cfg['variant']!r}")
    if cfg["arch"] == "mnist" and (cfg["width"] != 1 or cfg["variant"] != "sgan"):
        raise UserError("SGAN on mnist supports variant sgan at width 1 only")
    for key in ("independent_steps", "joint_steps"):
        if int(cfg["train"][key]) < 0:
            raise UserError(f"train.{key} must be >= 0")


def build_networks(cfg, joint=False, image_mean=None, encoder=None):
    """{"E", "G1", "G0", "D1", "D0"} (sgan) or {"E", "G", "D0"} (dcgan), reference-initialised.
    E is a frozen placeholder unless the pre-trained `encoder` is given."""
    _check(cfg)
    arch, k, w = cfg["arch"], cfg["num_classes"], cfg["width"]
    nets = build_sgan(arch, num_classes=k, joint=joint, image_mean=image_mean)
    if w != 1:
        nets["G0"] = _image_generator(cfg, z0_dim(arch), 2, nets["G0"].image_mean)
        nets["D0"] = narrowed(nets["D0"], w, image_channels=3)
        nets["E"] = build_encoder(arch, k, w).requires_grad_(False)
        init_normal(nets["G0"])
        init_normal(nets["D0"])
    if cfg["variant"] == "dcgan":
        z_dim = cfg["dcgan_z_dim"]
        body = _image_generator(cfg, z_dim, 2, nets["G0"].image_mean)
        nets = {"E": nets["E"], "G": DCGANGenerator(body, k, conditional=cfg["loss"]["use_cond"]),
                "D0": nets["D0"]}
        _replace_q_output(nets["D0"], z_dim)
        init_normal(nets["G"])
        init_normal(nets["D0"].q_head)
    if encoder is not None:
        nets["E"] = encoder
    return nets


# ------------------------------------------------------------------ sampling
class SGANSampler(nn.Module):
    """The eval-mode generator: labels (0..K-1) and noise -> images. Saved in model.pt."""

    def __init__(self, cfg, nets):
        super().__init__()
        self.variant, self.arch = cfg["variant"], cfg["arch"]
        self.gens = nn.ModuleDict({k: nets[k] for k in (("G",) if self.variant == "dcgan" else ("G1", "G0"))})
        self.z_dims = ({"z": cfg["dcgan_z_dim"]} if self.variant == "dcgan"
                       else {"z1": Z1_DIM, "z0": z0_dim(self.arch)})

    def noise(self, count, seed, start=0):
        """U[0,1) noise per item, item i from its own generator: chunking does not change it."""
        out = {k: [] for k in self.z_dims}
        for i in range(start, start + count):
            gen = torch.Generator().manual_seed(_mix(seed, i))
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


def label_attributes(class_id, dataset):
    """Caption-attribute ids a class label fixes (synthetic: shape and colour; -1 = not stated)."""
    if dataset != "synthetic":
        return None
    from stackgan.data.synthetic import ATTRIBUTES, CLASSES

    shape, colour = next((s, c) for cid, s, c in CLASSES if cid == class_id)
    return [shape, colour] + [-1] * (len(ATTRIBUTES) - 2)


def sample_batches(payload, sampler, num_samples, seed, batch_size=100):
    """For the sample stage: yields (uint8 NHWC images, items) with labels i % K (spread evenly, as
    the reference samples); items carry class_id (the prepared id) and attributes."""
    class_ids = payload["class_ids"]
    dataset = payload["config"]["data"]["name"]
    for start in range(0, num_samples, batch_size):
        labels = [i % len(class_ids) for i in range(start, min(num_samples, start + batch_size))]
        images = sampler.sample_images(labels, seed, start)
        items = [{"label": k, "class_id": int(class_ids[k]), "caption_index": None,
                  "attributes": label_attributes(int(class_ids[k]), dataset)} for k in labels]
        yield images, items


# ------------------------------------------------------------------ training
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


def encoder_path(cfg):
    return cfg.get("encoder") or f"{encoder_dir(cfg['profile'], cfg['data']['name'])}/{ENCODER_FILE}"


class SGANMethod:
    family = "sgan"
    build_networks = staticmethod(build_networks)

    @staticmethod
    def load_generator(payload, device):
        cfg = payload["config"]
        sampler = SGANSampler(cfg, build_networks(cfg))
        sampler.load_state_dict(payload["generator"])
        return sampler.to(device).eval()

    def __init__(self, cfg, device, grad_sync=None):
        _check(cfg)
        self.cfg, self.device = cfg, device
        self.grad_sync = grad_sync or (lambda module: None)
        t = cfg["train"]
        self.independent_steps, self.joint_steps = int(t["independent_steps"]), int(t["joint_steps"])
        if t.get("max_steps") not in (None, self.independent_steps + self.joint_steps):
            raise UserError(f"{cfg['name']}: train.max_steps={t['max_steps']} but independent_steps + joint_steps "
                            f"= {self.independent_steps + self.joint_steps}; set max_steps: null")
        encoder, self.encoder_payload = load_encoder(encoder_path(cfg))
        enc = self.encoder_payload
        if enc["arch"] != cfg["arch"] or enc["num_classes"] != cfg["num_classes"] or enc["view"] != cfg["view"]:
            raise UserError(f"{encoder_path(cfg)} was trained for arch {enc['arch']}, {enc['num_classes']} classes, "
                            f"view {enc['view']}; {cfg['name']} needs {cfg['arch']}, {cfg['num_classes']}, "
                            f"{cfg['view']}: retrain the encoder or fix params.yaml")
        self.loss = L.loss_config("mnist" if cfg["arch"] == "mnist" else cfg["arch"], **cfg["loss"])
        self.adaptive = bool(cfg["adaptive_g_steps"])
        self.phase = "joint" if cfg["variant"] == "sgan" and self.independent_steps == 0 else "independent"
        nets = build_networks(cfg, joint=self.phase == "joint", image_mean=enc["image_mean"], encoder=encoder)
        self.nets = {k: v.to(device) for k, v in nets.items()}
        self._make_optimisers()

    def _make_optimisers(self):
        opt = self.cfg["optim"]
        self.optims = {name: torch.optim.Adam(net.parameters(), lr=opt["lr_d" if name.startswith("D") else "lr_g"],
                                              betas=tuple(opt["betas"]))
                       for name, net in self.nets.items() if name != "E"}

    def _enter_joint(self):
        """train_joint.py's discriminator variants, loaded with the trained weights; fresh Adam."""
        joint = build_networks(self.cfg, joint=True, image_mean=self.encoder_payload["image_mean"])
        for name in ("D1", "D0"):
            old, new = self.nets[name], joint[name].to(self.device)
            with torch.no_grad():
                for a, b in zip(new.parameters(), old.parameters(), strict=True):
                    a.copy_(b)
                for a, b in zip(new.buffers(), old.buffers(), strict=True):
                    a.copy_(b)
            self.nets[name] = new
        self.phase = "joint"
        self._make_optimisers()

    # -- protocol
    def make_dataset(self, split):
        from stackgan.data.labelled import LabelledImages

        recorded = self.encoder_payload.get("prepared_train")
        current = split.manifest.get("files", {}).get(f"train/images_{self.cfg['view']}.u8")
        if recorded != current:
            raise UserError(f"{encoder_path(self.cfg)} was trained on another version of {split.root}; "
                            f"re-run `stackgan encoder {self.cfg['data']['name']}`")
        mean = self.encoder_payload["image_mean"]
        return LabelledImages(split, self.cfg["view"], grey=self.cfg["arch"] == "mnist",
                              mean=None if mean is None else mean.numpy(), classes=self.encoder_payload["class_ids"])

    def draw_noise(self, gen, batch_size):
        slots = 1 + (MAX_G_STEPS if self.adaptive else 1)  # slot 0: the D step; 1..n: G steps
        if self.cfg["variant"] == "dcgan":
            return {"z": torch.rand(batch_size, slots, self.cfg["dcgan_z_dim"], generator=gen)}
        return {"z1": torch.rand(batch_size, slots, Z1_DIM, generator=gen),
                "z0": torch.rand(batch_size, slots, z0_dim(self.cfg["arch"]), generator=gen)}

    def on_epoch(self, epoch):
        """No schedule: Adam at a fixed 1e-4 throughout (spec §3.1)."""

    def train_step(self, batch, noise, step):
        x, y = batch["x"], batch["y"]
        if self.cfg["variant"] == "dcgan":
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
        n = L.adaptive_g_steps(d_adv) if self.adaptive else 1
        logs[f"{name}/steps"] = float(n)
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
                objective = (L.joint_g1_objective(self.loss, loss1, loss0)[0] if self.cfg["joint_end_to_end"]
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
        return copy.deepcopy(SGANSampler(self.cfg, self.nets)).eval()

    def export_extra(self):
        return {"class_ids": list(self.encoder_payload["class_ids"]), "phase": self.phase,
                "encoder_sha256_of_weights": self.encoder_payload.get("report", {}).get("weights_sha256")}

    def write_grid(self, path, columns=8):
        """One row per class (up to 10, spread over the classes), `columns` samples each."""
        from stackgan.grids import compose

        sampler = self.eval_generator()
        k = self.cfg["num_classes"]
        rows = np.unique(np.linspace(0, k - 1, min(k, 10)).round().astype(int))
        labels = np.repeat(rows, columns)
        images = sampler.sample_images(labels, self.cfg["eval"]["seed"])
        grid = images.reshape(len(rows), columns, *images.shape[1:])
        class_ids = self.encoder_payload["class_ids"]
        captions = [f"class {class_ids[r]}" for r in rows]
        with atomic_path(path) as tmp:
            compose([grid[:, c] for c in range(columns)], captions).save(tmp, format="PNG")
        if self.cfg["variant"] == "sgan":
            levels = sampler.fixed_fc3_images(rows, self.cfg["eval"]["seed"], columns)
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
