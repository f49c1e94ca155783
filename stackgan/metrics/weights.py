"""Where each scoring network's weights live, found offline; a missing file is a UserError that
says which command writes it, or which file to put where.

Weights keys (a ruler's `model`, see stackgan/metrics/rulers.py):
- `inception-2015-12-05` (the TF-exact ImageNet Inception of improved-gan, ported by
  torch-fidelity) and `torchvision-inception-v3` (torchvision's ImageNet Inception-v3):
  `stackgan fetch <key>` writes them to `data/weights/<key>/`; torch.hub's cache
  (`<torch hub dir>/checkpoints/`, where torch-fidelity and torchvision put them) is looked in
  next. Their file names end in the first 8 hex digits of their sha256, which is checked.
- `cub-inc`, `oxford102-inc`: the authors' fine-tuned birds / flowers Inception (TF checkpoints
  that `stackgan fetch stackgan-inception` unpacks into `data/weights/stackgan-inception/`),
  converted by `stackgan convert-inception` into `data/weights/<key>.pth`.
- our own classifiers (`cub-ft`, `oxford102-ft`: fine-tuned Inception; `synthetic-clf`),
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

from stackgan import sources
from stackgan.errors import UserError
from stackgan.hashing import sha256_file
from stackgan.untrusted import load_torch

# Relative to the repository root, where the stages run.
DEFAULT_WEIGHTS_DIR = Path(sources.WEIGHTS_DIR)
DEFAULT_CLASSIFIER_DIR = Path("data/classifiers")

# Fetched weights that torch.hub may have cached as well: key -> its sources.WEIGHTS entry.
FETCHED = {key: sources.WEIGHTS[key][0] for key in ("inception-2015-12-05", "torchvision-inception-v3")}
INCEPTION_FILE = FETCHED["inception-2015-12-05"].name
INCEPTION_URL = FETCHED["inception-2015-12-05"].url

AUTHORS_ZIP = "stackgan-inception"
# key -> (converted file in DEFAULT_WEIGHTS_DIR, word in the path of the authors' checkpoint)
CONVERTED = {"cub-inc": ("cub-inc.pth", "birds"), "oxford102-inc": ("oxford102-inc.pth", "flowers")}
# The authors' default --checkpoint_dir (inception_score.py) for birds; flowers_valid299 is a guess.
AUTHORS_CHECKPOINT = "inception_finetuned_models/{animal}_valid299/model.ckpt-5000"

CLASSIFIER_FILES = {
    "cub-ft": "cub-ft.pth",
    "oxford102-ft": "oxford102-ft.pth",
    "synthetic-clf": "synthetic-clf.pt",
}
KEYS = (*FETCHED, *CONVERTED, *CLASSIFIER_FILES)


class MissingWeights(UserError):
    """A scoring network's weights file is not where it belongs (as opposed to present but bad)."""


def hub_dir() -> Path:
    return Path(torch.hub.get_dir()) / "checkpoints"


def locate(weights_key, classifier_dir=None) -> Path:
    """Weights file of a scoring network by its key (never downloads)."""
    if weights_key in FETCHED:
        return _locate_fetched(weights_key)
    if weights_key in CONVERTED:
        return _locate_converted(weights_key)
    if weights_key in CLASSIFIER_FILES:
        return _locate_classifier(weights_key, classifier_dir)
    raise UserError(f"no scoring weights are named {weights_key!r}; known: {', '.join(KEYS)}")


def remedy(weights_key) -> str:
    """What to do about a bad weights file of a scoring network."""
    if weights_key in FETCHED:
        f = FETCHED[weights_key]
        return f"delete it and run `stackgan fetch {weights_key}` (or download {f.url} by hand)"
    if weights_key in CONVERTED:
        return f"delete it and {_convert_steps(weights_key)}"
    if weights_key in CLASSIFIER_FILES:
        return (f"re-run the `classifier` stage for {weights_key.rsplit('-', 1)[0]} "
                f"(it writes {CLASSIFIER_FILES[weights_key]})")
    return "pass a weights file that holds a state dict of tensors"


def _locate_fetched(key) -> Path:
    f = FETCHED[key]
    folder = DEFAULT_WEIGHTS_DIR / key
    path = next((p for p in (folder / f.name, hub_dir() / f.name) if p.is_file()), None)
    if path is None:
        raise MissingWeights(f"missing {key} weights {f.name} in {folder} and in {hub_dir()}; run `stackgan fetch {key}`, "
                        f"or offline download {f.url} into {folder} (or into {hub_dir()}, torch.hub's cache)")
    if not sha256_file(path).startswith(f.sha256_prefix):
        raise UserError(f"{path} does not match its sha256 prefix {f.sha256_prefix} (corrupt or partial "
                        f"download); {remedy(key)}")
    return path


def _locate_converted(key) -> Path:
    path = DEFAULT_WEIGHTS_DIR / CONVERTED[key][0]
    if not path.is_file():
        raise MissingWeights(f"missing {path} (the authors' fine-tuned Inception, converted); {_convert_steps(key)}")
    return path


def _convert_steps(key) -> str:
    name, animal = CONVERTED[key]
    checkpoint = _authors_checkpoint(animal)
    if checkpoint is None:
        example = AUTHORS_CHECKPOINT.format(animal=animal)
        return (f"run `stackgan fetch {AUTHORS_ZIP}`, then `stackgan convert-inception "
                f"{DEFAULT_WEIGHTS_DIR / AUTHORS_ZIP}/<{animal} checkpoint, e.g. {example}> "
                f"--out {DEFAULT_WEIGHTS_DIR / name}`")
    return f"run `stackgan convert-inception {checkpoint} --out {DEFAULT_WEIGHTS_DIR / name}`"


def _authors_checkpoint(animal) -> Path | None:
    """The TF checkpoint (as TF names it: its path without .index/.meta/.data-*) whose path in
    the unpacked authors' zip mentions `animal`; None before the zip is fetched."""
    folder = DEFAULT_WEIGHTS_DIR / AUTHORS_ZIP
    if not folder.is_dir():
        return None
    for path in sorted(folder.rglob("*")):
        if animal not in path.relative_to(folder).as_posix() or not path.is_file():
            continue
        if path.suffix == ".index":  # TF >= 0.12 checkpoints: <prefix>.index + <prefix>.data-*
            return path.with_suffix("")
        if ".ckpt" in path.name and not path.name.endswith(".meta") and ".data-" not in path.name:
            return path  # the older single-file checkpoint (beside its .meta)
    return None


def _locate_classifier(model_key, classifier_dir=None) -> Path:
    """Path of one of our own classifiers (`cub-ft`, `oxford102-ft`, `synthetic-clf`)."""
    folder = Path(classifier_dir) if classifier_dir is not None else DEFAULT_CLASSIFIER_DIR
    path = folder / CLASSIFIER_FILES[model_key]
    if not path.is_file():
        dataset = model_key.rsplit("-", 1)[0]
        raise MissingWeights(
            f"missing classifier weights {CLASSIFIER_FILES[model_key]} in {folder}; run the "
            f"`classifier` stage for {dataset} (it writes that file) or copy the file there"
        )
    return path


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
