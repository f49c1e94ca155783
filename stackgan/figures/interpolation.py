"""Fig. 13: images from linearly interpolated caption embeddings, z fixed to zeros (and every CA at
its mean, eps = 0), so the image follows the text alone. Each row walks from one test caption's
embedding (left) to another's (right); the end columns are the two captions' own images."""

import torch

from stackgan.figures import render

PAPER = "Fig. 13"


def draw(ctx, path):
    s = ctx.settings["interpolation"]
    steps = s["steps"]
    captions, emb = ctx.method.figure_captions(ctx.cfg, 2 * s["pairs"])
    z_dim, eps_dim = ctx.method.noise_dims(ctx.cfg)
    t = torch.linspace(0, 1, steps)[:, None]
    rows, labels, pairs = [], [], []
    for k in range(len(captions) // 2):
        a, b = k, len(captions) - 1 - k  # captions from far apart in the split
        e = (1 - t) * emb[a] + t * emb[b]
        rows.append(list(ctx.method.generate(ctx.cfg, ctx.generator, torch.zeros(steps, z_dim), e,
                                             torch.zeros(steps, eps_dim))[-1]))
        labels.append(f"{captions[a]}  ->  {captions[b]}")
        pairs.append([captions[a], captions[b]])
    side = render.cell(rows[0][0].shape[0])
    render.save(path, render.grid(rows, side), side,
                f"{ctx.name}: interpolated caption embeddings, z = 0", row_labels=labels)
    return {"shows": "Each row: images from embeddings interpolated linearly between two test captions (left "
                     "to right) with z = 0 and CA at its mean: a smooth change means a smooth text manifold.",
            "params": {"pairs": pairs, "steps": steps, "z": "zeros", "ca_eps": "zeros"}}
