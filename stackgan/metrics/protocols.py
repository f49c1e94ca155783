"""Named metric protocols: every number in a metrics file names the exact way it was measured.

A protocol's name is a metric key (stackgan/metric_names.py: `<metric><count>[<resize>]_<suffix>`,
a resize side only after a `k` count; `is30k64_cub-ft` = 30k samples, both sides resized to
64x64 first: the papers' IS*/FID*). What each part means here:
- metric: `is` or `fid`; count: the number of samples, at least 1; resize: at least 8.
- IS suffix: the scoring model (`cub-ft`, `oxford102-ft`, `imagenet`, `synthetic-clf`).
- FID suffix: `[<model>_]<split>`: the prepared split that is the real set (`fid30k_test` uses
  the ImageNet Inception's 2048-d pool features); `fid2k_synthetic-clf` means split `test`.
- `capacc_synthetic`: caption-attribute accuracy of the synthetic classifier (no count).
- `msssim<count>_<scope>`: mean MS-SSIM of `count` random image pairs within each class
  (`class`, AC-GAN's protocol that StackGAN++ section 6.1 follows) or over the whole set (`all`).
"""

from dataclasses import asdict, dataclass

from stackgan import metric_names
from stackgan.errors import UserError

IS_SPLITS = 10
REFERENCE_SPLITS = ("test", "train")


@dataclass(frozen=True)
class ScoringModel:
    extractor: str  # torch-fidelity registered name
    isc_layer: str
    fid_layer: str
    weights: str  # where the weights come from, in words (see weights.py)


# IS on the TF Inception reads the bias-free logits exactly as improved-gan's
# `matmul(pool3, w)` does; the fine-tuned Inception's IS in the StackGAN code is a softmax over
# the full logits (with bias), so that model uses "logits".
MODELS = {
    "imagenet": ScoringModel(
        "inception-v3-compat", "logits_unbiased", "2048",
        "torch hub checkpoints/weights-inception-2015-12-05-6726825d.pth (TF inception-2015-12-05)",
    ),
    "cub-ft": ScoringModel(
        "inception-v3-ft", "logits", "2048", "classifier stage: <classifier_dir>/cub-ft.pth (50 test classes)"
    ),
    "oxford102-ft": ScoringModel(
        "inception-v3-ft", "logits", "2048", "classifier stage: <classifier_dir>/oxford102-ft.pth (20 test classes)"
    ),
    "synthetic-clf": ScoringModel(
        "synthetic-clf", "logits_unbiased", "feat", "classifier stage: <classifier_dir>/synthetic-clf.pt"
    ),
}


@dataclass(frozen=True)
class Protocol:
    name: str
    metric: str  # "is" | "fid" | "capacc"
    num_samples: int | None  # nominal count; None = all given samples
    splits: int | None  # IS only
    resize: int | None  # None, or side of the square both sides are resized to first
    extractor: str
    feature_layer: str
    model: str | None  # key into MODELS (weights come from weights.locate(model)); None = no weights
    reference: str | None  # FID: the prepared split that is the real set
    pairs: int | None = None  # MS-SSIM: random pairs per group
    pair_scope: str | None = None  # MS-SSIM: "class" (pairs within each class) or "all"

    def describe(self) -> dict:
        details = asdict(self)
        if self.metric != "msssim":  # the pair fields mean nothing to the other metrics
            del details["pairs"], details["pair_scope"]
        return details


def _parse(name: str) -> Protocol:
    if name == "capacc_synthetic":
        return Protocol(name, "capacc", None, None, None, "synthetic-clf", "attr_logits", "synthetic-clf", None)
    key = metric_names.parse(name)
    if metric_names.family(name) == "msssim":
        if key is None or key.msssim_scope() is None or key.count < 1:
            raise UserError(f"cannot parse metric protocol {name!r}; expected msssim<pairs>_class or msssim<pairs>_all, "
                            "e.g. msssim100_class")
        return Protocol(name, "msssim", None, None, None, "ms-ssim", "pixels", None, None,
                        pairs=key.count, pair_scope=key.suffix)
    if key is None or key.family not in ("is", "fid"):
        raise UserError(
            f"cannot parse metric protocol {name!r}; expected e.g. is30k_cub-ft, is30k64_cub-ft, "
            f"fid30k_test, is2k_synthetic-clf, fid200_synthetic-clf_test or capacc_synthetic"
        )
    if key.count < 1 or (key.resize is not None and key.resize < 8):
        raise UserError(f"metric protocol {name!r}: sample count must be >= 1 and resize >= 8")
    if key.family == "is":
        if key.suffix not in MODELS:
            raise UserError(f"metric protocol {name!r}: unknown IS model {key.suffix!r}; known: {sorted(MODELS)}")
        model = MODELS[key.suffix]
        return Protocol(name, "is", key.count, IS_SPLITS, key.resize, model.extractor, model.isc_layer, key.suffix,
                        None)
    model_key, reference = _fid_suffix(name, key.suffix)
    model = MODELS[model_key]
    return Protocol(name, "fid", key.count, None, key.resize, model.extractor, model.fid_layer, model_key, reference)


def _fid_suffix(name, suffix):
    if suffix in MODELS:
        return suffix, "test"
    head, _, split = suffix.rpartition("_")
    model_key = head or "imagenet"
    if model_key not in MODELS or split not in REFERENCE_SPLITS:
        raise UserError(
            f"metric protocol {name!r}: FID suffix must be [<model>_]<split> with model in {sorted(MODELS)} "
            f"and split in {list(REFERENCE_SPLITS)}"
        )
    return model_key, split


# The papers' protocols (StackGAN Tables 2-5, SGAN CIFAR-10 table); any other well-formed name
# is built on demand by get_protocol, e.g. the small counts of the embedded and CI profiles.
PAPER_PROTOCOLS = (
    "is30k_cub-ft",
    "is30k64_cub-ft",
    "is30k_oxford102-ft",
    "is30k64_oxford102-ft",
    "fid30k_test",
    "fid30k64_test",
    "is30k_imagenet",
    "is50k_imagenet",
    "msssim100_class",
)
PROTOCOLS = {name: _parse(name) for name in PAPER_PROTOCOLS}


def get_protocol(name_or_protocol) -> Protocol:
    if isinstance(name_or_protocol, Protocol):
        return name_or_protocol
    return PROTOCOLS.get(name_or_protocol) or _parse(name_or_protocol)
