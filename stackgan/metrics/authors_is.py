"""The authors' Inception Score, as StackGAN-inception-model's inception_score.py computes it
(hanzhanggit/StackGAN-inception-model; the `cub-inc` and `oxford102-inc` rulers):

1. each image: a single-channel file (their scipy.misc.imread gives a 2-d array) becomes
   `np.resize(img, (h, w, 3))`: the h*w pixels repeated cyclically to fill h*w*3 values, read
   row-major, i.e. a scrambled picture, not grey copied to three channels; then
   scipy.misc.imresize(img, (299, 299, 3), interp='bilinear'), which for a uint8 RGB array is
   PIL's Image.resize((299, 299), BILINEAR) on it; then x / 127.5 - 1 in float32 (done by the
   `inception-v3-slim` extractor, which takes the uint8 299x299 image);
2. the images shuffled -- theirs with the unseeded np.random.shuffle, ours with a seeded
   permutation (`SHUFFLE_SEED`, recorded) -- and scored in batches of 64 in that order, the
   images after the last whole batch dropped;
3. a softmax over the known-class logits (the background logit 0 sliced off), here in float64
   (theirs: TensorFlow float32);
4. 10 splits [i*N//10, (i+1)*N//10) of the N scored images, each scoring
   exp(mean_rows(sum_classes(p * (log p - log mean_rows(p))))); the mean and np.std (ddof 0).
"""

import numpy as np
import PIL
import torch
from PIL import Image
from torch.utils.data import Subset

from stackgan import seeding
from stackgan.metrics import fidelity

BATCH_SIZE = 64
INPUT_SIDE = 299
SHUFFLE_SEED = 2017  # ours; theirs is unseeded
PREPROCESSING = "PIL bilinear resize of the uint8 image to 299 (scipy.misc.imresize), x/127.5-1"
SINGLE_CHANNEL = "a single-channel file is np.resize(img, (h, w, 3))'d first (cyclic fill, as theirs)"


def _cyclic_fill(gray: np.ndarray) -> np.ndarray:
    """(h, w) -> (h, w, 3) as numpy's resize fills a larger shape: the flat pixels repeated."""
    h, w = gray.shape
    return np.tile(gray.reshape(-1), 3).reshape(h, w, 3)


def preprocess(x: torch.Tensor, single_channel=False) -> torch.Tensor:
    """uint8 (3,H,W) -> uint8 (3,299,299) as their preprocess() before the float scaling.
    single_channel: the image came from a one-channel file (its three channels are equal)."""
    hwc = _cyclic_fill(x[0].numpy()) if single_channel else x.permute(1, 2, 0).numpy()
    img = Image.fromarray(np.ascontiguousarray(hwc)).resize((INPUT_SIDE, INPUT_SIDE), Image.BILINEAR)
    return torch.from_numpy(np.array(img).transpose(2, 0, 1).copy())


def scored_order(n, seed=SHUFFLE_SEED):
    """(indices scored, in order; indices dropped) of n images: shuffled, cut to whole batches."""
    order = seeding.numpy_rng(seed).permutation(n)
    kept = n // BATCH_SIZE * BATCH_SIZE
    return order[:kept], order[kept:]


def split_bounds(n, splits):
    return [(i * n // splits, (i + 1) * n // splits) for i in range(splits)]


def softmax(logits: np.ndarray) -> np.ndarray:
    z = np.exp(logits - logits.max(axis=1, keepdims=True))
    return z / z.sum(axis=1, keepdims=True)


def score(probs: np.ndarray, splits):
    """(mean, std) of their per-split IS of class probabilities `probs` (N, K), in row order."""
    scores = []
    for start, end in split_bounds(len(probs), splits):
        part = probs[start:end]
        kl = part * (np.log(part) - np.log(np.expand_dims(np.mean(part, 0), 0)))
        scores.append(np.exp(np.mean(np.sum(kl, 1))))
    return float(np.mean(scores)), float(np.std(scores))


def inception_score(view, net, layer, splits, cuda, verbose=False, seed=SHUFFLE_SEED):
    """(value, std, details) of the images of `view` (preprocessed, at least one batch) under the
    known-class logits `layer` of `net`; batches are theirs (64), whatever the caller's batch size."""
    kept, dropped = scored_order(len(view), seed)
    logits = fidelity.features(Subset(view, kept.tolist()), net, layer, BATCH_SIZE, cuda, verbose)
    value, std = score(softmax(logits.double().numpy()), splits)
    details = {
        "is_rule": "authors",
        "batch_size": BATCH_SIZE,
        "num_scored": len(kept),
        "dropped": len(dropped),
        "shuffle": "numpy default_rng(shuffle_seed).permutation; the images after the last whole batch dropped "
                   "(theirs: unseeded np.random.shuffle)",
        "shuffle_seed": seed,
        "split_bounds": [list(b) for b in split_bounds(len(kept), splits)],
        "softmax": "float64 over the known-class logits (theirs: TensorFlow float32)",
        "std_rule": "np.std over the splits (ddof 0)",
        "single_channel": SINGLE_CHANNEL,
        "pillow": PIL.__version__,
    }
    return value, std, details
