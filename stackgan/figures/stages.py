"""Fig. 10: what each stage draws for one caption. Rows are test captions spread over the split;
columns are the generator's images from one draw of z and CA noise per row, Stage-I (or G1) at
the left and the final resolution at the right: every image of a row comes from the same noise."""

import torch

from stackgan import seeding
from stackgan.figures import render
from stackgan.figures.stage import Skip

PAPER = "Fig. 10"


def noise(ctx, n, figure):
    """(z, eps or None) for n rows from the figure's own stream."""
    z_dim, eps_dim = ctx.method.noise_dims(ctx.cfg)
    gen = seeding.figure_generator(ctx.settings["seed"], figure)
    z = torch.randn(n, z_dim, generator=gen)
    return z, (torch.randn(n, eps_dim, generator=gen) if eps_dim else None)


def draw(ctx, path):
    names = ctx.method.branch_names(ctx.cfg)
    if len(names) < 2:
        raise Skip(f"{ctx.name} has one stage ({names[0]}): there is no Stage-I/Stage-II pair to show")
    n = ctx.settings["stages"]["captions"]
    if ctx.method.noise_dims(ctx.cfg)[1] is None:  # unconditional: rows of noise alone
        captions, emb = [f"z #{k + 1}" for k in range(n)], None
    else:
        captions, emb = ctx.method.figure_captions(ctx.cfg, n)
    z, eps = noise(ctx, len(captions), 10)
    branches = ctx.method.generate(ctx.cfg, ctx.generator, z, emb, eps)
    side = render.cell(max(b.shape[1] for b in branches))
    image = render.grid([[b[k] for b in branches] for k in range(len(captions))], side)
    render.save(path, image, side, f"{ctx.name}: every stage's image from the same noise, per test caption",
                row_labels=captions, col_labels=names)
    return {"shows": "Each row: one test caption's images at every stage from one draw of z and CA noise "
                     "(left: the first stage, right: the final image), small images enlarged by nearest neighbour.",
            "params": {"captions": captions, "branches": names, "seed": ctx.settings["seed"],
                       "noise": "z ~ N(0, I) and CA eps ~ N(0, I), one draw per row (seeding.figure_generator "
                                "stream 10); a Stage-II's frozen Stage-I CA takes the same eps"}}
