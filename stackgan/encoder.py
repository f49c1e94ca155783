"""`stackgan encoder DATASET`: pre-train SGAN's frozen encoder E (spec sgan-reference.md §1.2).

E is conv-pool-conv-pool-fc3-fc4 (stackgan.models.sgan.Encoder), trained as a classifier on the
prepared training split in SGAN's image space. The authors released only trained weights, no
training code, so the recipe is ours (params.yaml `encoders`, results/DEVIATIONS.md): Adam,
cross-entropy, Glorot-uniform init (Lasagne's default), horizontal flips on CIFAR-10 only ([M]:
the paper's statement). The held-out accuracy is measured on the test split when its classes
are training classes, else (the synthetic set's class-disjoint split) on a held-out part of
the training split that is then not trained on.

Output folder: `encoder.pt` (weights, the mean image and class ids the SGAN method must use,
the recipe, and the prepared data's hash) and `report.json` (accuracy, sha256 of encoder.pt).
"""

import copy
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from stackgan import seeding
from stackgan.atomic import torch_save, write_json
from stackgan.data.heldout import split_heldout
from stackgan.data.labelled import class_order, contiguous_labels, load_images, pixel_mean
from stackgan.data.prepared import PreparedSplit
from stackgan.devices import resolve_device
from stackgan.errors import UserError
from stackgan.hashing import sha256_file
from stackgan.models.sgan import Encoder
from stackgan.untrusted import load_torch

ENCODER_FILE = "encoder.pt"
REPORT_FILE = "report.json"


def encoder_dir(profile: str, dataset: str) -> str:
    """Where the encoder stage writes (and the SGAN method reads) a dataset's encoder."""
    return f"runs/{profile}/encoders/{dataset}"


def encoder_config(params: dict, dataset: str, profile=None) -> dict:
    """encoders.defaults <- encoders.<dataset> <- profiles.<profile>.overrides.encoder, plus paths."""
    from stackgan.config import dataset_config, deep_merge, resolve_profile

    section = params.get("encoders") or {}
    if dataset not in section:
        known = ", ".join(k for k in section if k != "defaults")
        raise UserError(f"params.yaml has no encoders.{dataset}; SGAN encoders exist for: {known}")
    profile = resolve_profile(params, profile)
    cfg = deep_merge(section.get("defaults"), section[dataset])
    cfg = deep_merge(cfg, (params["profiles"][profile].get("overrides") or {}).get("encoder"))
    cfg.update(name=dataset, profile=profile, prepared_dir=dataset_config(params, dataset, profile)["prepared_dir"],
               out_dir=encoder_dir(profile, dataset))
    return cfg


def build_encoder(arch: str, num_classes: int, width: float = 1.0) -> Encoder:
    """E for an SGAN architecture; width scales the conv channels (1 = the reference's)."""
    if arch == "mnist":
        if width != 1:
            raise UserError("the MNIST encoder has no width option; set width: 1")
        return Encoder(1, (32, 32), 32 * 4 * 4, num_classes)
    c1, c2 = max(1, round(64 * width)), max(1, round(128 * width))
    return Encoder(3, (c1, c2), c2 * 5 * 5, num_classes)


def _glorot(module):
    for m in module.modules():
        if isinstance(m, (nn.Linear, nn.Conv2d)):
            nn.init.xavier_uniform_(m.weight)
            nn.init.zeros_(m.bias)


def _model_space(images_u8, grey, mean):
    x = images_u8.permute(0, 3, 1, 2)
    x = (x[:, :1] if grey else x).float().div(255)
    return x if mean is None else x - mean


@torch.no_grad()
def accuracy(encoder, x, y, batch_size=1000):
    encoder.eval()
    hits = sum(int((encoder(x[i:i + batch_size])[1].argmax(1) == y[i:i + batch_size]).sum())
               for i in range(0, len(x), batch_size))
    return hits / max(1, len(x))


def train_encoder(cfg: dict, prepared_dir, out_dir, device="auto") -> dict:
    """Train E per cfg (an `encoder_config` result); write out_dir/encoder.pt and report.json.

    cfg keys: arch (cifar|mnist|svhn|synthetic), view, steps, batch_size, lr, betas, flip, seed,
    width, heldout_fraction. Returns the report.
    """
    device = resolve_device(device)
    prepared_dir, out_dir = Path(prepared_dir), Path(out_dir)
    train = PreparedSplit(prepared_dir, "train")
    test = PreparedSplit(prepared_dir, "test")
    classes = class_order(train)
    grey = cfg["arch"] == "mnist"
    images = load_images(train, cfg["view"])
    mean = None if grey else pixel_mean(images)
    mean_t = None if mean is None else torch.from_numpy(mean).to(device)
    labels = contiguous_labels(train.class_ids, classes, train.dir)
    if set(np.unique(test.class_ids)) <= set(classes.tolist()):
        fit, held_x, held_y, held_from = np.arange(len(labels)), load_images(test, cfg["view"]), \
            contiguous_labels(test.class_ids, classes, test.dir), "test split"
    else:
        fit, held = split_heldout(labels, cfg["heldout_fraction"], cfg["seed"])
        held_x, held_y = images[held], labels[held]
        held_from = f"held-out {cfg['heldout_fraction']:.0%} of the training split (test classes are disjoint)"
    x = torch.from_numpy(images[fit]).to(device)
    y = torch.from_numpy(labels[fit]).to(device)
    if len(x) < cfg["batch_size"]:
        raise UserError(f"{train.dir} has {len(x)} training images, fewer than encoders batch_size "
                        f"{cfg['batch_size']}; lower it")

    torch.manual_seed(cfg["seed"])
    encoder = build_encoder(cfg["arch"], len(classes), cfg.get("width", 1.0))
    _glorot(encoder)
    encoder.to(device)
    opt = torch.optim.Adam(encoder.parameters(), lr=cfg["lr"], betas=tuple(cfg["betas"]))
    gen = seeding.torch_generator(cfg["seed"])
    per_epoch = len(x) // cfg["batch_size"]
    order, loss = None, torch.zeros(())
    encoder.train()
    for step in range(cfg["steps"]):
        if step % per_epoch == 0:
            order = torch.randperm(len(x), generator=gen)
        idx = order[(step % per_epoch) * cfg["batch_size"]:(step % per_epoch + 1) * cfg["batch_size"]].to(device)
        batch = _model_space(x[idx], grey, mean_t)
        if cfg["flip"]:
            flip = (torch.rand(len(idx), generator=gen) < 0.5).to(device)
            batch = torch.where(flip[:, None, None, None], batch.flip(3), batch)
        loss = F.cross_entropy(encoder(batch)[1], y[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    held_t = _model_space(torch.from_numpy(held_x).to(device), grey, mean_t)
    report = {"dataset": cfg["name"], "arch": cfg["arch"], "steps": cfg["steps"],
              "heldout_accuracy": accuracy(encoder, held_t, torch.from_numpy(held_y).to(device)),
              "heldout": held_from, "heldout_count": int(len(held_y)),
              "train_accuracy": accuracy(encoder, _model_space(x[:5000], grey, mean_t), y[:5000]),
              "final_loss": float(loss.detach()),
              "recipe": "ours (the authors released no encoder-training code)"}
    payload = {"arch": cfg["arch"], "width": cfg.get("width", 1.0), "num_classes": len(classes),
               "class_ids": classes.tolist(), "view": cfg["view"],
               "image_mean": None if mean is None else torch.from_numpy(mean),
               "state_dict": {k: v.cpu() for k, v in encoder.state_dict().items()},
               "prepared_train": train.manifest.get("files", {}).get(f"train/images_{cfg['view']}.u8"),
               "config": copy.deepcopy(cfg), "report": report}
    torch_save(payload, out_dir / ENCODER_FILE)
    report["weights_sha256"] = sha256_file(out_dir / ENCODER_FILE)
    write_json(out_dir / REPORT_FILE, report)
    return report


def load_encoder(path, device="cpu"):
    """(frozen eval-mode E, payload) from an encoder.pt written by train_encoder."""
    path = Path(path)
    remedy = "run `stackgan encoder DATASET` (the SGAN encoder stage) to write it again"
    if not path.is_file():
        raise UserError(f"{path} not found; run `stackgan encoder DATASET` (the SGAN encoder stage) first")
    payload = load_torch(path, remedy)
    try:
        encoder = build_encoder(payload["arch"], payload["num_classes"], payload["width"])
        encoder.load_state_dict(payload["state_dict"])
    except (KeyError, IndexError, TypeError, ValueError, RuntimeError) as err:
        first = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise UserError(f"{path} is not an encoder.pt written by `stackgan encoder` ({first[:160]}); "
                        f"{remedy}") from None
    encoder.requires_grad_(False)
    return encoder.to(device).eval(), payload
