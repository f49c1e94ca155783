"""A small CNN that scores the embedded synthetic dataset the way the fine-tuned Inception scores
CUB: class logits for IS, a feature vector for FID, and one head per caption attribute (shape,
colour, size, position, background) for caption-attribute accuracy.

Registered with torch-fidelity as feature extractor `synthetic-clf`, features
`logits_unbiased` (class logits; the class head has no bias, so the name is literal), `feat`
(the trunk's feature vector) and `attr_logits` (all attribute heads' logits concatenated).
"""

from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch_fidelity import register_feature_extractor
from torch_fidelity.helpers import vassert
from torch_fidelity.registry import FEATURE_EXTRACTORS_REGISTRY

from stackgan import seeding
from stackgan.atomic import torch_save, write_json
from stackgan.data.prepared import PreparedSplit
from stackgan.errors import UserError
from stackgan.metrics.fidelity import Extractor
from stackgan.hashing import sha256_file
from stackgan.metrics.images import resize_uint8, to_uint8_nchw
from stackgan.metrics.reference import centre_square
from stackgan.untrusted import load_torch

INPUT_SIZE = 64
EXTRACTOR_NAME = "synthetic-clf"


class SyntheticClassifier(nn.Module):
    def __init__(self, num_classes, attr_sizes, width=32, feat_dim=128):
        super().__init__()
        self.config = {"num_classes": int(num_classes), "attr_sizes": [int(a) for a in attr_sizes],
                       "width": int(width), "feat_dim": int(feat_dim)}
        w = width
        layers, c_in = [], 3
        for c_out in (w, 2 * w, 4 * w, 4 * w):  # 64 -> 32 -> 16 -> 8 -> 4
            layers += [nn.Conv2d(c_in, c_out, 4, 2, 1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True)]
            c_in = c_out
        self.trunk = nn.Sequential(*layers)
        # Flatten, not global pooling: position (left/right, top/bottom) is an attribute.
        self.embed = nn.Sequential(nn.Flatten(), nn.Linear(c_in * 4 * 4, feat_dim), nn.ReLU(inplace=True))
        self.class_head = nn.Linear(feat_dim, num_classes, bias=False)
        self.attr_heads = nn.ModuleList(nn.Linear(feat_dim, n) for n in attr_sizes)

    @staticmethod
    def preprocess(x: torch.Tensor) -> torch.Tensor:
        """uint8 (N,3,H,W) of any size -> float (N,3,64,64) in [-1, 1]."""
        return resize_uint8(x, INPUT_SIZE).float() / 127.5 - 1.0

    def forward(self, x_uint8):
        feat = self.embed(self.trunk(self.preprocess(x_uint8)))
        return feat, self.class_head(feat), [head(feat) for head in self.attr_heads]


def _accuracy(logits, target):
    return float((logits.argmax(1) == target).float().mean())


def train_classifier(images, class_ids, attributes, attr_sizes, num_classes, steps=300, seed=0,
                     batch_size=64, lr=2e-3, heldout_fraction=0.15, attr_names=None):
    """Train on CPU; return (model in eval mode, report with held-out accuracy per head).

    No augmentation: flips would swap the position attribute and colour jitter the colour one.
    """
    x = resize_uint8(to_uint8_nchw(images), INPUT_SIZE)
    y = torch.as_tensor(np.asarray(class_ids), dtype=torch.long)
    a = torch.as_tensor(np.asarray(attributes), dtype=torch.long)
    if a.shape != (len(x), len(attr_sizes)) or y.shape != (len(x),):
        raise UserError(
            f"classifier data disagree: {len(x)} images, class ids {tuple(y.shape)}, attributes {tuple(a.shape)} "
            f"for {len(attr_sizes)} attribute sizes; check the prepared split"
        )
    names = list(attr_names) if attr_names is not None else [f"attr{i}" for i in range(len(attr_sizes))]
    gen = seeding.torch_generator(seed)
    order = torch.randperm(len(y), generator=gen)
    n_held = max(1, int(round(len(y) * heldout_fraction)))
    held, train = order[:n_held], order[n_held:]

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = SyntheticClassifier(num_classes, attr_sizes)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    model.train()
    loss = torch.tensor(0.0)
    for _ in range(steps):
        idx = train[torch.randint(len(train), (min(batch_size, len(train)),), generator=gen)]
        _, class_logits, attr_logits = model(x[idx])
        loss = F.cross_entropy(class_logits, y[idx])
        for k, logits in enumerate(attr_logits):
            loss = loss + F.cross_entropy(logits, a[idx, k])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    model.eval()

    with torch.no_grad():
        _, class_logits, attr_logits = model(x[held])
    heldout = {"class": _accuracy(class_logits, y[held])}
    heldout.update({name: _accuracy(lg, a[held, k]) for k, (name, lg) in enumerate(zip(names, attr_logits))})
    report = {"heldout_accuracy": heldout, "train_size": len(train), "heldout_size": n_held,
              "steps": steps, "seed": seed, "final_loss": float(loss.detach()), "config": model.config}
    return model, report


def save_classifier(model: SyntheticClassifier, path) -> str:
    """Write weights atomically (CPU tensors); return the file's sha256."""
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    torch_save({"config": model.config, "state_dict": state}, path)
    return sha256_file(path)


def train_synthetic_classifier(ds_cfg, clf_cfg, out_dir):
    """The classifier stage for the synthetic dataset: trained on every prepared image
    (train+test), written to <out_dir>/synthetic-clf.pt with its report.json."""
    prepared = Path(ds_cfg["prepared_dir"])
    images, class_ids, attributes = [], [], []
    for split_name in ("train", "test"):
        split = PreparedSplit(prepared, split_name)
        if split.attributes is None:
            raise UserError(f"{prepared}/{split_name} has no attributes.npy; re-run `stackgan prepare synthetic`")
        images += [centre_square(split.image(clf_cfg["view"], i), clf_cfg["size"]) for i in range(len(split))]
        class_ids.append(split.class_ids)
        attributes.append(split.attributes)
    attributes = np.concatenate(attributes)
    vocab = PreparedSplit(prepared, "train").manifest["attributes"]
    attr_sizes = [len(vocab["values"][n]) for n in vocab["names"]]
    classes, class_index = np.unique(np.concatenate(class_ids), return_inverse=True)
    model, report = train_classifier(images, class_index, attributes, attr_sizes, num_classes=len(classes),
                                     steps=clf_cfg["steps"], seed=clf_cfg["seed"], attr_names=vocab["names"])
    out_dir = Path(out_dir)
    sha = save_classifier(model, out_dir / "synthetic-clf.pt")
    report.update(weights_sha256=sha, num_images=len(images), recipe=clf_cfg)
    write_json(out_dir / "report.json", report)
    return report


def load_classifier(path) -> SyntheticClassifier:
    if path is None:
        raise UserError("the synthetic-clf extractor needs its weights file; pass the classifier stage's "
                        "synthetic-clf.pt as feature_extractor_weights_path")
    remedy = "run the classifier stage for synthetic (`stackgan classifier synthetic` writes synthetic-clf.pt)"
    blob = load_torch(path, remedy)
    try:
        model = SyntheticClassifier(**blob["config"])
        model.load_state_dict(blob["state_dict"])
    except (KeyError, IndexError, TypeError, ValueError, RuntimeError) as err:
        first = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise UserError(f"{path} is not a synthetic classifier written by the classifier stage ({first[:160]}); "
                        f"{remedy}") from None
    return model.eval()


class SyntheticClassifierExtractor(Extractor):
    FEATURES = ("feat", "logits_unbiased", "attr_logits")
    METRIC_FEATURES = {"isc": "logits_unbiased", "fid": "feat", "kid": "feat", "prc": "feat"}
    INPUT = (torch.uint8, INPUT_SIZE)

    def __init__(self, name, features_list, feature_extractor_weights_path=None, **kwargs):
        super().__init__(name, features_list)
        self.net = load_classifier(feature_extractor_weights_path)
        self.requires_grad_(False)

    def forward(self, x):
        vassert(torch.is_tensor(x) and x.dtype == torch.uint8, "Expecting image as torch.Tensor with dtype=torch.uint8")
        feat, class_logits, attr_logits = self.net(x)
        out = {"feat": feat, "logits_unbiased": class_logits, "attr_logits": torch.cat(attr_logits, 1)}
        return tuple(out[k] for k in self.features_list)


@torch.no_grad()
def capacc(model: SyntheticClassifier, images, attributes, batch_size=256) -> dict:
    """Caption-attribute accuracy of generated images.

    `value` = mean over attributes of the fraction of images whose predicted attribute equals
    the caption's; attribute ids < 0 (not stated by the caption) are left out of that attribute.
    """
    x = to_uint8_nchw(images)
    a = torch.as_tensor(np.asarray(attributes), dtype=torch.long)
    if a.shape != (len(x), len(model.attr_heads)):
        raise UserError(f"caption attributes of shape {tuple(a.shape)} for {len(x)} images and "
                        f"{len(model.attr_heads)} attribute heads; use the matching samples.json and weights")
    model.eval()
    preds = []
    for i in range(0, len(x), batch_size):
        _, _, attr_logits = model(x[i:i + batch_size])
        preds.append(torch.stack([lg.argmax(1) for lg in attr_logits], 1))
    pred = torch.cat(preds)
    stated = a >= 0
    hits = (pred == a) & stated
    per_attr = [float(hits[:, k].sum() / stated[:, k].sum()) if stated[:, k].any() else None
                for k in range(a.shape[1])]
    scored = [p for p in per_attr if p is not None]
    all_match = float(((pred == a) | ~stated).all(1).float().mean())
    return {"value": float(np.mean(scored)) if scored else None, "std": None,
            "per_attribute": per_attr, "all_attributes_match": all_match, "num_samples": len(x)}


if EXTRACTOR_NAME not in FEATURE_EXTRACTORS_REGISTRY:
    register_feature_extractor(EXTRACTOR_NAME, SyntheticClassifierExtractor)
