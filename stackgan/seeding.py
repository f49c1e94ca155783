"""Every seed the harness derives, and the generators made from them: the one place to read to
know what a run's randomness depends on. Each scheme is part of the results' format: changing
one changes every number computed under it, so the pins in tests/test_pins.py fail.

Keys are small non-negative integers (a seed, then an epoch, step, rank, index...). A tag that
tells two uses of the same keys apart is the last key (7: step noise, 11: per-step torch seed).
"""

import hashlib
import random

import numpy as np
import torch


def mix(*keys) -> int:
    """One 32-bit seed from several keys, through numpy's SeedSequence (well spread: (s, 1) and
    (s + 1, 0) do not collide)."""
    return int(np.random.SeedSequence([int(k) for k in keys]).generate_state(1)[0])


def numpy_rng(*keys) -> np.random.Generator:
    """numpy's Generator seeded by the keys themselves (one key: that seed)."""
    return np.random.default_rng(int(keys[0]) if len(keys) == 1 else [int(k) for k in keys])


def torch_generator(seed: int) -> torch.Generator:
    """A CPU torch generator: draws on CPU, then moved, give the same numbers on every device."""
    return torch.Generator().manual_seed(int(seed))


def seed_globals(seed: int):
    """torch's, numpy's and Python's global generators. torch's gives network initialisation and
    dropout; numpy's and Python's are unused but saved in checkpoints (byte-stable checkpoints)."""
    torch.manual_seed(seed)
    np.random.seed(seed)
    random.seed(seed)


# -- the training engine (stackgan/train.py's determinism contract)
def epoch_permutation_rng(seed: int, epoch: int) -> np.random.Generator:
    return np.random.default_rng(mix(seed, epoch))


def step_noise_generator(seed: int, step: int) -> torch.Generator:
    """The noise of the whole global batch of `step` (each rank takes its slice)."""
    return torch_generator(mix(seed, step, 7))


def step_torch_seed(seed: int, step: int, rank: int) -> int:
    """torch's global seed during `step` on `rank` (dropout, in-network noise)."""
    return mix(seed, step, rank, 11)


def item_rng(seed: int, epoch: int, index: int) -> np.random.Generator:
    """A training item's augmentation (crop, flip, caption and wrong-image choice)."""
    return numpy_rng(seed, epoch, index)


# -- evaluation sampling (stackgan/sample.py): sample i depends on (seed, i) only
def eval_item_seed(seed: int, index: int) -> int:
    return int(seed) * 1_000_003 + int(index)


def eval_item_generator(seed: int, index: int) -> torch.Generator:
    return torch_generator(eval_item_seed(seed, index))


def eval_mixed_generator(seed: int, index: int) -> torch.Generator:
    """SGAN's per-sample generator (its U[0, 1) noise for every level from one stream)."""
    return torch_generator(mix(seed, index))


# -- the paper's figures (stackgan/figures/): all of a figure's noise drawn at once on the CPU, so
# it does not depend on the batch size it is generated in
def figure_generator(seed: int, figure: int) -> torch.Generator:
    """The noise of one figure, keyed by its number in the StackGAN++ paper."""
    return torch_generator(mix(seed, figure, 13))


# -- a human-rank study (stackgan/hr/study.py): image j of a caption gets the same noise from
# every model, so raters compare the models and not their draws
def study_generator(seed: int, image: int, stream: int) -> torch.Generator:
    """One study image's noise: stream 0 is z, stream 1 the CA noise."""
    return torch_generator(mix(seed, image, stream, 17))


def content_seed(data: bytes) -> int:
    """A seed that is a pure function of some bytes (e.g. one row of a noise tensor)."""
    return int.from_bytes(hashlib.sha256(data).digest()[:8], "little")
