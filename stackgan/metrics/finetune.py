"""The `classifier` stage for CUB and Oxford-102: fine-tune torch-fidelity's TF-exact Inception-v3
on the test classes (50 / 20: what the authors' IS model classifies, spec stackgan-reference §6),
writing `<out>/<dataset>-ft.pth` for the `inception-v3-ft` extractor and `<out>/report.json`.

The authors published no fine-tuning code. INC is built on tensorflow/models' old `inception`
repository (slim Inception-v3, num_classes+1 outputs, EMA 0.9999, checkpoint `model.ckpt-5000`),
so our recipe follows that repository's fine-tuning defaults where our architecture allows:
RMSProp (decay 0.9, momentum 0.9, epsilon 1.0), learning rate 0.001 decayed x0.16 every 30
epochs, batch 32, 5000 steps, weight decay 4e-5 on conv/fc weights, label smoothing 0.1,
dropout 0.2 before the class layer, BatchNorm in training mode (moving-average decay 0.9997),
EMA of every weight and BatchNorm statistic with TF's warm-up min(0.9999, (1+t)/(10+t)); the
EMA weights are what is saved (INC restores the EMA shadows). Input: a random `crop` square
(256 = StackGAN-v2's training crop of the 304 view) with a horizontal flip, resized to 299 by
the extractor itself (TF1 bilinear, (x-128)/128). Held-out: `heldout_fraction` of each class,
centre crop, never trained on; its top-1 accuracy is reported. No background class: row k of
fc is the k-th smallest class id, and softmax over these K logits equals INC's softmax over
logits[1:]. Not reproduced: the auxiliary head (torch-fidelity's network has none), colour and
bounding-box distortions.

The authors' TF checkpoint itself is the separate `cub-inc` / `oxford102-inc` ruler:
`stackgan convert-inception` (metrics/convert_inception.py) ports it to the `inception-v3-slim`
extractor (metrics/slim_inception.py); this stage's model is the stand-in when that is absent.
"""

import math
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
import torch_fidelity
from torch import nn
from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

from stackgan import seeding
from stackgan.atomic import torch_save, write_json
from stackgan.data.heldout import split_heldout
from stackgan.data.prepared import PreparedSplit
from stackgan.devices import resolve_device
from stackgan.errors import UserError
from stackgan.hashing import sha256_file
from stackgan.metrics import weights as weights_lookup

RECIPE_DEFAULTS = {
    "split": "test",  # the classes the IS model classifies
    "view": "short304",
    "crop": 256,
    "input_size": 299,  # the extractor's own resize target; smaller only for tests
    "steps": 5000,
    "batch_size": 32,
    "lr": 1.0e-3,
    "lr_decay": 0.16,
    "lr_decay_epochs": 30,
    "rmsprop_decay": 0.9,
    "momentum": 0.9,
    "rmsprop_eps": 1.0,
    "weight_decay": 4.0e-5,
    "label_smoothing": 0.1,
    "dropout": 0.2,
    "batchnorm": "train",  # "train" (slim fine-tuning) or "frozen" (ImageNet statistics kept)
    "bn_decay": 0.9997,
    "ema_decay": 0.9999,
    "heldout_fraction": 0.1,
    "flip": True,
    "num_classes": None,  # expected class count (CUB 50, Oxford 20); None = not checked
    "eval_batch_size": 64,
    "seed": 0,
}
FC_INIT_STD = 0.001  # slim's logits layer init


def recipe(clf_cfg) -> dict:
    unknown = sorted(set(clf_cfg or {}) - set(RECIPE_DEFAULTS))
    if unknown:
        raise UserError(f"classifiers entry has unknown keys {unknown}; known: {sorted(RECIPE_DEFAULTS)}")
    cfg = {**RECIPE_DEFAULTS, **(clf_cfg or {})}
    if cfg["batchnorm"] not in ("train", "frozen"):
        raise UserError(f"classifiers batchnorm must be 'train' or 'frozen', got {cfg['batchnorm']!r}")
    return cfg


def load_backbone(init_weights, num_classes, seed, input_size):
    """The TF-exact Inception with ImageNet (or given) weights and a fresh K-way class layer."""
    remedy = f"pass the ImageNet weights file ({weights_lookup.INCEPTION_URL})"
    # torch-fidelity torch.loads its weights with weights_only=False: it gets what load_weights read safely.
    weights_file = weights_lookup.as_torch_file(weights_lookup.load_weights(init_weights, remedy))
    try:
        net = FeatureExtractorInceptionV3("inception-v3-compat", ["2048"], feature_extractor_weights_path=weights_file)
    except RuntimeError as e:
        raise UserError(f"{init_weights} is not a torch-fidelity Inception-v3 state dict with a 1008-way fc "
                        f"({str(e).splitlines()[0]}); {remedy}") from None
    net.INPUT_IMAGE_SIZE = input_size
    gen = seeding.torch_generator(seed)
    net.fc = nn.Linear(2048, num_classes)
    with torch.no_grad():
        net.fc.weight.copy_(torch.randn(net.fc.weight.shape, generator=gen) * FC_INIT_STD)
        net.fc.bias.zero_()
    return net.requires_grad_(True)


def crop_batch(split, view, indices, crop, rng=None, flip=False):
    """uint8 (B, 3, crop, crop): random crops (+ flips) when rng is given, else centre crops."""
    out = []
    for i in indices:
        img = split.image(view, int(i))
        h, w = img.shape[:2]
        if min(h, w) < crop:
            raise UserError(f"view '{view}' of {split.dir} has a {h}x{w} image, smaller than the crop {crop}; "
                            f"prepare a larger view or lower classifiers.crop")
        if rng is None:
            top, left = (h - crop) // 2, (w - crop) // 2
        else:
            top, left = int(rng.integers(h - crop + 1)), int(rng.integers(w - crop + 1))
        patch = img[top:top + crop, left:left + crop]
        if rng is not None and flip and rng.random() < 0.5:
            patch = patch[:, ::-1]
        out.append(np.ascontiguousarray(patch.transpose(2, 0, 1)))
    return torch.from_numpy(np.stack(out))


def class_logits(net, images, dropout=0.0):
    (features,) = net(images)
    return net.fc(F.dropout(features, dropout, training=dropout > 0))


def set_train_mode(net, batchnorm):
    net.train()
    if batchnorm == "frozen":
        for m in net.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.eval()


class WeightEMA:
    """TF ExponentialMovingAverage(decay, num_updates=step) over every float tensor of the state
    dict (weights and BatchNorm statistics alike); integer buffers are copied."""

    def __init__(self, net, decay):
        self.decay = decay
        self.state = {k: v.detach().clone() for k, v in net.state_dict().items()}

    @torch.no_grad()
    def update(self, net, step):
        decay = min(self.decay, (1 + step) / (10 + step))
        for k, v in net.state_dict().items():
            if v.is_floating_point():
                self.state[k].lerp_(v, 1 - decay)
            else:
                self.state[k].copy_(v)


def _optimizer(net, cfg):
    decayed = [p for n, p in net.named_parameters() if p.dim() > 1]  # conv and fc weights
    others = [p for n, p in net.named_parameters() if p.dim() <= 1]
    return torch.optim.RMSprop(
        [{"params": decayed, "weight_decay": cfg["weight_decay"]}, {"params": others, "weight_decay": 0.0}],
        lr=cfg["lr"], alpha=cfg["rmsprop_decay"], eps=cfg["rmsprop_eps"], momentum=cfg["momentum"],
    )


@torch.no_grad()
def heldout_accuracy(net, split, view, indices, labels, crop, batch_size, device):
    net.eval()
    correct = np.zeros(len(indices), dtype=bool)
    for start in range(0, len(indices), batch_size):
        chunk = indices[start:start + batch_size]
        pred = class_logits(net, crop_batch(split, view, chunk, crop).to(device)).argmax(1).cpu().numpy()
        correct[start:start + len(chunk)] = pred == labels[start:start + len(chunk)]
    return correct


def finetune_inception(dataset_cfg, clf_cfg, out_dir, device="auto", init_weights=None) -> dict:
    """Fine-tune on the prepared split's classes; writes `<out_dir>/<dataset>-ft.pth` (plain CPU
    state dict of FeatureExtractorInceptionV3 with fc (K, 2048), EMA weights) and report.json."""
    cfg = recipe(clf_cfg)
    dataset = dataset_cfg["name"]
    init_weights = Path(init_weights) if init_weights is not None else weights_lookup.locate("inception-2015-12-05")
    out_file = Path(out_dir) / weights_lookup.CLASSIFIER_FILES.get(f"{dataset}-ft", f"{dataset}-ft.pth")
    device = resolve_device(device)
    split = PreparedSplit(dataset_cfg["prepared_dir"], cfg["split"])
    if cfg["view"] not in split.views:
        raise UserError(f"{split.root}/manifest.json has no view '{cfg['view']}' (views: {split.views}); "
                        f"add it to datasets.{dataset}.views and re-run `stackgan prepare {dataset}`")
    class_ids, labels = np.unique(split.class_ids, return_inverse=True)
    if cfg["num_classes"] is not None and len(class_ids) != cfg["num_classes"]:
        raise UserError(f"{split.dir} holds {len(class_ids)} classes, expected {cfg['num_classes']} "
                        f"(classifiers.{dataset}.num_classes); re-run `stackgan prepare {dataset}` without --limit "
                        f"or set num_classes to null")
    train_idx, heldout_idx = split_heldout(split.class_ids, cfg["heldout_fraction"], cfg["seed"])
    if len(train_idx) == 0:
        raise UserError(f"{split.dir}: no images left to fine-tune on; lower classifiers.{dataset}.heldout_fraction")

    torch.manual_seed(cfg["seed"])  # dropout masks
    rng = seeding.numpy_rng(cfg["seed"], 1)
    net = load_backbone(init_weights, len(class_ids), cfg["seed"], cfg["input_size"]).to(device)
    for m in net.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.momentum = 1 - cfg["bn_decay"]
    optimizer = _optimizer(net, cfg)
    ema = WeightEMA(net, cfg["ema_decay"])
    steps_per_epoch = len(train_idx) / cfg["batch_size"]
    order, cursor, losses = rng.permutation(train_idx), 0, []
    set_train_mode(net, cfg["batchnorm"])
    for step in range(cfg["steps"]):
        if cursor + cfg["batch_size"] > len(order):  # new epoch: reshuffle, drop the ragged tail
            order, cursor = rng.permutation(train_idx), 0
        batch = order[cursor:cursor + cfg["batch_size"]]
        cursor += len(batch)
        epoch = step / steps_per_epoch
        for group in optimizer.param_groups:
            group["lr"] = cfg["lr"] * cfg["lr_decay"] ** math.floor(epoch / cfg["lr_decay_epochs"])
        images = crop_batch(split, cfg["view"], batch, cfg["crop"], rng, cfg["flip"]).to(device)
        target = torch.from_numpy(labels[batch]).to(device)
        loss = F.cross_entropy(class_logits(net, images, cfg["dropout"]), target, label_smoothing=cfg["label_smoothing"])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        ema.update(net, step)
        losses.append(loss.item())

    net.load_state_dict(ema.state)
    correct = heldout_accuracy(net, split, cfg["view"], heldout_idx, labels[heldout_idx], cfg["crop"],
                               cfg["eval_batch_size"], device)
    torch_save({k: v.detach().cpu().contiguous() for k, v in net.state_dict().items()}, out_file)
    names = sorted({(int(c), k.split("/")[0]) for c, k in zip(split.class_ids, split.keys)})
    report = {
        "dataset": dataset,
        "weights_file": out_file.name,
        "weights_sha256": sha256_file(out_file),
        "init_weights": {"file": init_weights.name, "sha256": sha256_file(init_weights)},
        "num_classes": len(class_ids),
        "classes": [{"index": i, "class_id": c, "name": n} for i, (c, n) in enumerate(names)],
        "train_images": len(train_idx),
        "heldout_images": len(heldout_idx),
        "heldout_top1": float(correct.mean()) if len(correct) else None,
        "heldout_keys": [split.keys[i] for i in heldout_idx],
        "final_loss": float(np.mean(losses[-20:])) if losses else None,
        "device": str(device),
        "torch_fidelity": torch_fidelity.__version__,
        "recipe": cfg,
    }
    write_json(Path(out_dir) / "report.json", report)
    return report
