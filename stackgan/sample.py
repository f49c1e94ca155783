"""`stackgan sample EXPERIMENT`: the evaluation samples, deterministic whatever the hardware.

Text-conditional datasets follow the reference evaluation (StackGAN-v2 condGANTrainer.evaluate):
the test split in file order, one z per test image shared by all of its captions, one image
per caption. Sample i's noise depends only on the evaluation seed and its test-image index,
so the set of images does not depend on batch size or the number of GPUs.
"""

import json
import shutil
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

from stackgan import checkpoint
from stackgan.atomic import atomic_path, write_json
from stackgan.data.prepared import PreparedSplit
from stackgan.errors import UserError
from stackgan.grids import compose, to_uint8
from stackgan.methods import load_generator

SAMPLES_FILE = "samples.json"


def eval_pairs(split, num_samples):
    """(image index, caption index) for one sample per test caption, in file order, capped."""
    n_caps = split.embeddings.shape[1]
    pairs = [(i, c) for i in range(len(split)) for c in range(n_caps)]
    return pairs[:num_samples] if num_samples else pairs


def image_noise(seed, indices, z_dim):
    return torch.stack([torch.randn(z_dim, generator=torch.Generator().manual_seed(seed * 1_000_003 + int(i)))
                        for i in indices])


def load_model(cfg, device):
    path = Path(cfg["paths"]["model"])
    if not path.exists():
        raise UserError(f"{path} not found; run `stackgan train {cfg['name']}` first")
    payload = checkpoint.load_model(path, f"re-run `stackgan train {cfg['name']}` to write it again")
    try:
        g = load_generator(payload, device)
    except (KeyError, TypeError, ValueError, RuntimeError) as err:
        first = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise UserError(f"{path} does not hold a generator this harness can build ({first[:160]}); "
                        f"re-run `stackgan train {cfg['name']}` to write it again") from None
    return payload, g


def check_embeddings(cfg, split, text_dim):
    """The test split has caption embeddings of the width the model was trained on (`text_dim`)."""
    where = f"{cfg['data']['prepared_dir']}/test"
    if split.embeddings is None:
        raise UserError(f"{where} has no embeddings.npy; a text-conditional model needs "
                        f"caption embeddings (re-run `stackgan prepare {cfg['data']['name']}`)")
    width = split.embeddings.shape[-1]
    if width != text_dim:
        raise UserError(f"{where} holds {width}-wide caption embeddings but the model takes text_dim {text_dim}; "
                        f"sample with the dataset the model was trained on (re-run `stackgan prepare "
                        f"{cfg['data']['name']}` if its embeddings changed)")


def caption_batches(cfg, g, split, batch_size):
    """Text-conditional families: (uint8 NHWC final images, items, per-branch uint8 images)."""
    ev = cfg["eval"]
    pairs = eval_pairs(split, ev["num_samples"])
    device = next(g.parameters()).device
    for start in range(0, len(pairs), batch_size):
        chunk = pairs[start:start + batch_size]
        z = image_noise(ev["seed"], [i for i, _ in chunk], cfg["z_dim"]).to(device)
        emb = torch.from_numpy(np.stack([split.embeddings[i, c] for i, c in chunk])).to(device)
        # CA's eps is drawn per (image, caption) from the same deterministic scheme as z.
        eps = image_noise(ev["seed"] + 1, [i * 100 + c for i, c in chunk], cfg["ef_dim"]).to(device)
        images, _, _ = g(z, emb, eps=eps)
        items = [{"key": split.keys[i], "image_index": i, "caption_index": c, "class_id": int(split.class_ids[i]),
                  "caption": split.captions[i][c] if split.captions else None,
                  "attributes": split.attributes[i].tolist() if split.attributes is not None else None}
                 for i, c in chunk]
        yield to_uint8(images[-1]), items, [to_uint8(x) for x in images]


def noise_batches(cfg, g, batch_size):
    """Unconditional families: eval.num_samples images, sample i's z from (eval seed, i)."""
    ev = cfg["eval"]
    device = next(g.parameters()).device
    for start in range(0, ev["num_samples"], batch_size):
        idx = list(range(start, min(ev["num_samples"], start + batch_size)))
        images, _, _ = g(image_noise(ev["seed"], idx, cfg["z_dim"]).to(device))
        items = [{"index": i, "caption": None, "key": f"sample{i}", "class_id": None, "attributes": None} for i in idx]
        yield to_uint8(images[-1]), items, [to_uint8(x) for x in images]


def class_batches(cfg, payload, g, batch_size):
    """Class-conditional SGAN: labels spread evenly over the classes (i % K), as the reference."""
    from stackgan.methods.sgan import sample_batches

    for images, items in sample_batches(payload, g, cfg["eval"]["num_samples"], cfg["eval"]["seed"], batch_size):
        yield images, items, None


@torch.no_grad()
def sample(cfg, device="cpu", batch_size=100):
    device = torch.device(device)
    payload, g = load_model(cfg, device)
    if payload["family"] == "sgan":
        batches = class_batches(cfg, payload, g, batch_size)
    elif not cfg.get("conditional", True):
        batches = noise_batches(cfg, g, batch_size)
    else:
        split = PreparedSplit(Path(cfg["data"]["prepared_dir"]), "test")
        check_embeddings(cfg, split, payload["config"].get("text_dim"))
        batches = caption_batches(cfg, g, split, batch_size)
    out = Path(cfg["paths"]["samples"])
    tmp = out.with_name(out.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    items, grid_rows, resolution = [], [], None
    for final, chunk_items, branches in tqdm(batches, desc=f"sample {cfg['name']}", mininterval=2):
        for img, item in zip(final, chunk_items):
            item["file"] = f"{len(items):06d}.png"
            Image.fromarray(img).save(tmp / item["file"])
            items.append(item)
        resolution = int(final.shape[1])
        if branches is not None and len(grid_rows) < 8:
            grid_rows.append(([b[:1] for b in branches], chunk_items[0]["caption"] or chunk_items[0]["key"]))
    write_json(tmp / SAMPLES_FILE, {"experiment": cfg["name"], "step": payload["step"], "seed": cfg["eval"]["seed"],
                                    "resolution": resolution, "trained_under": payload["config"].get("reproducibility"),
                                    "items": items})
    # Beside the samples folder, not in it: every PNG inside is a scored sample.
    with atomic_path(cfg["paths"]["sample_grid"]) as p:
        if grid_rows:
            branches = [np.concatenate([row[0][b] for row in grid_rows]) for b in range(len(grid_rows[0][0]))]
            compose(branches, [row[1] for row in grid_rows]).save(p, format="PNG")
        else:
            compose([np.stack([np.asarray(Image.open(tmp / it["file"]).convert("RGB")) for it in items[:64]])],
                    None).save(p, format="PNG")
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    return out


def read_samples(samples_dir):
    path = Path(samples_dir) / SAMPLES_FILE
    if not path.exists():
        raise UserError(f"{path} not found; run `stackgan sample` for this experiment first")
    try:
        index = json.loads(path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise UserError(f"{path} is not valid JSON ({err}); re-run `stackgan sample` for this experiment") from None
    if not isinstance(index, dict) or not isinstance(index.get("items"), list) \
            or not all(k in index for k in ("step", "resolution")):
        raise UserError(f"{path} is not a samples index written by `stackgan sample`; re-run `stackgan sample`")
    return index
