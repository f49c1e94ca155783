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
    payload = torch.load(path, map_location="cpu", weights_only=False)
    return payload, load_generator(payload, device)


@torch.no_grad()
def sample(cfg, device="cpu", batch_size=100):
    device = torch.device(device)
    payload, g = load_model(cfg, device)
    split = PreparedSplit(Path(cfg["data"]["prepared_dir"]), "test")
    ev = cfg["eval"]
    out = Path(cfg["paths"]["samples"])
    tmp = out.with_name(out.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    if split.embeddings is None:
        raise UserError("unconditional sampling arrives with the unconditional datasets; this dataset has no embeddings")
    pairs = eval_pairs(split, ev["num_samples"])
    items, grid_rows = [], []
    for start in tqdm(range(0, len(pairs), batch_size), desc=f"sample {cfg['name']}", mininterval=2):
        chunk = pairs[start:start + batch_size]
        img_idx = [i for i, _ in chunk]
        z = image_noise(ev["seed"], img_idx, cfg["z_dim"]).to(device)
        emb = torch.from_numpy(np.stack([split.embeddings[i, c] for i, c in chunk])).to(device)
        # CA's eps is drawn per sample from the same deterministic scheme as z.
        eps = image_noise(ev["seed"] + 1, [i * 100 + c for i, c in chunk], cfg["ef_dim"]).to(device)
        images, _, _ = g(z, emb, eps=eps)
        final = to_uint8(images[-1])
        for k, (i, c) in enumerate(chunk):
            name = f"{start + k:06d}.png"
            Image.fromarray(final[k]).save(tmp / name)
            items.append({"file": name, "key": split.keys[i], "image_index": i, "caption_index": c,
                          "class_id": int(split.class_ids[i]),
                          "attributes": split.attributes[i].tolist() if split.attributes is not None else None})
        if len(grid_rows) < 8:
            grid_rows.append(([to_uint8(x[:1]) for x in images], split.captions[chunk[0][0]][chunk[0][1]]
                              if split.captions else split.keys[chunk[0][0]]))
    write_json(tmp / SAMPLES_FILE, {"experiment": cfg["name"], "step": payload["step"], "seed": ev["seed"],
                                    "resolution": int(final.shape[1]), "items": items})
    branches = [np.concatenate([row[0][b] for row in grid_rows]) for b in range(len(grid_rows[0][0]))]
    with atomic_path(tmp / "grid.png") as p:
        compose(branches, [row[1] for row in grid_rows]).save(p, format="PNG")
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    return out


def read_samples(samples_dir):
    path = Path(samples_dir) / SAMPLES_FILE
    if not path.exists():
        raise UserError(f"{path} not found; run `stackgan sample` for this experiment first")
    return json.loads(path.read_text())
