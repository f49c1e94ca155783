"""Views: the named, resized forms of each image that a prepared dataset holds.

A view spec is {"mode": "short"|"square"|"crop", "size": int, "resample": "bilinear"|...}.
make_view is used both when pixel shards are written (staging.write_split) and when encoded
shards are read (encoded_shards.py), so it lives in this leaf module that imports neither.
"""

import re

import numpy as np
from PIL import Image

from stackgan.errors import UserError

RESAMPLE = {"nearest": Image.NEAREST, "bilinear": Image.BILINEAR, "bicubic": Image.BICUBIC,
            "lanczos": Image.LANCZOS}
# short: shorter side -> size, aspect kept (torchvision Scale(size), StackGAN-v2 / V1PT-style);
# square: size x size, aspect not kept (StackGAN-v1 TF preprocessing); crop: the image as given.
VIEW_MODES = ("short", "square", "crop")


def check_views(views: dict) -> dict:
    """Validate view specs; returns them with defaults filled (resample: bilinear)."""
    if not views:
        raise UserError("prepare: no views requested; give at least one, e.g. short76")
    out = {}
    for name, spec in views.items():
        spec = {"resample": "bilinear", **spec}
        if not re.fullmatch(r"[A-Za-z0-9_-]+", name):
            raise UserError(f"view name '{name}' must use letters, digits, '_' or '-' only")
        if spec.get("mode") not in VIEW_MODES:
            raise UserError(f"view '{name}': mode must be one of {VIEW_MODES}, got {spec.get('mode')!r}")
        if spec["resample"] not in RESAMPLE:
            raise UserError(f"view '{name}': resample must be one of {sorted(RESAMPLE)}")
        if spec["mode"] != "crop" and not (isinstance(spec.get("size"), int) and spec["size"] > 0):
            raise UserError(f"view '{name}': size must be a positive integer, got {spec.get('size')!r}")
        out[name] = spec
    return out


def make_view(img: Image.Image, spec: dict) -> np.ndarray:
    mode, resample = spec["mode"], RESAMPLE[spec["resample"]]
    if mode == "square":
        img = img.resize((spec["size"], spec["size"]), resample)
    elif mode == "short":
        size, (w, h) = spec["size"], img.size
        if min(w, h) != size:  # torchvision Scale leaves an image already at size untouched
            new = (size, int(size * h / w)) if w < h else (int(size * w / h), size)
            img = img.resize(new, resample)
    return np.asarray(img, dtype=np.uint8)
