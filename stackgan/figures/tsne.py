"""Fig. 5: a t-SNE map of N generated images. Features from the experiment's protocol extractor
(the network of its first IS/FID protocol whose weights are present, at the layer its FID reads:
2048-d Inception pool features, or the synthetic classifier's 128-d `feat`), embedded in 2-D by
openTSNE (seeded, one thread: the same map on every run), each point snapped to its own cell of
a side x side grid by a linear assignment that minimises the total squared distance from points
to cell centres (scipy's linear_sum_assignment). With N <= side^2 every sample gets a cell; with
more samples than cells (the paper: 30k on 50 x 50) each cell gets a distinct sample, chosen by
the same assignment, as the paper maps images to their nearest grid location.
"""

import numpy as np
from openTSNE import TSNE
from scipy.optimize import linear_sum_assignment

from stackgan.figures import render
from stackgan.figures.stage import Skip
from stackgan.hashing import sha256_file
from stackgan.metrics import fidelity
from stackgan.metrics import weights as weights_lookup
from stackgan.metrics.compute import resolve_weights, scored_view
from stackgan.metrics.images import as_dataset
from stackgan.metrics.protocols import get_protocol
from stackgan.metrics.reference import classifier_dir
from stackgan.metrics.rulers import ruler_of

PAPER = "Fig. 5"


def protocol_extractor(cfg):
    """(protocol, ruler, weights file) of the first IS/FID protocol whose ruler's weights are here."""
    why = []
    for name in cfg["eval"]["protocols"]:
        protocol = get_protocol(name)
        ruler = ruler_of(protocol)
        if protocol.metric not in ("is", "fid") or ruler is None:
            continue
        try:
            path, _ = resolve_weights(protocol, None, classifier_dir(cfg["profile"], cfg["data"]["name"]))
        except weights_lookup.MissingWeights as err:
            why.append(f"{name}: {err}")
            continue
        return protocol, ruler, path
    raise Skip("no IS/FID protocol with its weights present" + (f" ({'; '.join(why)})" if why else ""))


def features(cfg, images, device, batch_size):
    """(N, D) float64 features of uint8 NHWC images and how they were taken."""
    protocol, ruler, weights = protocol_extractor(cfg)
    view = scored_view(protocol, as_dataset(images), None, protocol.resize)
    cuda = device.type == "cuda"
    net = fidelity.extractor(ruler.extractor, ruler.fid_layer, weights, weights_lookup.remedy(ruler.weights), cuda)
    feats = fidelity.features(view, net, ruler.fid_layer, batch_size, cuda)
    return feats.double().numpy(), {
        "protocol": protocol.name, "extractor": ruler.extractor, "layer": ruler.fid_layer, "ruler": ruler.label,
        "feature_dim": int(feats.shape[1]), "weights_file": weights.name if weights else None,
        "weights_sha256": sha256_file(weights) if weights else None, "resized_to": protocol.resize}


def snap(points, side):
    """cell[i] = the grid cell (row-major index) of point i, -1 for a point left without one."""
    lo, hi = points.min(0), points.max(0)
    unit = (points - lo) / np.where(hi > lo, hi - lo, 1)
    centres = (np.stack(np.meshgrid(np.arange(side), np.arange(side), indexing="ij"), -1).reshape(-1, 2)
               + 0.5) / side  # (row, column) -> (y, x)
    cost = ((unit[:, None, ::-1] - centres[None]) ** 2).sum(-1)  # t-SNE's (x, y) against (y, x) centres
    rows, cols = linear_sum_assignment(cost)
    cell = np.full(len(points), -1)
    cell[rows] = cols
    return cell


def draw(ctx, path):
    s = ctx.settings["tsne"]
    n, side, seed = s["num_samples"], s["grid"], ctx.settings["seed"]
    images, _ = ctx.samples(n)
    n = len(images)
    if n < 4:
        raise Skip(f"t-SNE needs at least 4 samples, the experiment gives {n}")
    feats, extractor = features(ctx.cfg, images, ctx.device, ctx.settings["batch_size"])
    images = images[:len(feats)]  # a ruler that scores whole batches drops the remainder
    n = len(images)
    perplexity = min(s["perplexity"], (n - 1) / 3)  # openTSNE needs 3 * perplexity < N
    collapsed = not np.ptp(feats, axis=0).any()
    if collapsed:  # t-SNE (and its PCA start) needs some spread: every sample looks the same to the extractor
        points = np.zeros((n, 2))
    else:
        points = np.asarray(TSNE(perplexity=perplexity, n_jobs=1, random_state=seed, verbose=False).fit(feats))
    cell = snap(points, side)
    sample_of = np.full(side * side, -1)
    sample_of[cell[cell >= 0]] = np.flatnonzero(cell >= 0)
    cells = [images[i] if i >= 0 else None for i in sample_of]
    thumb = s["thumb"]
    image = render.grid([cells[r * side:(r + 1) * side] for r in range(side)], thumb)
    placed = int((cell >= 0).sum())
    render.save(path, image, thumb, f"{ctx.name}: t-SNE map of {n} samples ({extractor['feature_dim']}-d "
                                    f"{extractor['extractor']} features), {placed} on a {side}x{side} grid")
    return {"shows": f"{placed} of the first {n} evaluation samples placed by a t-SNE of their "
                     f"{extractor['extractor']} features: clusters of near-identical tiles are collapsed modes.",
            "params": {"num_samples": n, "grid": side, "thumb": thumb, "perplexity": perplexity, "seed": seed,
                       "placed": placed, "all_features_equal": collapsed, "snapping": "linear assignment of points to cells (squared distance)",
                       "tsne": "openTSNE, n_jobs=1, PCA initialisation", **extractor},
            "grid_samples": [int(i) for i in sample_of]}  # per cell (row-major): the sample's index, -1 empty
