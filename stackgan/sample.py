"""`stackgan sample EXPERIMENT`: the evaluation samples, deterministic whatever the hardware.

The family decides what is sampled and in which order (its `sample_batches`, e.g. one image per
test caption for the text-to-image families, labels spread over the classes for SGAN); this
stage writes them as numbered PNGs with an index, samples.json, and a sample grid beside them.
"""

import shutil
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

from stackgan import checkpoint
from stackgan.atomic import atomic_path, write_json
from stackgan.devices import resolve_device
from stackgan.errors import UserError
from stackgan.grids import compose
from stackgan.methods import family, load_generator
from stackgan.samples_index import SAMPLES_FILE

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


@torch.no_grad()
def sample(cfg, device="auto", batch_size=100):
    device = resolve_device(device)
    payload, g = load_model(cfg, device)
    batches = family(payload["family"]).sample_batches(cfg, payload, g, batch_size)
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
                                    "resolution": resolution, "trained_under": payload["trained_on"]["reproducibility"],
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
