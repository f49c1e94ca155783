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

import torch_fidelity

from stackgan.atomic import write_json
from stackgan.config import experiment_config
from stackgan.devices import resolve_device
from stackgan.errors import UserError
from stackgan.hashing import sha256_file
from stackgan.methods import output_resolution
from stackgan.metrics import fidelity, reference
from stackgan.metrics.compute import (
    reference_cache_name,
    reference_stats_file,
    resolve_weights,
    scored_view,
)
from stackgan.metrics.protocols import get_protocol

INDEX_FILE = "index.json"


def compute_refstats(dataset_cfg, protocol_names, out_dir, view, resolution, device="auto", *, weights=None,
                     classifier_dir=None, batch_size=64, verbose=False) -> dict:
    """Write the reference statistics of every FID protocol in `protocol_names` (others are
    skipped) for samples of `resolution` px; returns {protocol name: entry} and merges the
    entries into `<out_dir>/index.json`. An existing file with the same name is reused.
    weights / classifier_dir: as in compute.compute."""
    out_dir = Path(out_dir)
    cuda = resolve_device(device).type == "cuda"
    extractors, entries = {}, {}
    for name in protocol_names:
        protocol = get_protocol(name)
        if protocol.metric != "fid":
            continue
        weights_path, remedy = resolve_weights(protocol, weights, classifier_dir)
        weights_sha = sha256_file(weights_path) if weights_path is not None else None
        ref_ds, key = reference.reference_set(dataset_cfg["prepared_dir"], protocol.reference, view, resolution)
        size = protocol.resize or (resolution, resolution)  # compute() sizes the reference like this
        ref_view = scored_view(protocol, ref_ds, None, size)
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


def compute_refstats_for(params, dataset, profile, out_dir, device="auto"):
    """FID reference statistics for every evaluated experiment of `dataset` in the active run."""
    written = {}
    for name in params["run"].get("evaluate", []):
        cfg = experiment_config(params, name, profile)
        if cfg["data"]["name"] != dataset or reference.fid_reference_split(cfg) is None:
            continue
        written.update(compute_refstats(cfg["data"], cfg["eval"]["protocols"], out_dir, cfg["view"],
                                        output_resolution(cfg), device,
                                        classifier_dir=reference.classifier_dir(cfg["profile"], dataset)))
    return written
