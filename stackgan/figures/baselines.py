"""Figs. 14-15: the same captions and noise through several experiments, one column each: Table 5's
StackGAN-v2 baselines (no JCU, G3, 3G3, all-256) and StackGAN-v1 beside StackGAN-v2 (Fig. 14),
colour consistency on and off (Fig. 15). params.yaml figures.baselines names, per experiment,
the experiments drawn beside it; those without a model.pt are listed as missing. Each row is the
experiment's first evaluation samples, which its family draws from (evaluation seed, sample
index) alone, so the columns share captions (or class labels) and, at equal z width, noise.

The compared model.pt files are not deps of the experiment's `figures` stage (a DVC foreach
stage has one deps list); their sha256 and step are in the index instead."""

from pathlib import Path

from stackgan import config as C
from stackgan.figures import render
from stackgan.figures.stage import Skip
from stackgan.hashing import sha256_file
from stackgan.sample import load_model

PAPER = "Figs. 14-15"


def _label(item):
    return item.get("caption") or (f"class {item['class_id']}" if item.get("class_id") is not None else item["key"])


def draw(ctx, path):
    others = (ctx.params.get("figures", {}).get("baselines") or {}).get(ctx.name)
    if not others:
        raise Skip(f"params.yaml figures.baselines names no experiments to compare {ctx.name} with")
    cols = ctx.settings["baselines"]["columns"]
    images, items = ctx.samples(cols)
    rows, names = [list(images)], [ctx.name]
    models = {ctx.name: {"step": ctx.payload["step"], "model_sha256": sha256_file(ctx.cfg["paths"]["model"])}}
    left_out = {}
    for other in others:
        cfg = C.experiment_config(ctx.params, other, ctx.cfg["profile"])
        if not Path(cfg["paths"]["model"]).is_file():
            left_out[other] = f"{cfg['paths']['model']} not found (not trained in this profile)"
            continue
        payload, g = load_model(cfg, ctx.device)
        theirs, their_items = ctx.samples(cols, cfg, payload, g)
        if [_label(i) for i in their_items] != [_label(i) for i in items]:
            left_out[other] = "its evaluation samples have other captions or labels (another dataset?)"
            continue
        rows.append(list(theirs))
        names.append(other)
        models[other] = {"step": payload["step"], "model_sha256": sha256_file(cfg["paths"]["model"])}
    if len(rows) < 2:
        raise Skip("none of the experiments to compare with can be drawn: "
                   + "; ".join(f"{k}: {v}" for k, v in left_out.items()))
    side = render.cell(max(r[0].shape[0] for r in rows))
    by_caption = [[r[k] for r in rows] for k in range(len(items))]
    render.save(path, render.grid(by_caption, side), side, f"{ctx.name} beside {', '.join(names[1:])}: the same "
                                                           "captions and noise", row_labels=[_label(i) for i in items],
                col_labels=names)
    return {"shows": "Each column: one experiment's first evaluation samples, the same captions (or labels) and "
                     "evaluation noise in every column, smaller images enlarged.",
            "params": {"experiments": names, "columns": cols, "captions": [_label(i) for i in items],
                       "models": models, "missing": left_out}}
