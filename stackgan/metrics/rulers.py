"""Rulers: every scoring model a protocol suffix names (`is30k_<ruler>`, `fid30k_[<ruler>_]<split>`).

A ruler is a network (a torch-fidelity feature extractor), its weights (a key of
weights.locate), the preprocessing of its input and, for IS, its rule. Two numbers measured with
different rulers are not comparable, so every metrics file and table cell names its ruler's label.

Preprocessing happens in one of two places: inside the extractor (torch-fidelity's own resize,
the synthetic classifier's, pytorch-fid's), or in the scored view before batching, after the
protocol's IS*/FID* resize (the authors' PIL resize, clean-fid's). `apply` is None for the first.
IS rules: "torch-fidelity" (its formula and shuffle, fidelity.inception_score) or "authors"
(StackGAN-inception-model's inception_score.py, authors_is.inception_score); None: FID only.
"""

from dataclasses import dataclass
from typing import Callable

from stackgan.metrics import authors_is, legacy_fid


@dataclass(frozen=True)
class Preprocessing:
    name: str
    words: str  # what a metrics file says about it
    apply: Callable | None = None  # (uint8 (3,H,W), from a single-channel file) -> the extractor's input

    def __call__(self, x, single_channel=False):
        return self.apply(x, single_channel)


def _clean_fid(x, single_channel):
    return legacy_fid.clean_resize(x)  # clean-fid reads every file as RGB


TORCH_FIDELITY = Preprocessing(
    "torch-fidelity", "torch-fidelity internal TF1-bilinear resize to 299, (x-128)/128")
# 64: synthetic_classifier.INPUT_SIZE (not imported: that module imports the protocols, which import this one).
SYNTHETIC = Preprocessing(
    "synthetic-clf", "synthetic classifier internal antialiased bilinear resize to 64 (torch interpolate, "
    "rounded to uint8), x/127.5-1")
AUTHORS = Preprocessing("authors", authors_is.PREPROCESSING, authors_is.preprocess)
def _dm_gan_resize(x, single_channel):
    return authors_is.preprocess(x)  # DM-GAN opens every file as RGB: no single-channel quirk


# DM-GAN's eval/FID script resizes with torchvision's Resize((299, 299)) (PIL bilinear) before the
# network, whose own resize is then the identity.
PYTORCH_FID = Preprocessing(
    "pytorch-fid-2018", "PIL bilinear resize of the uint8 RGB image to 299 (DM-GAN eval/FID: transforms.Resize), "
    "then pytorch-fid (2018) internal: x/255, bilinear resize to 299 (align_corners=True; the identity here), "
    "torchvision's transform_input x*(std/0.5)+(mean-0.5)/0.5 with ImageNet mean/std", _dm_gan_resize)
CLEAN_FID = Preprocessing(
    "clean-fid", "clean-fid resize: each channel a float32 PIL image, bicubic to 299, clipped to [0, 255], "
    "not quantised; (x-128)/128", _clean_fid)


@dataclass(frozen=True)
class Ruler:
    key: str  # the protocol suffix; never contains "_" (it separates an FID ruler from its split)
    extractor: str  # torch-fidelity registered name
    is_layer: str | None  # None: the ruler scores FID only
    fid_layer: str
    weights: str  # weights.locate key
    preprocessing: Preprocessing
    is_rule: str | None  # "torch-fidelity" | "authors" | None (FID only)
    label: str  # the ruler as a table cell names it
    # FID over whole batches of this many images, each side's remainder dropped (the reference
    # code's DataLoader(drop_last=True)); None: every image.
    whole_batches: int | None = None
    # The pipeline's `evaluate` skips the ruler's protocols, recording why, while its weights are
    # absent: the authors' model is a manual download and a TensorFlow conversion away.
    optional: bool = False


# IS on the TF Inception reads the bias-free logits exactly as improved-gan's `matmul(pool3, w)`
# does; our fine-tuned Inception stands in for the authors' softmax over the full logits (with
# bias), so it uses "logits"; the authors' converted model's "logits" are its known-class logits.
_ROWS = (
    # key, extractor, IS layer, FID layer, weights key, preprocessing, IS rule, label
    Ruler("imagenet", "inception-v3-compat", "logits_unbiased", "2048", "inception-2015-12-05",
          TORCH_FIDELITY, "torch-fidelity", "TF-exact ImageNet Inception-v3 (inception-2015-12-05, torch-fidelity)"),
    Ruler("cub-ft", "inception-v3-ft", "logits", "2048", "cub-ft",
          TORCH_FIDELITY, "torch-fidelity", "our fine-tuned Inception (classifier stage, CUB 50 test classes)"),
    Ruler("oxford102-ft", "inception-v3-ft", "logits", "2048", "oxford102-ft",
          TORCH_FIDELITY, "torch-fidelity",
          "our fine-tuned Inception (classifier stage, Oxford-102 20 test classes)"),
    Ruler("synthetic-clf", "synthetic-clf", "logits_unbiased", "feat", "synthetic-clf",
          SYNTHETIC, "torch-fidelity", "our synthetic-dataset classifier (classifier stage)"),
    Ruler("cub-inc", "inception-v3-slim", "logits", "2048", "cub-inc",
          AUTHORS, "authors", "authors' fine-tuned Inception (StackGAN-inception-model birds, converted)",
          optional=True),
    Ruler("oxford102-inc", "inception-v3-slim", "logits", "2048", "oxford102-inc",
          AUTHORS, "authors", "authors' fine-tuned Inception (StackGAN-inception-model flowers, converted)",
          optional=True),
    Ruler("ptfid-legacy", "inception-v3-torchvision", None, "2048", "torchvision-inception-v3",
          PYTORCH_FID, None, "torchvision ImageNet Inception-v3 (pytorch-fid early 2018, as DM-GAN's FID code)",
          whole_batches=50),  # DM-GAN's README runs fid_score.py with --batch-size 50
    Ruler("cleanfid", "inception-v3-compat-float", None, "2048", "inception-2015-12-05",
          CLEAN_FID, None, "TF-exact ImageNet Inception-v3 on clean-fid's resize (inception-2015-12-05)"),
)
RULERS = {row.key: row for row in _ROWS}


def ruler_of(protocol):
    """The ruler of a protocol (by its `model`), or None for one without (MS-SSIM, test networks)."""
    return RULERS.get(protocol.model)
