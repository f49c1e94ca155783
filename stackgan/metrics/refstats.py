"""The `refstats` stage: FID reference statistics (mu, sigma of a protocol's features over the
prepared reference split), computed once and read by `evaluate` without touching the images.

Each file is an .npz of mu and sigma (fidelity.save_statistics), named by
`compute.reference_cache_name` (a hash of the reference identity -- dataset, split, view,
centre-crop rule, resolution and the manifest's per-file sha256s --, image count, IS*/FID*
resize rule and size, extractor, feature layer, weights sha256 and torch-fidelity version), so
new weights or a re-prepared dataset give a new name instead of stale statistics.
`compute(..., reference_stats_dir=DIR)` reads it back (with allow_pickle=False).
"""

import json
from pathlib import Path

import torch
import torch_fidelity

from stackgan.atomic import write_json
from stackgan.data.prepared import PreparedSplit
from stackgan.errors import UserError
from stackgan.metrics import fidelity
from stackgan.metrics import weights as weights_lookup
from stackgan.metrics.compute import (
    reference_cache_name,
    reference_stats_file,
    resolve_weights,
)
from stackgan.metrics.images import ScoredView
from stackgan.metrics.protocols import get_protocol

CROP_RULE = "centre square of the view, PIL bilinear to the resolution"
INDEX_FILE = "index.json"


def reference_set(prepared_dir, split_name, view, resolution):
    """(dataset of uint8 reference images, reference key) of one prepared split as FID reads it;
    the key names the content by the manifest's sha256s, so nothing is decoded to build it."""
    # evaluate.py imports the metrics package; importing it here at call time avoids a cycle.
    from stackgan.evaluate import ReferenceImages, hash_of

    prepared = Path(prepared_dir)
    split = PreparedSplit(prepared, split_name)
    if view not in split.views:
        raise UserError(f"{prepared}/manifest.json has no view '{view}' (views: {split.views}); "
                        f"prepare the view the experiment trains on")
    key = f"{prepared.name}/{split_name}/{view}/{CROP_RULE}/{resolution}/{hash_of(split.manifest['files'])}"
    return ReferenceImages(split, view, resolution), key


def _device(device):
    if device in (None, "auto"):
        return "cuda" if torch.cuda.is_available() else "cpu"
    return str(device)


def compute_refstats(dataset_cfg, protocol_names, out_dir, view, resolution, device="auto", *, weights=None,
                     classifier_dir=None, batch_size=64, verbose=False) -> dict:
    """Write the reference statistics of every FID protocol in `protocol_names` (others are
    skipped) for samples of `resolution` px; returns {protocol name: entry} and merges the
    entries into `<out_dir>/index.json`. An existing file with the same name is reused.
    weights / classifier_dir: as in compute.compute."""
    out_dir = Path(out_dir)
    cuda = _device(device).startswith("cuda")
    extractors, entries = {}, {}
    for name in protocol_names:
        protocol = get_protocol(name)
        if protocol.metric != "fid":
            continue
        weights_path, remedy = resolve_weights(protocol, weights, classifier_dir)
        weights_sha = weights_lookup.sha256_file(weights_path) if weights_path is not None else None
        ref_ds, key = reference_set(dataset_cfg["prepared_dir"], protocol.reference, view, resolution)
        size = protocol.resize or (resolution, resolution)  # compute() sizes the reference like this
        ref_view = ScoredView(ref_ds, None, size)
        if len(ref_view) < 2:
            raise UserError(f"{dataset_cfg['prepared_dir']}/{protocol.reference} has {len(ref_view)} images; "
                            f"FID statistics need at least 2")
        cache_name = reference_cache_name(protocol, ref_view, key, weights_sha)
        path = out_dir / reference_stats_file(cache_name, protocol)
        reused = path.is_file()
        if not reused:
            slot = (protocol.extractor, str(weights_path), protocol.feature_layer)
            if slot not in extractors:
                extractors[slot] = fidelity.extractor(protocol.extractor, protocol.feature_layer, weights_path,
                                                      remedy, cuda, verbose)
            feats = fidelity.features(ref_view, extractors[slot], protocol.feature_layer, batch_size, cuda, verbose)
            fidelity.save_statistics(fidelity.fid_statistics(feats), path)
        entries[protocol.name] = {
            "file": path.name, "cache_name": cache_name, "reused": reused, "dataset": dataset_cfg["name"],
            "split": protocol.reference, "view": view, "resolution": resolution,
            "size": list(size) if isinstance(size, tuple) else [size, size], "num_images": len(ref_view), "reference_key": key,
            "extractor": protocol.extractor, "feature_layer": protocol.feature_layer,
            "weights_file": None if weights_path is None else weights_path.name, "weights_sha256": weights_sha,
            "torch_fidelity": torch_fidelity.__version__,
        }
    if entries:
        index_path = out_dir / INDEX_FILE
        index = json.loads(index_path.read_text()) if index_path.is_file() else {}
        index.update({e["file"]: {**{k: v for k, v in e.items() if k != "reused"}, "protocol": n}
                      for n, e in entries.items()})
        write_json(index_path, index)
    return entries
