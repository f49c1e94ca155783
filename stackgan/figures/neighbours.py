"""Fig. 12: is the model copying its training set? For each of the first evaluation samples, its
nearest training images by L2 distance between the features of the experiment's last
discriminator (the family's discriminator_features: the last conv layer of the Stage-II D, of
D256 for v2, of D0 for SGAN), its weights from the run's final checkpoint. Training images are
centre squares of the training view at the samples' resolution, as the metrics' reference set."""

import numpy as np
import torch

from stackgan.data.prepared import PreparedSplit
from stackgan.errors import UserError
from stackgan.figures import render
from stackgan.metrics.reference import centre_square

PAPER = "Fig. 12"


def training_images(cfg, size):
    split = PreparedSplit(cfg["data"]["prepared_dir"], "train")
    return np.stack([centre_square(split.image(cfg["view"], i), size) for i in range(len(split))])


def batched(features, images, batch_size):
    return torch.cat([features(images[i:i + batch_size]) for i in range(0, len(images), batch_size)])


def retrieve(queries, pool, k):
    """(indices, distances), each (Q, k): the k nearest pool rows of each query by L2, nearest first
    (computed without the matrix-product shortcut, so a pool row equal to the query is at 0)."""
    d = torch.cdist(queries.double(), pool.double(), compute_mode="donot_use_mm_for_euclid_dist")
    dist, idx = d.topk(min(k, pool.shape[0]), largest=False)
    return idx, dist


def extractor(ctx):
    """The family's feature function from the run's checkpoint; a checkpoint that does not fit is one line."""
    state = ctx.training_state()
    try:
        return ctx.method.discriminator_features(ctx.cfg, state, ctx.device)
    except (KeyError, TypeError, AttributeError, RuntimeError) as err:
        first = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise UserError(f"{ctx.cfg['paths']['checkpoint']}/state.pt does not hold this experiment's discriminator "
                        f"({first[:160]}); re-run `stackgan train {ctx.name}` to write it again") from None


def draw(ctx, path):
    s = ctx.settings["neighbours"]
    queries, items = ctx.samples(s["queries"])
    features, layer = extractor(ctx)
    pool = training_images(ctx.cfg, queries.shape[1])
    bs = ctx.settings["batch_size"]
    query_feats = batched(features, queries, bs)
    idx, dist = retrieve(query_feats, batched(features, pool, bs), s["k"])
    rows = [[q, *pool[row]] for q, row in zip(queries, idx.numpy())]
    side = render.cell(queries.shape[1])
    labels = [it.get("caption") or (f"class {it['class_id']}" if it.get("class_id") is not None else it["key"])
              for it in items]
    cols = ["generated", *(f"train #{j + 1}" for j in range(idx.shape[1]))]
    render.save(path, render.grid(rows, side), side,
                f"{ctx.name}: nearest training images by L2 on {layer.split(':')[0]} features",
                row_labels=labels, col_labels=cols)
    state = ctx.training_state()
    return {"shows": "Each row: an evaluation sample and its nearest training images by L2 distance between "
                     "discriminator features; near copies would mean memorisation.",
            "params": {"queries": len(queries), "k": int(idx.shape[1]), "feature_layer": layer,
                       "feature_dim": int(query_feats.shape[1]), "training_images": len(pool),
                       "checkpoint_step": state["step"], "checkpoint_sha256": state["sha256"],
                       "neighbours": [[{"train_index": int(i), "distance": round(float(d), 4)}
                                       for i, d in zip(r, dr)] for r, dr in zip(idx, dist)]}}
