"""Fig. 11 (rows 2-3): what conditioning augmentation varies. For each of a few test captions, two
rows of final images: z varies along the row with the CA noise fixed, then z fixed with a new CA
draw per column. A model without CA (ca: false) shows identical images along its CA rows, the
collapse of the figure's first row."""

import torch

from stackgan import seeding
from stackgan.figures import render

PAPER = "Fig. 11"


def draw(ctx, path):
    s = ctx.settings["diversity"]
    cols = s["columns"]
    captions, emb = ctx.method.figure_captions(ctx.cfg, s["captions"])
    z_dim, eps_dim = ctx.method.noise_dims(ctx.cfg)
    gen = seeding.figure_generator(ctx.settings["seed"], 11)
    rows, labels = [], []
    for k, caption in enumerate(captions):
        z, eps = torch.randn(cols, z_dim, generator=gen), torch.randn(cols, eps_dim, generator=gen)
        e = emb[k:k + 1].expand(cols, -1)
        rows.append(list(ctx.method.generate(ctx.cfg, ctx.generator, z, e, eps[:1].expand(cols, -1))[-1]))
        labels.append(f"z varies, CA fixed: {caption}")
        rows.append(list(ctx.method.generate(ctx.cfg, ctx.generator, z[:1].expand(cols, -1), e, eps)[-1]))
        labels.append(f"z fixed, CA varies: {caption}")
    side = render.cell(rows[0][0].shape[0])
    image = render.grid(rows, side)
    render.save(path, image, side, f"{ctx.name}: diversity from z and from conditioning augmentation",
                row_labels=labels)
    return {"shows": "Per caption, final images with varying z and fixed CA noise, then fixed z and varying CA "
                     "noise: how much of the variety each source gives.",
            "params": {"captions": captions, "columns": cols, "seed": ctx.settings["seed"],
                       "noise": "z, eps ~ N(0, I) per caption (seeding.figure_generator stream 11); the fixed one "
                                "is column 1's"}}
