"""`prepare` for StackGAN-v2's ImageNet subsets, dog and cat (spec §5, V2 main.py).

Raw layout: <raw>/train/<wnid>/*.JPEG, the ILSVRC-2012 training set (ILSVRC2012_img_train.tar
unpacked, and each inner <wnid>.tar unpacked into its folder). Only the subset's wnids are read.
In the pipeline the images live in the user's folder (params `user_dir`, data/user/imagenet,
tracked by data.dvc) and <raw> = data/raw/imagenet-<subset>/ holds only user-data.json, which
`fetch` writes after verifying them: the folder and a hash of the subset's file list. `prepare`
reads the recorded folder and refuses to go on if its files changed since (DVC cannot see a
change inside data/user/ until `dvc commit data.dvc`, and no stage may depend on a .dvc file).

Like StackGAN-v2's ImageFolder: class folders are the subset's wnids present under train/, in
sorted order (class id = position), image files of the usual extensions found recursively in
each, sorted by path. Unconditional: one split "train", no embeddings or captions. `limit`
keeps that many images spread over the classes.
"""

import hashlib
import json
import os
from pathlib import Path

import numpy as np

from stackgan import sources
from stackgan.atomic import write_json
from stackgan.data import staging
from stackgan.data.labelled import check_count
from stackgan.data.staging import spread_selection
from stackgan.errors import UserError

IMAGENET_URL = "https://image-net.org/download"
RECORD = "user-data.json"
IMAGE_SUFFIXES = (".jpg", ".JPG", ".jpeg", ".JPEG", ".png", ".PNG", ".ppm", ".PPM", ".bmp", ".BMP")

# StackGAN-v2's DOG list: the 118 dog classes of ILSVRC-1k (class indices 151-268).
# One list for fetch (which verifies the folders) and prepare (which reads them).
DOG_WNIDS = sources.DOG_WNIDS
CAT_WNIDS = sources.CAT_WNIDS
CAT_IN_ILSVRC2012 = sources.CAT_WNIDS_IN_ILSVRC
SUBSETS = {"dog": DOG_WNIDS, "cat": CAT_WNIDS}
REQUIRED = {"dog": DOG_WNIDS, "cat": CAT_IN_ILSVRC2012}


def _remedy(raw: Path) -> str:
    return (f"ImageNet needs an account: register at {IMAGENET_URL}, download ILSVRC2012_img_train.tar, "
            f"unpack it and each inner <wnid>.tar into {raw}/train/<wnid>/ (e.g. {raw}/train/n02085620/*.JPEG)")


def list_images(raw: Path, subset: str) -> tuple[list[str], list[Path], np.ndarray]:
    """(wnids in class order, image paths relative to <raw>/train, class ids) of a subset."""
    if subset not in SUBSETS:
        raise UserError(f"ImageNet subset must be one of {sorted(SUBSETS)}, got {subset!r}")
    train = raw / "train"
    if not train.is_dir():
        raise UserError(f"{train} not found; {_remedy(raw)}")
    for wnid in REQUIRED[subset]:
        folder = train / wnid
        if not folder.is_dir():
            if (train / f"{wnid}.tar").is_file():
                raise UserError(f"{folder} not found but {folder}.tar exists; unpack it: "
                                f"mkdir {folder} && tar -xf {folder}.tar -C {folder}")
            raise UserError(f"{folder} not found (one of the {len(REQUIRED[subset])} ImageNet "
                            f"{subset} classes); {_remedy(raw)}")
    wnids = sorted(w for w in SUBSETS[subset] if (train / w).is_dir())
    paths, class_ids = [], []
    for class_id, wnid in enumerate(wnids):
        found = sorted(Path(root, name).relative_to(train)
                       for root, _, names in os.walk(train / wnid) for name in names
                       if name.endswith(IMAGE_SUFFIXES))
        if not found:
            raise UserError(f"{train / wnid} holds no images ({', '.join(IMAGE_SUFFIXES[:4])}, ...); "
                            f"the class archive was not unpacked, {_remedy(raw)}")
        paths += found
        class_ids += [class_id] * len(found)
    return wnids, paths, np.array(class_ids, dtype=np.int64)


def listing_sha256(train: Path, paths) -> str:
    """Hash of what prepare would read: each image's path under train/ and its size."""
    digest = hashlib.sha256()
    for rel in paths:
        digest.update(f"{rel.as_posix()}\t{(train / rel).stat().st_size}\n".encode())
    return digest.hexdigest()


def write_record(out: Path, source: Path, subset: str) -> dict:
    """user-data.json in `out`: which folder fetch verified and what it held."""
    wnids, paths, _ = list_images(source, subset)
    record = {"source": source.as_posix(), "subset": subset, "wnids": wnids, "images": len(paths),
              "listing_sha256": listing_sha256(source / "train", paths)}
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / RECORD, record)
    return record


def read_record(raw: Path) -> dict | None:
    """The fetch record when `raw` is a record folder, None when it holds the images itself."""
    if (raw / "train").is_dir() or not (raw / RECORD).is_file():
        return None
    try:
        record = json.loads((raw / RECORD).read_text())
    except ValueError as err:
        record = {"error": str(err)}
    if not isinstance(record, dict) or not all(isinstance(record.get(k), str) for k in ("source", "listing_sha256")):
        raise UserError(f"{raw / RECORD} is damaged (no source folder and listing hash); delete it and run "
                        f"`stackgan fetch` for this dataset again")
    return record


def _items(train: Path, paths, remedy: str):
    """(key "<wnid>/<name without suffix>", decoded image) per path."""
    for rel in paths:
        yield rel.with_suffix("").as_posix(), staging.decode_rgb(train / rel, train / rel, remedy)


def prepare(raw_dir, out_dir, views: dict, limit=None, expected_counts=None, subset=None) -> dict:
    """Resize and shard the ImageNet dog or cat subset; returns the manifest written to out_dir.

    subset: "dog" (118 classes) or "cat" (the 5 of StackGAN-v2's 17 cat wnids in ILSVRC-2012).
    expected_counts: {"train": 147873} (dog) / {"train": 6500} (cat), checked when limit is None.
    """
    raw, out_dir, views = staging.check_arguments(raw_dir, out_dir, views, limit)
    record = read_record(raw)
    if record is not None:
        raw = Path(record["source"])
    wnids, paths, class_ids = list_images(raw, subset)
    listing = listing_sha256(raw / "train", paths)
    if record is not None and listing != record["listing_sha256"]:
        raise UserError(f"the images under {raw}/train/ changed since `stackgan fetch` verified them (record "
                        f"{Path(raw_dir) / RECORD}); run `stackgan fetch imagenet-{subset}` (in the pipeline: "
                        f"`dvc commit data.dvc && dvc repro -f -s fetch@imagenet-{subset}`), then prepare again")
    check_count("train", len(paths), expected_counts, limit, raw / "train")
    if limit is not None:
        keep = spread_selection(class_ids, limit)
        paths, class_ids = [paths[i] for i in keep], class_ids[keep]
    meta = {"class_ids": class_ids}

    def write(tmp: Path) -> dict:
        meta["keys"] = staging.write_split(tmp / "train", "train", meta,
                                           _items(raw / "train", paths, f"re-extract it; {_remedy(raw)}"),
                                           views)
        return {"dataset": f"imagenet-{subset}", "subset": subset, "limit": limit, "views": views,
                "source": {"folder": raw.as_posix(), "listing_sha256": listing},
                "crop": "none: whole image", "wnids": wnids,
                "wnids_absent": [w for w in SUBSETS[subset] if w not in wnids],
                "splits": {"train": staging.split_summary(meta)}}

    return staging.commit(out_dir, write, {})
