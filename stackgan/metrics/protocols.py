"""Named metric protocols: every number in a metrics file names the exact way it was measured.

A protocol's name is a metric key (stackgan/metric_names.py: `<metric><count>[<resize>]_<suffix>`,
a resize side only after a `k` count; `is30k64_cub-ft` = 30k samples, both sides resized to
64x64 first: the papers' IS*/FID*). What each part means here:
- metric: `is` or `fid`; count: the number of samples, at least 1; resize: at least 8.
- IS suffix: the ruler, the scoring model (stackgan/metrics/rulers.py: `cub-inc`, `cub-ft`,
  `imagenet`, `synthetic-clf`, ...); the authors' rule (`cub-inc`, `oxford102-inc`) scores whole
  batches of 64, so its count is at least 64.
- FID suffix: `[<ruler>_]<split>`: the prepared split that is the real set (`fid30k_test` uses
  the ImageNet Inception's 2048-d pool features); `fid2k_synthetic-clf` means split `test`.
- `capacc_synthetic`: caption-attribute accuracy of the synthetic classifier (no count).
- `msssim<count>_<scope>`: mean MS-SSIM of `count` random image pairs within each class
  (`class`, AC-GAN's protocol that StackGAN++ section 6.1 follows) or over the whole set (`all`).
"""

from dataclasses import asdict, dataclass

from stackgan import metric_names
from stackgan.errors import UserError
from stackgan.metrics import authors_is
from stackgan.metrics.rulers import RULERS, ruler_of

IS_SPLITS = 10
REFERENCE_SPLITS = ("test", "train")


@dataclass(frozen=True)
class Protocol:
    name: str
    metric: str  # "is" | "fid" | "capacc"
    num_samples: int | None  # nominal count; None = all given samples
    splits: int | None  # IS only
    resize: int | None  # None, or side of the square both sides are resized to first
    extractor: str
    feature_layer: str
    model: str | None  # the ruler: a key of rulers.RULERS; None = no ruler (no weights)
    reference: str | None  # FID: the prepared split that is the real set
    pairs: int | None = None  # MS-SSIM: random pairs per group
    pair_scope: str | None = None  # MS-SSIM: "class" (pairs within each class) or "all"

    def describe(self) -> dict:
        details = asdict(self)
        if self.metric != "msssim":  # the pair fields mean nothing to the other metrics
            del details["pairs"], details["pair_scope"]
        ruler = ruler_of(self)
        details["ruler"] = ruler.label if ruler is not None else None
        details["preprocessing"] = ruler.preprocessing.words if ruler is not None else None
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
        return _is_protocol(name, key)
    ruler_key, reference = _fid_suffix(name, key.suffix)
    ruler = RULERS[ruler_key]
    return Protocol(name, "fid", key.count, None, key.resize, ruler.extractor, ruler.fid_layer, ruler_key, reference)


def _is_protocol(name, key):
    ruler = RULERS.get(key.suffix)
    if ruler is None:
        raise UserError(f"metric protocol {name!r}: unknown IS ruler {key.suffix!r}; known: {sorted(RULERS)}")
    if ruler.is_rule is None:
        raise UserError(f"metric protocol {name!r}: the {key.suffix} ruler scores FID only; "
                        f"use e.g. fid{name.removeprefix('is').split('_')[0]}_{key.suffix}_test")
    if ruler.is_rule == "authors" and key.count < authors_is.BATCH_SIZE:
        raise UserError(f"metric protocol {name!r}: the authors' IS scores whole batches of {authors_is.BATCH_SIZE} "
                        f"images; use a count of at least {authors_is.BATCH_SIZE}, e.g. is30k_{key.suffix}")
    return Protocol(name, "is", key.count, IS_SPLITS, key.resize, ruler.extractor, ruler.is_layer, key.suffix, None)


def _fid_suffix(name, suffix):
    if suffix in RULERS:
        return suffix, "test"
    head, _, split = suffix.rpartition("_")
    ruler_key = head or "imagenet"
    if ruler_key not in RULERS or split not in REFERENCE_SPLITS:
        raise UserError(
            f"metric protocol {name!r}: FID suffix must be [<ruler>_]<split> with ruler in {sorted(RULERS)} "
            f"and split in {list(REFERENCE_SPLITS)}"
        )
    return ruler_key, split


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
    # the authors' ruler (StackGAN Tables 2, 4, 5) and later papers' FID rulers
    "is30k_cub-inc",
    "is30k_oxford102-inc",
    "fid30k_ptfid-legacy_test",
    "fid30k_cleanfid_test",
)
PROTOCOLS = {name: _parse(name) for name in PAPER_PROTOCOLS}


def get_protocol(name_or_protocol) -> Protocol:
    if isinstance(name_or_protocol, Protocol):
        return name_or_protocol
    return PROTOCOLS.get(name_or_protocol) or _parse(name_or_protocol)
