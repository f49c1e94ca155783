"""`stackgan hr build`: a self-contained study folder, sampled as StackGAN++ §6 describes (random
test captions per class, or a total for COCO; N images per caption from every model).

The folder holds images/ (opaque names: a rater reading a URL learns nothing about the model),
the page (index.html, rank.js: no experiment name anywhere), and manifest.json: the protocol,
the captions, per caption and model the image files, each file's sha256, and `sha256` over all
of it. The same experiments, models and seed give the same manifest, byte for byte.
"""

import json
import shutil
from importlib.resources import files as package_files
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from stackgan import seeding
from stackgan.atomic import atomic_path, write_bytes, write_json
from stackgan.data.prepared import PreparedSplit
from stackgan.errors import UserError
from stackgan.hashing import sha256_file, sha256_json

MANIFEST = "manifest.json"
ANSWERS = "answers.jsonl"
PAGE_FILES = ("index.html", "rank.js")
FORMAT = 1
BATCH = 50


def build(cfgs, dataset, out, captions_per_class=50, captions=None, images_per_caption=5, seed=0, device="cpu"):
    """Write the study of experiments `cfgs` (resolved configs of `dataset`) into `out`."""
    from stackgan.methods import family
    from stackgan.sample import load_model

    check_experiments(cfgs, dataset)
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise UserError(f"{out} exists and is not empty; give a new --out folder (a study is never overwritten: "
                        "its answers would no longer match its images)")
    split = PreparedSplit(Path(cfgs[0]["data"]["prepared_dir"]), "test")
    picked = pick_captions(split, captions_per_class, captions, seed)
    tmp = out.with_name(out.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    (tmp / "images").mkdir(parents=True)
    rows = [{"id": f"c{n:04d}", "text": split.captions[i][k], "class_id": _class_of(split, i),
             "image_key": split.keys[i], "image_index": i, "caption_index": k, "images": []}
            for n, (i, k) in enumerate(picked)]
    models = []
    for cfg in cfgs:
        payload, g = load_model(cfg, device)
        method = family(payload["family"])
        check_embedding_width(cfg, split, payload)
        z_dim, eps_dim = method.noise_dims(cfg)
        models.append({"experiment": cfg["name"], "family": payload["family"], "step": payload["step"],
                       "model_sha256": sha256_file(cfg["paths"]["model"])})
        for row in rows:
            row["images"].append([])
        jobs = [(n, j) for n in range(len(rows)) for j in range(images_per_caption)]
        for start in range(0, len(jobs), BATCH):
            chunk = jobs[start:start + BATCH]
            emb = np.stack([split.embeddings[rows[n]["image_index"], rows[n]["caption_index"]] for n, _ in chunk])
            ids = [n * images_per_caption + j for n, j in chunk]
            z = study_noise(seed, ids, 0, z_dim)
            eps = study_noise(seed, ids, 1, eps_dim)
            images = method.generate(cfg, g, z, torch.from_numpy(np.ascontiguousarray(emb)), eps)[-1]
            for img, (n, j) in zip(images, chunk):
                name = f"images/{sha256_json([seed, cfg['name'], rows[n]['id'], j], 20)}.png"
                with atomic_path(tmp / name) as p:
                    Image.fromarray(img).save(p, format="PNG")
                rows[n]["images"][-1].append(name)
    for name in PAGE_FILES:
        write_bytes(tmp / name, package_files("stackgan.hr").joinpath(name).read_bytes())
    file_list = [*PAGE_FILES, *(f for row in rows for per_model in row["images"] for f in per_model)]
    manifest = {"format": FORMAT, "study": out.name, "profile": cfgs[0]["profile"],
                "dataset": cfgs[0]["data"]["name"], "seed": seed,
                "protocol": {"captions_per_class": None if captions else captions_per_class, "captions": len(rows),
                             "classes": len({r["class_id"] for r in rows}), "images_per_caption": images_per_caption},
                "models": models, "captions": rows,
                "files": {f: sha256_file(tmp / f) for f in sorted(file_list)}}
    manifest["sha256"] = sha256_json(manifest)
    write_json(tmp / MANIFEST, manifest)
    if out.exists():
        out.rmdir()  # the empty folder checked above
    tmp.rename(out)
    return out, manifest


def study_noise(seed, ids, stream, dim):
    """(len(ids), dim) N(0, 1) rows, row k a pure function of (seed, ids[k], stream): the same for
    every model and batch size."""
    return torch.stack([torch.randn(dim, generator=seeding.study_generator(seed, i, stream)) for i in ids])


def check_embedding_width(cfg, split, payload):
    width, text_dim = split.embeddings.shape[-1], payload["config"].get("text_dim")
    if width != text_dim:
        raise UserError(f"{cfg['data']['prepared_dir']}/test holds {width}-wide caption embeddings but "
                        f"{cfg['name']}'s model takes text_dim {text_dim}; build the study from models of that "
                        f"dataset (re-run `stackgan prepare {cfg['data']['name']}` if its embeddings changed)")


def check_experiments(cfgs, dataset):
    from stackgan.methods import family

    if len(cfgs) < 2:
        raise UserError("a human-rank study compares models: give two or more --experiments")
    names = [c["name"] for c in cfgs]
    if len(set(names)) != len(names):
        raise UserError(f"--experiments names one experiment twice ({', '.join(names)}); give each once")
    datasets = sorted({c["data"]["name"] for c in cfgs})
    if len(datasets) > 1:
        raise UserError(f"the experiments are of different datasets ({', '.join(datasets)}); raters rank images "
                        "of the same caption, so give experiments of one dataset")
    if datasets != [dataset]:
        raise UserError(f"the experiments are of dataset {datasets[0]}, not --dataset {dataset}; "
                        "give experiments of that dataset or fix --dataset")
    for c in cfgs:
        # A family that draws images for explicit caption and noise has `generate` (the text-to-image ones).
        if not hasattr(family(c["family"]), "generate") or c.get("conditional") is False:
            raise UserError(f"{c['name']} is not a text-conditional StackGAN-v1/v2 experiment; a human-rank study "
                            "ranks images generated for the same caption")


def pick_captions(split, per_class, total, seed):
    """(image index, caption index) pairs: `per_class` random test captions of every class, or
    `total` random ones of the whole split (datasets without classes, e.g. COCO)."""
    if split.embeddings is None or not split.captions:
        raise UserError(f"{split.dir} has no captions or caption embeddings; re-run `stackgan prepare` for it")
    n_caps = split.embeddings.shape[1]
    pairs = [(i, k) for i in range(len(split)) for k in range(min(n_caps, len(split.captions[i])))]
    rng = seeding.numpy_rng(seed)
    if total is not None:
        return [pairs[p] for p in sorted(rng.choice(len(pairs), size=min(total, len(pairs)), replace=False))]
    if split.class_ids is None:
        raise UserError(f"{split.dir} has no classes; give --captions N (a total, as the paper's 4k for COCO)")
    picked = []
    for cls in sorted(set(int(c) for c in split.class_ids)):
        mine = [p for p in pairs if int(split.class_ids[p[0]]) == cls]
        picked += [mine[p] for p in sorted(rng.choice(len(mine), size=min(per_class, len(mine)), replace=False))]
    return picked


def _class_of(split, i):
    return int(split.class_ids[i]) if split.class_ids is not None else None


def load_study(study):
    """The manifest of a study folder, after checking it and every file it lists against their
    hashes (a study whose images changed would give ranks of other images)."""
    study = Path(study)
    path = study / MANIFEST
    remedy = "rebuild it with `stackgan hr build` (or restore the folder as built)"
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserError(f"{path} not found; give a folder written by `stackgan hr build`") from None
    except (ValueError, UnicodeDecodeError) as err:
        raise UserError(f"{path} cannot be parsed ({str(err).splitlines()[0]}); {remedy}") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT or not isinstance(manifest.get("files"), dict):
        raise UserError(f"{path} is not a format-{FORMAT} study manifest; {remedy}")
    recorded = manifest.pop("sha256", None)
    if recorded != sha256_json(manifest):
        raise UserError(f"{path} does not match its sha256 (edited after the build); {remedy}")
    manifest["sha256"] = recorded
    if not _well_formed(manifest):
        raise UserError(f"{path} lacks the models, captions or protocol a study has, or has them of the wrong "
                        f"kind; {remedy}")
    for name, digest in manifest["files"].items():
        target = study / name
        if not _inside(study, target) or not target.is_file() or sha256_file(target) != digest:
            raise UserError(f"{study}: {name} is missing or differs from the manifest; {remedy}")
    return manifest


def _well_formed(m):
    """The fields the server and aggregate read, of the types they read them as."""
    def strings(*values):
        return all(isinstance(v, str) for v in values)

    models, captions = m.get("models"), m.get("captions")
    return (strings(m.get("study"), m.get("profile"), m.get("dataset"), *m["files"], *m["files"].values())
            and isinstance(m.get("protocol"), dict) and isinstance(m["protocol"].get("images_per_caption"), int)
            and isinstance(models, list) and all(isinstance(x, dict) and strings(x.get("experiment")) for x in models)
            and len({x["experiment"] for x in models}) == len(models) >= 2
            and isinstance(captions, list) and captions
            and all(isinstance(c, dict) and strings(c.get("id"), c.get("text")) and isinstance(c.get("images"), list)
                    and len(c["images"]) == len(models)
                    and all(isinstance(f, list) and strings(*f) for f in c["images"]) for c in captions)
            and len({c["id"] for c in captions}) == len(captions))


def _inside(root, path):
    root = Path(root).resolve()
    return Path(path).resolve().is_relative_to(root)
