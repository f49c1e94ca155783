"""`stackgan evaluate` and `stackgan evaluate-real`: the metrics files.

The real reference set of a FID protocol is the prepared split the protocol names, as
stackgan/metrics/reference.py crops it for the samples' resolution. Protocols of an optional
ruler (the authors' Inception) whose weights are absent are skipped and listed, with the steps
that fetch them, under the metrics file's `skipped`; the tables then show the stand-in ruler.
"""

import sys
from pathlib import Path

from stackgan import reproducibility
from stackgan.atomic import write_json
from stackgan.config import dataset_config
from stackgan.data.prepared import PreparedSplit
from stackgan.errors import UserError
from stackgan.metrics import weights
from stackgan.metrics.compute import compute, evaluate_samples
from stackgan.metrics.protocols import get_protocol
from stackgan.metrics.reference import (
    ReferenceImages,
    classifier_dir,
    fid_reference_split,
    reference_set,
    refstats_dir,
)
from stackgan.metrics.rulers import ruler_of
from stackgan.samples_index import read_samples


def measurable(protocol_names, classifier_dir):
    """(protocols to score, {skipped protocol: why}): an optional ruler's protocols wait for its
    weights (rulers.py); every other missing file stays an error when scoring."""
    kept, skipped = [], {}
    for name in protocol_names:
        ruler = ruler_of(get_protocol(name))
        if ruler is not None and ruler.optional:
            try:
                weights.locate(ruler.weights, classifier_dir)
            except weights.MissingWeights as err:
                skipped[name] = str(err)
                print(f"evaluate: {name} skipped: {err}", file=sys.stderr)
                continue
        kept.append(name)
    return kept, skipped


def evaluate(cfg, device="cpu"):
    """Score the experiment's samples; FID reads the statistics the refstats stage wrote."""
    samples_dir = Path(cfg["paths"]["samples"])
    index = read_samples(samples_dir)
    reference, reference_key = None, None
    split_name = fid_reference_split(cfg)
    if split_name:
        reference, reference_key = reference_set(cfg["data"]["prepared_dir"], split_name, cfg["view"],
                                                 index["resolution"])
    profile, dataset = cfg["profile"], cfg["data"]["name"]
    protocols, skipped = measurable(cfg["eval"]["protocols"], classifier_dir(profile, dataset))
    result = evaluate_samples(samples_dir, protocols, reference_images=reference, device=device,
                              classifier_dir=classifier_dir(profile, dataset),
                              reference_stats_dir=refstats_dir(profile, dataset), reference_key=reference_key)
    out = {"experiment": cfg["name"], "profile": cfg["profile"], "checkpoint_step": index["step"], **result,
           **({"skipped": skipped} if skipped else {}),
           "reproducibility": {"train": index.get("trained_under"), "evaluate": reproducibility.contract()}}
    write_json(cfg["paths"]["metrics"], out)
    return out


def evaluate_real(params, dataset, profile, device="cpu"):
    """Metrics of the real images themselves (e.g. the SGAN table's real CIFAR-10 IS), written
    as results/metrics/<profile>/<dataset>-real.json so the report finds them as an experiment."""
    spec = (params.get("real") or {}).get(dataset)
    if spec is None:
        raise UserError(f"params.yaml has no real.{dataset} entry; real-image metrics are defined for "
                        f"{', '.join(params.get('real') or {})}")
    ds = dataset_config(params, dataset, profile)
    split = PreparedSplit(Path(ds["prepared_dir"]), spec["split"])
    images = ReferenceImages(split, spec["view"], spec["size"])
    result = compute(spec["protocols"], images, device=device, class_ids=split.class_ids.tolist(),
                     classifier_dir=classifier_dir(profile, dataset))
    for details in result["protocols"].values():
        details["source"] = f"real images: {dataset} {spec['split']} split, view {spec['view']} at {spec['size']} px"
    out = {"experiment": f"{dataset}-real", "profile": profile, "checkpoint_step": None, **result,
           "reproducibility": {"train": None, "evaluate": reproducibility.contract()}}
    write_json(f"results/metrics/{profile}/{dataset}-real.json", out)
    return out
