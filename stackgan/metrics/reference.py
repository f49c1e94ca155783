"""The real images metrics compare against: a prepared split, centre-cropped from a view and
resized to the samples' resolution (the deterministic counterpart of the training crop), and
where the stages that score against them keep their outputs.
"""

from pathlib import Path

import numpy as np
import torch
from PIL import Image

from stackgan.data.prepared import PreparedSplit
from stackgan.errors import UserError
from stackgan.hashing import sha256_json
from stackgan.metrics.protocols import get_protocol

# Part of every reference key, so a new crop rule never meets statistics of the old one.
CROP_RULE = "centre square of the view, PIL bilinear to the resolution"


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


def reference_set(prepared_dir, split_name, view, resolution):
    """(dataset of uint8 reference images, reference key) of one prepared split as FID reads it;
    the key names the content by the manifest's sha256s, so nothing is decoded to build it."""
    prepared = Path(prepared_dir)
    split = PreparedSplit(prepared, split_name)
    if view not in split.views:
        raise UserError(f"{prepared}/manifest.json has no view '{view}' (views: {split.views}); "
                        f"prepare the view the experiment trains on")
    files = sha256_json(split.manifest["files"], 16, default=str)
    key = f"{prepared.name}/{split_name}/{view}/{CROP_RULE}/{resolution}/{files}"
    return ReferenceImages(split, view, resolution), key


def fid_reference_split(cfg):
    """The prepared split an experiment's FID protocols compare with (None: no FID protocol)."""
    splits = {get_protocol(n).reference for n in cfg["eval"]["protocols"] if get_protocol(n).metric == "fid"}
    if len(splits) > 1:
        raise UserError(f"{cfg['name']}: FID protocols name several reference splits {sorted(splits)}; use one")
    return splits.pop() if splits else None


def classifier_dir(profile, dataset):
    """The classifier stage's folder: a dataset's scoring networks."""
    return Path(f"runs/{profile}/classifiers/{dataset}")


def refstats_dir(profile, dataset):
    """The refstats stage's folder: a dataset's FID reference statistics."""
    return Path(f"runs/{profile}/refstats/{dataset}")
