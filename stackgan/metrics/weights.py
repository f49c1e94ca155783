"""Where each scoring network's weights live, found offline; a missing file is a UserError that
says which file to put where.

Two kinds of weights:
- `inception-v3-compat` (the TF-exact ImageNet Inception of improved-gan, ported by
  torch-fidelity): torch-fidelity downloads it with torch.hub into `<torch hub dir>/checkpoints/`
  under the file name of its release URL; we look there and never download.
- our own classifiers (fine-tuned Inception for CUB / Oxford-102, the synthetic classifier),
  written by the `classifier` stage into a classifier folder (default `data/classifiers`).

File format of a fine-tuned Inception (`<dataset>-ft.pth`): a plain state dict of
torch-fidelity's `FeatureExtractorInceptionV3` whose `fc.weight` has shape (num_classes, 2048)
and `fc.bias` (num_classes,), saved with CPU tensors.

Every weights file is read with `untrusted.load_torch` (tensors and plain containers only).
"""

import io
from pathlib import Path

import torch
import torch.hub

from stackgan.errors import UserError
from stackgan.hashing import sha256_file
from stackgan.untrusted import load_torch

DEFAULT_CLASSIFIER_DIR = Path("data/classifiers")

# Read from torch_fidelity/feature_extractor_inceptionv3.py (v0.4.0): URL_INCEPTION_V3.
INCEPTION_URL = (
    "https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/weights-inception-2015-12-05-6726825d.pth"
)
INCEPTION_FILE = "weights-inception-2015-12-05-6726825d.pth"
# torch.hub's convention: the 8 hex digits before ".pth" start the file's sha256.
INCEPTION_SHA256_PREFIX = "6726825d"

CLASSIFIER_FILES = {
    "cub-ft": "cub-ft.pth",
    "oxford102-ft": "oxford102-ft.pth",
    "synthetic-clf": "synthetic-clf.pt",
}

def inception_dir() -> Path:
    return Path(torch.hub.get_dir()) / "checkpoints"


def locate_inception(verify=True) -> Path:
    """Path of the TF-exact Inception weights in the torch hub cache (never downloads)."""
    path = inception_dir() / INCEPTION_FILE
    if not path.is_file():
        raise UserError(
            f"missing Inception weights {INCEPTION_FILE} in {inception_dir()}; "
            f"download {INCEPTION_URL} into that folder (or set TORCH_HOME to a folder whose "
            f"hub/checkpoints holds it)"
        )
    if verify and not sha256_file(path).startswith(INCEPTION_SHA256_PREFIX):
        raise UserError(
            f"{path} does not match its sha256 prefix {INCEPTION_SHA256_PREFIX} (corrupt or partial "
            f"download); delete it and download {INCEPTION_URL} again"
        )
    return path


def locate_classifier(model_key, classifier_dir=None) -> Path:
    """Path of one of our own classifiers (`cub-ft`, `oxford102-ft`, `synthetic-clf`)."""
    if model_key not in CLASSIFIER_FILES:
        raise UserError(f"no classifier is named {model_key!r}; known: {sorted(CLASSIFIER_FILES)}")
    folder = Path(classifier_dir) if classifier_dir is not None else DEFAULT_CLASSIFIER_DIR
    path = folder / CLASSIFIER_FILES[model_key]
    if not path.is_file():
        dataset = model_key.rsplit("-", 1)[0]
        raise UserError(
            f"missing classifier weights {CLASSIFIER_FILES[model_key]} in {folder}; run the "
            f"`classifier` stage for {dataset} (it writes that file) or copy the file there"
        )
    return path


def locate(model_key, classifier_dir=None) -> Path:
    """Weights of a scoring model by its protocol key: `imagenet` or a classifier name."""
    if model_key == "imagenet":
        return locate_inception()
    return locate_classifier(model_key, classifier_dir)


def remedy(model_key) -> str:
    """What to do about a bad weights file of a scoring model (a protocol's `model`)."""
    if model_key == "imagenet":
        return f"replace it with {INCEPTION_URL}"
    if model_key in CLASSIFIER_FILES:
        return (f"re-run the `classifier` stage for {model_key.rsplit('-', 1)[0]} "
                f"(it writes {CLASSIFIER_FILES[model_key]})")
    return "pass a weights file that holds a state dict of tensors"


def load_weights(path, remedy_text) -> dict:
    """The state dict of tensors in a weights file, read without running anything it names."""
    state = load_torch(path, remedy_text)
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise UserError(f"{path} does not hold a state dict of tensors; {remedy_text}")
    return state


def as_torch_file(state) -> io.BytesIO:
    """`state` as an in-memory torch file: what torch-fidelity's own extractors are given, since
    they torch.load their weights file with weights_only=False."""
    buf = io.BytesIO()
    torch.save(state, buf)
    buf.seek(0)
    return buf
