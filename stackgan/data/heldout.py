"""The held-out part of a labelled split that a classifier is scored on and never trained on
(the fine-tuned Inception's and SGAN's encoder's; the synthetic classifier has its own, global
split, part of its committed weights)."""

import numpy as np

from stackgan import seeding


def split_heldout(class_ids, fraction, seed) -> tuple[np.ndarray, np.ndarray]:
    """(train, heldout) sorted int64 indices: per class (in id order), a random round(fraction * n)
    of its n images held out, at least one when the class has two or more images and fraction > 0,
    never the whole class (so every class is trained on)."""
    class_ids = np.asarray(class_ids)
    rng = seeding.numpy_rng(seed)
    train, heldout = [], []
    for c in np.unique(class_ids):
        members = rng.permutation(np.flatnonzero(class_ids == c))
        n = len(members)
        k = min(max(round(fraction * n), 1 if n >= 2 and fraction > 0 else 0), n - 1)
        heldout += members[:k].tolist()
        train += members[k:].tolist()
    return np.sort(np.array(train, dtype=np.int64)), np.sort(np.array(heldout, dtype=np.int64))
