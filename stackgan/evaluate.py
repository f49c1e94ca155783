"""`stackgan classifier` and `stackgan evaluate`: scoring networks and the metrics files.

The real reference set of a FID protocol is the prepared split the protocol names, centre-
cropped from the experiment's own view and resized to the samples' resolution, i.e. the
deterministic counterpart of the training crop.
"""

import hashlib
import json
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from stackgan import reproducibility
from stackgan.atomic import write_json
from stackgan.data.prepared import PreparedSplit
from stackgan.errors import UserError
from stackgan.metrics.compute import evaluate_samples
from stackgan.metrics.protocols import get_protocol
from stackgan.sample import read_samples


def centre_square(img, size):
    h, w = img.shape[:2]
    s = min(h, w)
    top, left = (h - s) // 2, (w - s) // 2
    crop = Image.fromarray(img[top:top + s, left:left + s])
    return np.asarray(crop.resize((size, size), Image.BILINEAR) if s != size else crop)


class ReferenceImages(torch.utils.data.Dataset):
    """uint8 (3, S, S) real images of one prepared split, as torch-fidelity reads them."""

    def __init__(self, split, view, size):
        self.split, self.view, self.size = split, view, size

    def __len__(self):
        return len(self.split)

    def __getitem__(self, i):
        return torch.from_numpy(np.array(centre_square(self.split.image(self.view, i), self.size))).permute(2, 0, 1)


def classifier_dir(cfg):
    return Path(f"runs/{cfg['profile']}/classifiers/{cfg['data']['name']}")


def refstats_dir(cfg):
    return Path(f"runs/{cfg['profile']}/refstats/{cfg['data']['name']}")


def final_resolution(cfg):
    """Side of the images an experiment is scored at (its last branch / stage)."""
    from stackgan.methods.v2 import emitted_sizes

    return emitted_sizes(cfg)[-1] if cfg["family"] == "v2" else int(cfg.get("out_size") or 32)


def fid_reference_split(cfg):
    splits = {get_protocol(n).reference for n in cfg["eval"]["protocols"] if get_protocol(n).metric == "fid"}
    if len(splits) > 1:
        raise UserError(f"{cfg['name']}: FID protocols name several reference splits {sorted(splits)}; use one")
    return splits.pop() if splits else None


def evaluate(cfg, device="cpu"):
    """Score the experiment's samples; FID reads the statistics the refstats stage wrote."""
    from stackgan.metrics.refstats import reference_set

    samples_dir = Path(cfg["paths"]["samples"])
    index = read_samples(samples_dir)
    reference, reference_key = None, None
    split_name = fid_reference_split(cfg)
    if split_name:
        reference, reference_key = reference_set(cfg["data"]["prepared_dir"], split_name, cfg["view"],
                                                 index["resolution"])
    result = evaluate_samples(samples_dir, cfg["eval"]["protocols"], reference_images=reference, device=device,
                              classifier_dir=classifier_dir(cfg), reference_stats_dir=refstats_dir(cfg),
                              reference_key=reference_key)
    out = {"experiment": cfg["name"], "profile": cfg["profile"], "checkpoint_step": index["step"], **result,
           "reproducibility": {"train": index.get("trained_under"), "evaluate": reproducibility.contract()}}
    write_json(cfg["paths"]["metrics"], out)
    return out


def evaluate_real(params, dataset, profile, device="cpu"):
    """Metrics of the real images themselves (e.g. the SGAN table's real CIFAR-10 IS), written
    as results/metrics/<profile>/<dataset>-real.json so the report finds them as an experiment."""
    from stackgan.config import dataset_config
    from stackgan.metrics.compute import compute

    spec = (params.get("real") or {}).get(dataset)
    if spec is None:
        raise UserError(f"params.yaml has no real.{dataset} entry; real-image metrics are defined for "
                        f"{', '.join(params.get('real') or {})}")
    ds = dataset_config(params, dataset, profile)
    split = PreparedSplit(Path(ds["prepared_dir"]), spec["split"])
    images = ReferenceImages(split, spec["view"], spec["size"])
    result = compute(spec["protocols"], images, device=device, class_ids=split.class_ids.tolist(),
                     classifier_dir=Path(f"runs/{profile}/classifiers/{dataset}"))
    for details in result["protocols"].values():
        details["source"] = f"real images: {dataset} {spec['split']} split, view {spec['view']} at {spec['size']} px"
    out = {"experiment": f"{dataset}-real", "profile": profile, "checkpoint_step": None, **result,
           "reproducibility": {"train": None, "evaluate": reproducibility.contract()}}
    write_json(f"results/metrics/{profile}/{dataset}-real.json", out)
    return out


def compute_refstats_for(params, dataset, profile, out_dir, device="auto"):
    """FID reference statistics for every evaluated experiment of `dataset` in the active run."""
    from stackgan.config import experiment_config
    from stackgan.metrics.refstats import compute_refstats

    written = {}
    for name in params["run"].get("evaluate", []):
        cfg = experiment_config(params, name, profile)
        if cfg["data"]["name"] != dataset or fid_reference_split(cfg) is None:
            continue
        written.update(compute_refstats(cfg["data"], cfg["eval"]["protocols"], out_dir, cfg["view"],
                                        final_resolution(cfg), device, classifier_dir=classifier_dir(cfg)))
    return written


def hash_of(obj):
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def train_synthetic_classifier(ds_cfg, clf_cfg, out_dir):
    """The synthetic dataset's scoring network, trained on every prepared image (train+test)."""
    from stackgan.metrics.synthetic_classifier import save_classifier, train_classifier

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
