"""Score images under named protocols; IS and FID are torch-fidelity's (see fidelity.py for how
it is called: it never reads a file itself).

A protocol's ruler (rulers.py) gives its network, weights, preprocessing and IS rule: the
ruler's preprocessing runs in the scored view after the IS*/FID* resize; IS rule "authors" is
authors_is.inception_score, "torch-fidelity" fidelity.inception_score.

Reference statistics cache: keyed by a hash of everything the statistics depend on (reference
content, resize rule and size, the view's preprocessing, extractor, layer, weights sha256,
torch-fidelity version), so a new weights file never meets stale statistics; generated samples
are never cached.
"""

from pathlib import Path

import torch
import torch_fidelity

# Imported for their torch-fidelity extractors: inception-v3-ft, inception-v3-slim, inception-v3-torchvision
# and inception-v3-compat-float.
import stackgan.metrics.finetuned_inception  # noqa: F401
import stackgan.metrics.legacy_fid  # noqa: F401
import stackgan.metrics.slim_inception  # noqa: F401
from stackgan.devices import resolve_device
from stackgan.errors import UserError
from stackgan.hashing import sha256_file, sha256_json
from stackgan.metrics import authors_is, fidelity
from stackgan.metrics import weights as weights_lookup
from stackgan.metrics.images import (
    RESIZE_RULE, ScoredView, as_dataset, content_sha256, describe_source, list_image_files, require_one_size,
)
from stackgan.metrics.msssim import mean_ms_ssim
from stackgan.metrics.protocols import get_protocol
from stackgan.metrics.rulers import ruler_of
from stackgan.metrics.synthetic_classifier import capacc, load_classifier
from stackgan.samples_index import read_samples


def resolve_weights(protocol, weights, classifier_dir):
    """(weights file or None, what to do about a bad one): a given file wins over a located one."""
    if isinstance(weights, (str, Path)):
        path = Path(weights)
    else:
        given = weights or {}
        key = next((k for k in (protocol.model, protocol.extractor) if k in given), None)
        path = Path(given[key]) if key is not None else None
    if path is not None and not path.is_file():
        raise UserError(f"weights file {path} not found; pass an existing file for {protocol.name} "
                        f"(e.g. to --extractor-weights)")
    ruler = ruler_of(protocol)
    weights_key = ruler.weights if ruler is not None else None
    if path is None and weights_key is not None:
        path = weights_lookup.locate(weights_key, classifier_dir)
    return path, weights_lookup.remedy(weights_key)


def scored_view(protocol, dataset, count=None, size=None):
    """What the protocol's network is given of `dataset`: the first `count` images resized to
    `size`, then put through the ruler's preprocessing when the view does it (see rulers.py)."""
    ruler = ruler_of(protocol)
    preprocessing = ruler.preprocessing if ruler is not None and ruler.preprocessing.apply is not None else None
    if ruler is not None and ruler.whole_batches is not None:
        available = len(dataset) if count is None else min(count, len(dataset))
        if available < ruler.whole_batches:
            raise UserError(f"{protocol.name} scores whole batches of {ruler.whole_batches} images and got "
                            f"{available}; score more images")
        count = available - available % ruler.whole_batches
    return ScoredView(dataset, count, size, preprocessing)


def reference_cache_name(protocol, ref_view, reference_key, weights_sha):
    parts = {
        "reference": reference_key or content_sha256(ref_view.base),
        "num_images": len(ref_view),
        "size": ref_view.size,
        "resize_rule": RESIZE_RULE,
        "extractor": protocol.extractor,
        "layer": protocol.feature_layer,
        "weights_sha256": weights_sha,
        "torch_fidelity": torch_fidelity.__version__,
    }
    if ref_view.preprocessing is not None:  # keyed only when there is one: older names stay valid
        parts["preprocessing"] = ref_view.preprocessing.name
    return "ref-" + sha256_json(parts, 40, default=list)


def reference_stats_file(cache_name, protocol):
    """File name of an input's FID statistics (fidelity.save_statistics)."""
    return f"{cache_name}-{protocol.extractor}-stat-fid-{protocol.feature_layer}.npz"


def _score_is(protocol, view, net, batch_size, cuda, verbose):
    feats = fidelity.features(view, net, protocol.feature_layer, batch_size, cuda, verbose)
    return fidelity.inception_score(feats, protocol.splits)


def _score_fid(protocol, view, ref_view, net, batch_size, cuda, verbose, stats_file, remedy):
    """FID of the samples against the reference; the reference statistics come from `stats_file`
    when it exists and are written there when it does not (None: neither)."""
    stats = fidelity.fid_statistics(fidelity.features(view, net, protocol.feature_layer, batch_size, cuda, verbose))
    if stats_file is not None and stats_file.is_file():
        ref_stats = fidelity.load_statistics(stats_file, stats, remedy)
    else:
        ref_feats = fidelity.features(ref_view, net, protocol.feature_layer, batch_size, cuda, verbose)
        ref_stats = fidelity.fid_statistics(ref_feats)
        if stats_file is not None:
            fidelity.save_statistics(ref_stats, stats_file)
    return fidelity.fid(stats, ref_stats), None


def compute(protocol_names, samples, reference=None, weights=None, batch_size=64, device=None,
            cache_dir=None, classifier_dir=None, attributes=None, reference_key=None, verbose=False,
            reference_stats_dir=None, class_ids=None) -> dict:
    """Score `samples` under each protocol; returns {"metrics": {name: {value, std}},
    "protocols": {name: details}} (the metrics file's shape).

    samples / reference: a folder of images, a uint8 (N,3,H,W) tensor, a uint8 (N,H,W,3) array
    or list of (H,W,3) arrays, or a Dataset returning uint8 (3,H,W) tensors. The first
    `num_samples` samples are scored (all of them when fewer). FID needs `reference`; without a
    resize rule the reference is resized to the samples' resolution (the generated one).
    weights: {ruler key or extractor name: file} or one file for all; missing entries are looked
    up offline by weights.locate (the ruler's weights key). batch_size: torch-fidelity's batches;
    the authors' IS always runs its own batches of 64. attributes: (N, A) caption attribute ids for capacc protocols;
    class_ids: (N,) class of each sample for MS-SSIM's within-class pairs.
    reference_key: a caller-vouched identity of the reference content (e.g. a manifest hash) that
    replaces hashing every reference image in the cache key.
    reference_stats_dir: the `refstats` stage's folder, read only: FID reads the reference
    statistics from there (the reference images are never decoded) and a missing file is an error.
    """
    device = resolve_device(device)
    cuda = device.type == "cuda"
    samples_ds = as_dataset(samples)
    ref_ds = as_dataset(reference) if reference is not None else None
    result = {"metrics": {}, "protocols": {}}
    for name in protocol_names:
        protocol = get_protocol(name)
        if protocol.resize is None:
            require_one_size(samples_ds, f"{protocol.name} scores them as they are")
        if protocol.metric == "msssim":
            result["metrics"][protocol.name], result["protocols"][protocol.name] = \
                _score_msssim(protocol, samples_ds, class_ids, batch_size, device)
            continue
        weights_path, remedy = resolve_weights(protocol, weights, classifier_dir)
        weights_sha = sha256_file(weights_path) if weights_path is not None else None
        view = scored_view(protocol, samples_ds, protocol.num_samples, protocol.resize)
        ruler = ruler_of(protocol)
        authors_rule = protocol.metric == "is" and ruler is not None and ruler.is_rule == "authors"
        minimum = authors_is.BATCH_SIZE if authors_rule else protocol.splits or 2
        if len(view) < minimum:
            groups = f" (its IS is the mean over {protocol.splits} groups of them)" if protocol.splits else ""
            if authors_rule:
                groups = f" (the authors' IS scores whole batches of {minimum})"
            raise UserError(f"{protocol.name} needs at least {minimum} images{groups}, got {len(view)}; "
                            f"score more images")
        if protocol.metric == "fid" and ref_ds is None:
            raise UserError(f"{protocol.name} needs reference images (the prepared {protocol.reference} split)")
        details = {
            **protocol.describe(),
            "nominal_samples": protocol.num_samples,
            "num_samples": len(view),
            "resize_rule": RESIZE_RULE if protocol.resize else None,
            "weights_file": weights_path.name if weights_path is not None else None,
            "weights_sha256": weights_sha,
            "torch_fidelity": torch_fidelity.__version__,
        }
        if ruler is not None and ruler.whole_batches is not None:
            details["whole_batches"] = ruler.whole_batches
        if protocol.metric == "is":
            net = fidelity.extractor(protocol.extractor, protocol.feature_layer, weights_path, remedy, cuda, verbose)
            if authors_rule:
                value, std, extra = authors_is.inception_score(view, net, protocol.feature_layer, protocol.splits,
                                                               cuda, verbose)
                details.update(extra)
            else:
                value, std = _score_is(protocol, view, net, batch_size, cuda, verbose)
                details["isc_shuffle_seed"] = fidelity.ISC_SHUFFLE_SEED
        elif protocol.metric == "fid":
            size = protocol.resize or tuple(samples_ds[0].shape[-2:])  # before the ruler's preprocessing
            ref_view = scored_view(protocol, ref_ds, None, size)
            cache_name = stats_file = None
            stats_dir = reference_stats_dir if reference_stats_dir is not None else cache_dir
            if stats_dir is not None:
                cache_name = reference_cache_name(protocol, ref_view, reference_key, weights_sha)
                stats_file = Path(stats_dir) / reference_stats_file(cache_name, protocol)
            if reference_stats_dir is not None and not stats_file.is_file():
                raise UserError(f"missing FID reference statistics {stats_file.name} in {reference_stats_dir} (reference, "
                                f"weights or resolution changed); run `stackgan refstats` for this dataset")
            stats_remedy = ("delete it and run `stackgan refstats` for this dataset" if reference_stats_dir is not None
                            else "delete it (a cache entry: it is computed again)")
            net = fidelity.extractor(protocol.extractor, protocol.feature_layer, weights_path, remedy, cuda, verbose)
            value, std = _score_fid(protocol, view, ref_view, net, batch_size, cuda, verbose, stats_file, stats_remedy)
            details["reference"] = {
                "split": protocol.reference, "source": describe_source(reference), "num_images": len(ref_view),
                "resized_to": list(size) if isinstance(size, tuple) else [size, size],
                "resize_rule": RESIZE_RULE, "cache_name": cache_name,
            }
        elif protocol.metric == "capacc":
            if attributes is None:
                raise UserError(f"{protocol.name} needs the captions' attribute ids (samples.json items[].attributes)")
            batch = torch.stack([view[i] for i in range(len(view))])
            scores = capacc(load_classifier(weights_path), batch, attributes)
            value, std = scores["value"], None
            details["per_attribute"] = scores["per_attribute"]
            details["all_attributes_match"] = scores["all_attributes_match"]
        else:
            raise UserError(f"unknown metric {protocol.metric!r} in protocol {protocol.name}")
        result["metrics"][protocol.name] = {"value": float(value) if value is not None else None, "std": std}
        result["protocols"][protocol.name] = details
    return result


def _score_msssim(protocol, samples, class_ids, batch_size, device):
    """Every sample takes part (pairs are drawn from all of them); no network, no weights."""
    if protocol.pair_scope == "class":
        if class_ids is None or any(c is None for c in class_ids):
            raise UserError(f"{protocol.name} pairs images within a class and needs each image's class id "
                            "(samples.json items[].class_id); use msssim<pairs>_all for unlabelled samples")
        if len(class_ids) != len(samples):
            raise UserError(f"{protocol.name}: {len(class_ids)} class ids for {len(samples)} images")
    labels = class_ids if protocol.pair_scope == "class" else [0] * len(samples)
    scores = mean_ms_ssim(samples, labels, protocol.pairs, protocol.pair_scope, batch_size, device)
    details = {**protocol.describe(), "num_samples": len(samples), "groups": scores["groups"],
               "pairs_scored": scores["pairs"], "pair_seed": scores["pair_seed"],
               "std_over": "class means" if scores["std"] is not None else None,
               "resolution": list(samples[0].shape[-2:])}
    return {"value": scores["value"], "std": scores["std"]}, details


def _attributes_in_file_order(samples_dir, index):
    by_file = {item["file"]: item.get("attributes") for item in index.get("items", [])}
    files = list_image_files(samples_dir)
    attrs = [by_file.get(f.name) for f in files]
    if any(a is None for a in attrs):
        raise UserError(f"{Path(samples_dir) / 'samples.json'} lacks attributes for some images; "
                        f"capacc needs a synthetic-dataset sample run")
    return attrs


def evaluate_samples(samples_dir, protocol_names, reference_images=None, weights=None, **kwargs) -> dict:
    """Score a `stackgan sample` folder; the result has the metrics file's "metrics" and
    "protocols" entries, each protocol carrying the sampling seed from samples.json."""
    index = read_samples(samples_dir, required=False)
    attributes = class_ids = None
    if any(get_protocol(n).metric == "capacc" for n in protocol_names):
        if index is None:
            raise UserError(f"{samples_dir} has no samples.json; capacc needs the captions' attributes")
        attributes = _attributes_in_file_order(samples_dir, index)
    if index is not None:
        by_file = {item["file"]: item.get("class_id") for item in index.get("items", [])}
        class_ids = [by_file.get(f.name) for f in list_image_files(samples_dir)]
    result = compute(protocol_names, samples_dir, reference=reference_images, weights=weights,
                     attributes=attributes, class_ids=class_ids, **kwargs)
    seed = index.get("seed") if index else None
    for details in result["protocols"].values():
        details["seed"] = seed
    return result


def score_folder(images_dir, protocol, reference_dir=None, extractor_weights=None, **kwargs) -> dict:
    """One folder under one protocol (`stackgan score`): {"protocol", "value", "std", "details"}."""
    name = get_protocol(protocol).name
    result = compute([protocol], images_dir, reference=reference_dir, weights=extractor_weights, **kwargs)
    return {"protocol": name, **result["metrics"][name], "details": result["protocols"][name]}

