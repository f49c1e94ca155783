"""Metric keys, the names a metrics file gives its numbers: the one reader of their grammar, for
the protocols that measure them (metrics/protocols.py), the tables (report.py) and the
regression gate (gate.py).

Grammar: `<family><count>[<resize>]_<suffix>`, e.g. `is30k64_cub-ft`, `fid2k_test`,
`msssim100_class`. count: `30k` (thousands) or a plain integer `200`; a resize side can follow
only a `k` count. Keys outside the grammar still have a family: `capacc_synthetic` is `capacc`;
the human-study keys (`hr`, `fooled-rate`) are their own family.
"""

import re
from dataclasses import dataclass

HUMAN_STUDY_KEYS = frozenset({"hr", "fooled-rate"})
MSSSIM_SCOPES = ("class", "all")  # pairs within each class, or over the whole set

_KEY = re.compile(r"^(?P<family>[a-z]+)(?:(?P<kilo>\d+)k(?P<resize>\d+)?|(?P<plain>\d+))_(?P<suffix>.+)$")
_FAMILY = re.compile(r"[a-z]+")


@dataclass(frozen=True)
class MetricKey:
    family: str
    count: int  # samples (IS, FID) or pairs (MS-SSIM)
    in_thousands: bool  # written `<n>k`
    resize: int | None  # side of the square both sides are resized to first
    suffix: str  # what is measured against: scoring model, reference split, pair scope

    def msssim_scope(self) -> str | None:
        """`class` or `all` for an MS-SSIM key (`msssim<pairs>_<scope>`), else None."""
        if self.family == "msssim" and not self.in_thousands and self.suffix in MSSSIM_SCOPES:
            return self.suffix
        return None

    def count_text(self) -> str:
        """The count as the key writes it, thousands spelled out: `30k` -> `30,000`."""
        return f"{self.count // 1000},000" if self.in_thousands else str(self.count)


def parse(key: str) -> MetricKey | None:
    """The parts of a key in the grammar, or None."""
    match = _KEY.match(key)
    if match is None:
        return None
    kilo, resize, plain = match.group("kilo", "resize", "plain")
    return MetricKey(family=match.group("family"), count=int(kilo) * 1000 if kilo is not None else int(plain),
                     in_thousands=kilo is not None, resize=int(resize) if resize is not None else None,
                     suffix=match.group("suffix"))


def family(key: str) -> str:
    """What a key measures (`is`, `fid`, `msssim`, `capacc`, `hr`, ...): its leading letters, or
    the whole key for a human study or a key that starts otherwise."""
    if key in HUMAN_STUDY_KEYS:
        return key
    match = _FAMILY.match(key)
    return match.group() if match else key


def with_count(key: str, count: int) -> str:
    """`key` measured on `count` samples instead (`is30k_cub-ft`, 5000 -> `is5k_cub-ft`): the
    protocol's small variant that `stackgan curves` scores snapshots with."""
    parsed = parse(key)
    if parsed is None or parsed.family not in ("is", "fid"):
        raise ValueError(f"{key} is not an IS/FID key")
    if count % 1000 == 0:
        return f"{parsed.family}{count // 1000}k{parsed.resize or ''}_{parsed.suffix}"
    if parsed.resize is not None:
        raise ValueError(f"{key} resizes first, which the grammar writes only after a `k` count; "
                         f"use a multiple of 1000 samples")
    return f"{parsed.family}{count}_{parsed.suffix}"
