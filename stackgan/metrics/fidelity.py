"""What we hand to torch-fidelity (0.4.0) and what we take from it, on our terms.

torch-fidelity unpickles two kinds of file without restriction, which runs whatever a pickle
names: its extractors' weights and its statistics cache. So it never reads a file:
its own extractors get an in-memory copy of weights that `untrusted.load_torch` read, ours read
their files through `load_torch` themselves, and its cache stays off -- FID reference statistics
are ours, an .npz of two float arrays read with allow_pickle=False. The numbers are still
torch-fidelity's: its batching loop, its IS and FID formulas, called as calculate_metrics calls them.
"""

import zipfile

import numpy as np
import torch
from torch_fidelity.metric_fid import KEY_METRIC_FID, fid_features_to_statistics, fid_statistics_to_metric
from torch_fidelity.metric_isc import KEY_METRIC_ISC_MEAN, KEY_METRIC_ISC_STD, isc_features_to_metric
from torch_fidelity.feature_extractor_base import FeatureExtractorBase
from torch_fidelity.registry import FEATURE_EXTRACTORS_REGISTRY
from torch_fidelity.utils import create_feature_extractor, get_featuresdict_from_dataset

from stackgan.atomic import atomic_path
from stackgan.errors import UserError
from stackgan.metrics import weights as weights_lookup

# torch-fidelity's default seed for the shuffle before IS splits; recorded with each IS.
ISC_SHUFFLE_SEED = 2020
STATS_KEYS = ("mu", "sigma")


class Extractor(FeatureExtractorBase):
    """torch-fidelity's extractor interface for our networks, from class attributes: FEATURES
    (what forward can return), METRIC_FEATURES ({metric: the feature it reads by default}) and
    INPUT (dtype, side) of the batches forward takes. None of them may be torch.compile'd: their
    inputs are checked in Python."""

    FEATURES: tuple = ()
    METRIC_FEATURES: dict = {}
    INPUT: tuple = (torch.uint8, 299)

    @classmethod
    def get_provided_features_list(cls):
        return cls.FEATURES

    @classmethod
    def get_default_feature_layer_for_metric(cls, metric):
        return cls.METRIC_FEATURES[metric]

    @staticmethod
    def can_be_compiled():
        return False

    @classmethod
    def get_dummy_input_for_compile(cls):
        dtype, side = cls.INPUT
        return torch.zeros(1, 3, side, side, dtype=dtype)


def extractor(name, layer, weights_path, remedy, cuda, verbose=False):
    """torch-fidelity's feature extractor `name` giving `layer`, its weights file read safely;
    remedy: what to do about a bad weights file."""
    weights = None
    if weights_path is not None:
        cls = FEATURE_EXTRACTORS_REGISTRY.get(name)
        if cls is not None and cls.__module__.startswith("stackgan."):
            weights = str(weights_path)  # ours read it through untrusted.load_torch
        else:
            weights = weights_lookup.as_torch_file(weights_lookup.load_weights(weights_path, remedy))
    try:
        return create_feature_extractor(name, [layer], cuda=cuda, verbose=verbose,
                                        feature_extractor_weights_path=weights)
    except RuntimeError as err:  # load_state_dict: the tensors do not fit the network
        if weights_path is None:
            raise
        first = (str(err).strip().splitlines() or ["RuntimeError"])[0]
        raise UserError(f"{weights_path} does not fit the {name} network ({first[:160]}); {remedy}") from None


def features(view, net, layer, batch_size, cuda, verbose=False):
    """(N, D) features of every image of `view`, batched as calculate_metrics batches them."""
    try:
        # DataLoader worker processes (save_cpu_ram off) only pay off when a GPU waits on image decoding.
        out = get_featuresdict_from_dataset(view, net, batch_size, cuda, save_cpu_ram=not cuda, verbose=verbose)
    except UserError as err:
        # A DataLoader worker re-raises our error with its traceback folded into the message.
        raise UserError(str(err).strip().splitlines()[-1].removeprefix("stackgan.errors.UserError: ")) from None
    return out[layer]


def inception_score(feats, splits):
    """(mean, std) over `splits` groups of torch-fidelity's IS of class logits `feats`."""
    out = isc_features_to_metric(feats, splits, shuffle=True, rng_seed=ISC_SHUFFLE_SEED)
    return out[KEY_METRIC_ISC_MEAN], out[KEY_METRIC_ISC_STD]


def fid_statistics(feats) -> dict:
    return fid_features_to_statistics(feats)


def fid(stats1, stats2) -> float:
    return fid_statistics_to_metric(stats1, stats2, verbose=False)[KEY_METRIC_FID]


def save_statistics(stats, path):
    """mu and sigma as an .npz, the same bytes for the same statistics (np.savez would stamp the
    time into each member)."""
    with atomic_path(path) as tmp, zipfile.ZipFile(tmp, "w") as archive:
        for key in STATS_KEYS:
            with archive.open(zipfile.ZipInfo(f"{key}.npy", date_time=(1980, 1, 1, 0, 0, 0)), "w",
                              force_zip64=True) as f:
                np.lib.format.write_array(f, np.asarray(stats[key]), allow_pickle=False)


def load_statistics(path, like, remedy) -> dict:
    """Statistics written by save_statistics, checked against `like` (the samples' statistics)."""
    try:
        with np.load(path, allow_pickle=False) as npz:
            stats = {key: npz[key] for key in STATS_KEYS}
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as err:
        raise UserError(f"{path} is not a readable FID statistics file ({type(err).__name__}); {remedy}") from None
    mu, sigma = stats["mu"], stats["sigma"]
    if mu.shape != like["mu"].shape or sigma.shape != like["sigma"].shape or mu.dtype != like["mu"].dtype \
            or sigma.dtype != like["sigma"].dtype or not (np.isfinite(mu).all() and np.isfinite(sigma).all()):
        raise UserError(f"{path} does not hold finite {like['mu'].dtype} statistics of {len(like['mu'])}-d features "
                        f"(mu {mu.dtype} {mu.shape}, sigma {sigma.dtype} {sigma.shape}); {remedy}")
    return stats
