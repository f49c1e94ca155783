"""The project's deterministic caption encoder (a stand-in for Reed et al.'s char-CNN-RNN).

StackGAN conditions on 1024-d char-CNN-RNN sentence embeddings (Reed et al. 2016). Running that
encoder needs Torch7 (Lua) and the pretrained model file, so the embedded synthetic dataset and
any caption a user types are encoded with this fixed, training-free hashing encoder instead.
The real CUB / Oxford / COCO embeddings still come from the authors' pickles, never from here.

Definition (the exact algorithm, so any implementation can reproduce the numbers):
1. Lower-case the caption and split it into tokens = maximal runs of Unicode letters and
   digits (regex ``[^\\W_]+``); punctuation, hyphens and whitespace separate tokens.
2. Features = every token (unigram) plus every adjacent pair written ``"<tok1> <tok2>"``
   (bigram); a token never contains a space, so unigram and bigram strings cannot collide.
   A feature occurring k times counts k times.
3. Each feature string s gets a fixed vector v(s) in R^1024:
   seed = int.from_bytes(blake2b(s.encode("utf-8"), digest_size=8).digest(), "little");
   u = numpy.random.PCG64(seed).random_raw(1024) (the raw uint64 stream);
   v(s) = ((u >> 11) * 2**-53) * 2 - 1, i.e. uniform in [-1, 1).
   Only the PCG64 bit stream is used (not Generator.normal & co., whose algorithms numpy may
   change between versions), and blake2b (not Python's salted hash()), so the vectors are the
   same on every platform, Python and numpy version.
4. The caption's embedding = sum of its feature vectors (float64), scaled to L2 norm
   sqrt(1024) = 32 (root-mean-square 1 per dimension), cast to float32. A caption without
   tokens encodes to the zero vector. The scale matters: StackGAN's CA maps the embedding
   linearly to the mean of a Gaussian whose noise starts at unit scale, so a unit-norm
   embedding (per-dimension scale 1/32) would leave the condition buried in that noise.

Captions sharing words get correlated embeddings (a bag of uni- and bigrams through a random
projection), which is all a conditional GAN needs to read attributes from text; unlike the
char-CNN-RNN, synonyms are NOT mapped close together.
"""

import hashlib
import re

import numpy as np

DIM = 1024
SCALE = DIM ** 0.5
_TOKEN = re.compile(r"[^\W_]+")
# Enough for the synthetic vocabulary and ordinary custom captions; bounded so that encoding a
# large corpus cannot grow the cache without limit (each entry is 8 KiB).
_MAX_CACHED = 20_000
_feature_vectors: dict[str, np.ndarray] = {}


def tokenize(caption: str) -> list[str]:
    return _TOKEN.findall(caption.lower())


def features(caption: str) -> list[str]:
    tokens = tokenize(caption)
    return tokens + [f"{a} {b}" for a, b in zip(tokens, tokens[1:])]


def feature_vector(feature: str) -> np.ndarray:
    """The fixed float64 (1024,) vector of one feature string (see the module docstring)."""
    vec = _feature_vectors.get(feature)
    if vec is None:
        digest = hashlib.blake2b(feature.encode("utf-8"), digest_size=8).digest()
        raw = np.random.PCG64(int.from_bytes(digest, "little")).random_raw(DIM)
        vec = (raw >> np.uint64(11)).astype(np.float64) * 2.0**-53 * 2.0 - 1.0
        if len(_feature_vectors) >= _MAX_CACHED:
            _feature_vectors.clear()
        _feature_vectors[feature] = vec
    return vec


def encode(captions: list[str]) -> np.ndarray:
    """Encode captions to an (n, 1024) float32 array of rows of norm sqrt(1024) (or zero rows)."""
    out = np.zeros((len(captions), DIM), dtype=np.float32)
    for row, caption in enumerate(captions):
        total = np.zeros(DIM, dtype=np.float64)
        for feature in features(caption):
            total += feature_vector(feature)
        norm = np.linalg.norm(total)
        if norm > 0:
            out[row] = total * (SCALE / norm)
    return out
