"""Writing a prepared dataset, shared by every reader (cub, oxford102, coco, lsun, imagenet,
labelled): decode with a dataset-specific remedy, read StackGAN's Python-2 pickles, pick a
class-spread subset, write split folders in the prepared format of stackgan/data/prepared.py
into a temporary folder, hash them into the manifest and rename the folder into place only
when complete. View specs and make_view are views.py's (encoded_shards.py needs them too).
"""

import contextlib
import hashlib
import json
import os
import pickle
import shutil
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from stackgan.data.encoded_shards import (
    DECODE_ERRORS,
    STORAGES,
    EncodedShardWriter,
    open_rgb,
)
from stackgan.data.shards import ShardWriter
from stackgan.data.views import make_view
from stackgan.errors import UserError

# The fields commit puts under those write() returns. CUB-layout manifests have never named a
# storage (prepared.py reads its absence as pixels), so cub.prepare passes its own base.
BASE_FIELDS = {"format_version": 1, "attributes": None, "storage": "pixels"}


def check_limit(limit):
    if limit is not None and (not isinstance(limit, int) or limit <= 0):
        raise UserError(f"--limit must be a positive number of images per split, got {limit!r}")


def check_output(out_dir: Path):
    if out_dir.exists() and any(out_dir.iterdir()) and not (out_dir / "manifest.json").is_file():
        raise UserError(f"{out_dir} is not empty and holds no prepared dataset; choose a new folder")


def decode_rgb(source, where, remedy: str) -> Image.Image:
    """An RGB PIL image from a file path or encoded bytes; `where` names it in errors."""
    if isinstance(source, Path) and not source.is_file():
        raise UserError(f"{where} is missing; {remedy}")
    try:
        return open_rgb(source)
    except DECODE_ERRORS as err:
        reason = str(err).replace("\n", " ")
        raise UserError(f"{where} cannot be decoded ({reason}); the file is corrupt, {remedy}") from None


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def spread_selection(class_ids: np.ndarray, limit: int) -> np.ndarray:
    """`limit` indices spread over classes: round-robin over classes in id order, taking each
    class's images in file order; returned in file order."""
    if limit >= len(class_ids):
        return np.arange(len(class_ids))
    per_class = [np.flatnonzero(class_ids == c) for c in np.unique(class_ids)]
    chosen = []
    for depth in range(max(len(m) for m in per_class)):
        for members in per_class:
            if depth < len(members) and len(chosen) < limit:
                chosen.append(members[depth])
    return np.sort(np.array(chosen, dtype=np.int64))


def check_storage(storage: str, where: str):
    if storage not in STORAGES:
        raise UserError(f"{where}: storage must be one of {', '.join(STORAGES)}, got {storage!r}")


def load_py2_pickle(path: Path, remedy: str):
    """A pickle written by Python 2 (the authors' metadata): byte strings load as latin1."""
    try:
        with open(path, "rb") as f:
            return pickle.load(f, encoding="latin1")
    except Exception as err:  # noqa: BLE001 -- any unpickling failure means a damaged or foreign file
        raise UserError(f"{path} cannot be read as a pickle ({type(err).__name__}); {remedy}") from None


def read_embedding_metadata(folder: Path, remedy: str) -> dict:
    """keys, embeddings (N, C, D) float32 and class ids from StackGAN's per-split pickles.
    Without class_info.pickle each image is its own class, as in the reference loaders."""
    keys = load_py2_pickle(folder / "filenames.pickle", remedy)
    if not isinstance(keys, list) or not all(isinstance(k, str) for k in keys):
        raise UserError(f"{folder / 'filenames.pickle'} does not hold a list of keys; {remedy}")
    emb_path = folder / "char-CNN-RNN-embeddings.pickle"
    try:
        embeddings = np.asarray(load_py2_pickle(emb_path, remedy), dtype=np.float32)
    except (ValueError, TypeError):
        raise UserError(f"{emb_path} does not hold an array of embeddings; {remedy}") from None
    if embeddings.ndim == 2:
        embeddings = embeddings[:, None, :]
    if embeddings.ndim != 3 or len(embeddings) != len(keys):
        raise UserError(f"{emb_path} holds embeddings of shape {embeddings.shape} for {len(keys)} "
                        f"filenames; the metadata files do not match, {remedy}")
    info_path = folder / "class_info.pickle"
    if info_path.is_file():
        class_ids = np.asarray(load_py2_pickle(info_path, remedy), dtype=np.int64).reshape(-1)
        if len(class_ids) != len(keys):
            raise UserError(f"{info_path} has {len(class_ids)} entries for {len(keys)} filenames; {remedy}")
    else:
        class_ids = np.arange(len(keys), dtype=np.int64)
    return {"keys": keys, "embeddings": embeddings, "class_ids": class_ids,
            "class_info": info_path.is_file()}


def subset(meta: dict, keep: np.ndarray) -> dict:
    """The metadata restricted to indices `keep` (keys, class_ids and any per-image arrays)."""
    out = dict(meta)
    out["keys"] = [meta["keys"][i] for i in keep]
    for name in ("class_ids", "embeddings", "attributes"):
        if meta.get(name) is not None:
            out[name] = meta[name][keep]
    if meta.get("captions") is not None:
        out["captions"] = [meta["captions"][i] for i in keep]
    return out


def write_split(folder: Path, split: str, meta: dict, items, views: dict, storage="pixels") -> list[str]:
    """One split folder; returns the keys written. meta: class_ids, [embeddings], [attributes], [captions];
    items: an iterable of (key, PIL RGB image[, the bytes it was decoded from]) in that order.
    storage "pixels": each image stored once per view; "encoded": the bytes (required) stored
    once, the image giving their size and the probe of encoded_shards.py."""
    folder.mkdir(parents=True)
    count = len(meta["class_ids"])
    np.save(folder / "class_ids.npy", np.asarray(meta["class_ids"], dtype=np.int64))
    if meta.get("embeddings") is not None:
        np.save(folder / "embeddings.npy", meta["embeddings"])
    if meta.get("attributes") is not None:
        np.save(folder / "attributes.npy", np.asarray(meta["attributes"], dtype=np.int64))
    if meta.get("captions") is not None:
        (folder / "captions.json").write_text(json.dumps(meta["captions"]))
    if storage == "encoded":
        writers = {"source": EncodedShardWriter(folder, views)}

        def store(img, source):
            writers["source"].append(source, img)
    else:
        writers = {name: ShardWriter(folder, name) for name in views}

        def store(img, *_source):
            for name, spec in views.items():
                writers[name].append(make_view(img, spec))
    keys = []
    try:
        for key, img, *source in tqdm(items, total=count, desc=f"prepare {split}", unit="img", disable=None,
                                      leave=False):
            store(img, *source)
            keys.append(key)
    finally:
        for writer in writers.values():
            writer.close()
    if len(keys) != count:  # a reader yielding fewer images than class ids is a bug, not bad input
        raise RuntimeError(f"{split}: wrote {len(keys)} images for {count} class ids")
    (folder / "keys.txt").write_text("".join(f"{k}\n" for k in keys))
    return keys


def split_summary(meta: dict) -> dict:
    summary = {"count": len(meta["keys"]), "num_classes": len(np.unique(meta["class_ids"])),
               "captions": meta.get("captions") is not None}
    if meta.get("embeddings") is not None:
        summary.update(captions_per_image=int(meta["embeddings"].shape[1]),
                       embedding_dim=int(meta["embeddings"].shape[2]))
    return summary


def _replace_dir(tmp: Path, out_dir: Path):
    """Put tmp at out_dir; a previous out_dir is moved aside first and deleted only after."""
    if not out_dir.exists():
        os.replace(tmp, out_dir)
        return
    old = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", suffix=".old", dir=out_dir.parent))
    os.replace(out_dir, old / "previous")
    os.replace(tmp, out_dir)
    shutil.rmtree(old)


def commit(out_dir: Path, write, sources: dict, base: dict = BASE_FIELDS) -> dict:
    """Run write(tmp) -> manifest fields in a fresh folder beside out_dir, add file hashes and
    the sources' hashes ({name: path}), and rename it into place; nothing is left on failure.
    The manifest is base updated with write's fields."""
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", suffix=".tmp", dir=out_dir.parent))
    try:
        manifest = {**base, **write(tmp)}
        manifest["files"] = {p.relative_to(tmp).as_posix(): sha256_file(p)
                             for p in sorted(tmp.rglob("*")) if p.is_file()}
        manifest["sources"] = {name: sha256_file(Path(path)) for name, path in sorted(sources.items())
                               if Path(path).is_file()}
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
        _replace_dir(tmp, out_dir)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            shutil.rmtree(tmp)
        raise
    return manifest
