"""Writing a prepared dataset, shared by every reader (cub, oxford102, coco, lsun, imagenet,
labelled): check the arguments and the raw layout, decode with a dataset-specific remedy, read
StackGAN's Python-2 pickles and caption files, pick a class-spread subset, write split folders
in the prepared format of stackgan/data/prepared.py into a temporary folder, hash them into the
manifest and rename the folder into place only when complete. View specs and make_view are
views.py's (encoded_shards.py needs them too).
"""

import contextlib
import json
import os
import re
import shutil
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from stackgan import untrusted
from stackgan.atomic import fresh_dir
from stackgan.data.encoded_shards import (
    DECODE_ERRORS,
    STORAGES,
    EncodedShardWriter,
    open_rgb,
)
from stackgan.data.shards import ShardWriter
from stackgan.data.views import check_views, make_view
from stackgan.errors import UserError
from stackgan.hashing import sha256_file

# The fields commit puts under those write() returns. CUB-layout manifests have never named a
# storage (prepared.py reads its absence as pixels), so cub.prepare passes its own base.
BASE_FIELDS = {"format_version": 1, "attributes": None, "storage": "pixels"}


def check_limit(limit):
    if limit is not None and (not isinstance(limit, int) or limit <= 0):
        raise UserError(f"--limit must be a positive number of images per split, got {limit!r}")


def check_output(out_dir: Path):
    if out_dir.exists() and any(out_dir.iterdir()) and not (out_dir / "manifest.json").is_file():
        raise UserError(f"{out_dir} is not empty and holds no prepared dataset; choose a new folder")


def check_arguments(raw_dir, out_dir, views: dict, limit) -> tuple[Path, Path, dict]:
    """(raw, out_dir, views checked and completed): what every reader checks before reading."""
    views = check_views(views)
    check_limit(limit)
    out_dir = Path(out_dir)
    check_output(out_dir)
    return Path(raw_dir), out_dir, views


def require_file(raw: Path, rel: str, nested: tuple[str, ...], remedy: str):
    """Refuse a raw folder without `rel`; when one of the `nested` folders below it has the file
    (the download's own top folder), say which --raw to pass instead."""
    path = raw / rel
    if path.is_file():
        return
    deeper = next((raw / d for d in nested if (raw / d / rel).is_file()), None)
    if deeper is not None:
        raise UserError(f"{path} not found but {deeper / rel} exists; pass --raw {deeper}")
    raise UserError(f"{path} not found; {remedy}")


def decode_rgb(source, where, remedy: str) -> Image.Image:
    """An RGB PIL image from a file path or encoded bytes; `where` names it in errors."""
    if isinstance(source, Path) and not source.is_file():
        raise UserError(f"{where} is missing; {remedy}")
    try:
        return open_rgb(source)
    except DECODE_ERRORS as err:
        reason = str(err).replace("\n", " ")
        raise UserError(f"{where} cannot be decoded ({reason}); the file is corrupt, {remedy}") from None


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


# The width of the char-CNN-RNN sentence embeddings in the authors' pickles (the models' text_dim).
TEXT_DIM = 1024


def _numbers(value, kinds: str, path: Path, what: str, remedy: str) -> np.ndarray:
    """`value` (an array, or nested lists of numbers / equal-shaped arrays) as an array whose
    dtype kind is one of `kinds`; anything else (strings, objects, ragged lists) is refused, so
    that no value is converted silently."""
    try:
        array = np.asarray(value)
    except (ValueError, TypeError, OverflowError):
        array = None
    if array is None or array.dtype.kind not in kinds:
        found = type(value).__name__ if array is None else f"{type(value).__name__} of {array.dtype}"
        raise UserError(f"{path} does not hold {what} (it holds a {found}); {remedy}")
    return array


def read_embedding_metadata(folder: Path, remedy: str, text_dim: int | None = TEXT_DIM) -> dict:
    """keys, embeddings (N, C, D) float32 and class ids from StackGAN's per-split pickles, each
    checked for what it must hold; text_dim: the width D required (None: any).
    Without class_info.pickle each image is its own class, as in the reference loaders."""
    names_path = folder / "filenames.pickle"
    keys = untrusted.load_pickle(names_path, remedy)
    # keys become lines of keys.txt and parts of file names: printable, one line each
    if not isinstance(keys, list) or not all(isinstance(k, str) and k.isprintable() and k for k in keys):
        raise UserError(f"{names_path} does not hold a list of keys (non-empty printable strings); {remedy}")
    if not keys:
        raise UserError(f"{names_path} lists no images; {remedy}")
    emb_path = folder / "char-CNN-RNN-embeddings.pickle"
    embeddings = _numbers(untrusted.load_pickle(emb_path, remedy), "fiu", emb_path, "an array of embeddings", remedy)
    with np.errstate(over="ignore"):  # values beyond float32 become inf, refused below with the file's name
        embeddings = embeddings.astype(np.float32, copy=False)
    if embeddings.ndim == 2:
        embeddings = embeddings[:, None, :]
    if embeddings.ndim != 3 or len(embeddings) != len(keys) or 0 in embeddings.shape:
        raise UserError(f"{emb_path} holds embeddings of shape {embeddings.shape} for {len(keys)} filenames "
                        f"(expected ({len(keys)}, captions, width)); the metadata files do not match, {remedy}")
    if text_dim is not None and embeddings.shape[2] != text_dim:
        raise UserError(f"{emb_path} holds embeddings of width {embeddings.shape[2]}, expected {text_dim} "
                        f"(char-CNN-RNN, the models' text_dim); {remedy}")
    finite = np.isfinite(embeddings).all(axis=(1, 2))
    if not finite.all():
        first = int(np.flatnonzero(~finite)[0])
        raise UserError(f"{emb_path} holds NaN or infinite values for {int((~finite).sum())} of {len(keys)} images "
                        f"(the first {keys[first]}); {remedy}")
    info_path = folder / "class_info.pickle"
    if info_path.is_file():
        class_ids = _numbers(untrusted.load_pickle(info_path, remedy), "iu", info_path,
                             "a list of integer class ids", remedy).astype(np.int64).reshape(-1)
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


def read_captions(text_dir: Path, key: str, count: int) -> list[str]:
    """The first `count` captions of an image from <text_dir>/<key>.txt (one a line, UTF-8 or
    Latin-1 as in the authors' downloads)."""
    path = text_dir / f"{key}.txt"
    if not path.is_file():
        raise UserError(f"{path} is missing; unpack the caption files (text/) from the metadata download")
    data = path.read_bytes()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        text = data.decode("latin1")
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if len(lines) < count:
        raise UserError(f"{path} has {len(lines)} captions but there are {count} embeddings per "
                        "image; re-download the caption files")
    return lines[:count]


def class_info_source(meta: dict) -> str:
    """Where a split's class ids come from, for its manifest (read_embedding_metadata's class_info)."""
    return "class_info.pickle" if meta["class_info"] else "absent: one class per image"


def split_summary(meta: dict) -> dict:
    summary = {"count": len(meta["keys"]), "num_classes": len(np.unique(meta["class_ids"])),
               "captions": meta.get("captions") is not None}
    if meta.get("embeddings") is not None:
        summary.update(captions_per_image=int(meta["embeddings"].shape[1]),
                       embedding_dim=int(meta["embeddings"].shape[2]))
    return summary


# A prepared folder holds, beside its data, the manifest and the marker that says prepare wrote it;
# neither is listed in the manifest's "files", so the data's fingerprint (train.py) is unchanged.
MANIFEST = "manifest.json"
MARKER = ".stackgan-prepared"
PREPARE = "stackgan prepare"
# The fields every manifest has, with their JSON types (prepared.read_manifest checks them).
MANIFEST_FIELDS = {"format_version": int, "dataset": str, "views": dict, "splits": dict, "files": dict,
                   "sources": dict}
# The keys manifests had before markers existed: a folder without the marker is taken for an
# earlier prepare's only if its manifest has exactly this schema and it holds just what that lists.
LEGACY_KEYS = MANIFEST_FIELDS.keys() | {"attributes", "storage", "limit", "crop", "category", "entries_in_lmdb",
                                        "class_info", "test_source", "label_check", "subset", "source", "wnids",
                                        "wnids_absent"}


def mark(folder: Path, marker: str, writer: str, **fields):
    """Sign folder as written by `writer`: small and without timestamps, so DVC's hash of the
    folder stays the same for the same input."""
    (folder / marker).write_text(json.dumps({"written_by": writer, **fields}, sort_keys=True) + "\n")


def marked(folder: Path, marker: str, writer: str) -> bool:
    path = folder / marker
    if path.is_symlink() or not path.is_file():
        return False
    try:
        record = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError):
        return False
    return isinstance(record, dict) and record.get("written_by") == writer


def listing(folder: Path) -> set[str]:
    """Relative paths of everything under folder except real directories (links are not followed)."""
    found = set()
    for parent, dirs, files in os.walk(folder):
        here = Path(parent)
        links = [d for d in dirs if (here / d).is_symlink()]
        found.update((here / name).relative_to(folder).as_posix() for name in files + links)
    return found


def written_by_prepare(folder: Path) -> bool:
    if marked(folder, MARKER, PREPARE):
        return True
    try:
        manifest = json.loads((folder / MANIFEST).read_text())
    except (OSError, ValueError, UnicodeDecodeError):
        return False
    return (isinstance(manifest, dict) and MANIFEST_FIELDS.keys() <= manifest.keys() <= LEGACY_KEYS
            and isinstance(manifest["files"], dict) and listing(folder) == {*manifest["files"], MANIFEST})


def claim_output(out_dir: Path, owned, writer: str):
    """Refuse, changing nothing, unless out_dir is absent, an empty folder or one that owned(out_dir)
    recognises as written by `writer`: the only folders a replace may delete."""
    if out_dir.is_symlink() or (out_dir.exists() and not out_dir.is_dir()):
        raise UserError(f"{out_dir} exists and is not a folder; refusing to replace it: move it away or "
                        "pass another --out")
    if out_dir.is_dir() and any(out_dir.iterdir()) and not owned(out_dir):
        raise UserError(f"{out_dir} is not empty and was not written by `{writer}`; refusing to replace it: "
                        "move it away or pass another --out")


def staging_dir(out_dir: Path, kind: str) -> Path:
    """A new folder .<name>.<pid>.<random>.<kind> beside out_dir; the pid tells a later run
    whether the run that made it is still going."""
    return fresh_dir(out_dir.parent, prefix=f".{out_dir.name}.{os.getpid()}.", suffix=f".{kind}")


def _running(pid) -> bool:
    if pid is None:  # named before pids were part of the name: no run of this version made it
        return False
    try:
        os.kill(int(pid), 0)
    except (ProcessLookupError, OverflowError):
        return False
    except OSError:  # e.g. another user's process: it exists
        return True
    return True


def remove_stale_staging(out_dir: Path):
    """Delete the staging folders killed runs left beside out_dir: only names of staging_dir's
    exact pattern (or the pid-less one earlier versions made) whose process is gone."""
    pattern = re.compile(rf"\.{re.escape(out_dir.name)}\.(?:(\d+)\.)?[a-z0-9_]{{8}}\.(?:tmp|old)")
    for path in out_dir.parent.iterdir():
        match = pattern.fullmatch(path.name)
        if match and path.is_dir() and not path.is_symlink() and not _running(match[1]):
            shutil.rmtree(path)


def replace_dir(tmp: Path, out_dir: Path):
    """Put tmp at out_dir; a previous out_dir is moved aside first and deleted only after."""
    if not out_dir.exists():
        os.replace(tmp, out_dir)
        return
    old = staging_dir(out_dir, "old")
    os.replace(out_dir, old / "previous")
    try:
        os.replace(tmp, out_dir)
    except BaseException:
        os.replace(old / "previous", out_dir)  # the previous output stays in place, not in a folder to clean
        raise
    finally:
        shutil.rmtree(old)


@contextlib.contextmanager
def staged(out_dir: Path, owned, writer: str):
    """A fresh staging folder beside out_dir, renamed to out_dir when the block completes and
    deleted if it fails. Checked first: out_dir may be replaced (claim_output); what killed runs
    left beside it is removed."""
    claim_output(out_dir, owned, writer)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_staging(out_dir)
    tmp = staging_dir(out_dir, "tmp")
    try:
        yield tmp
        replace_dir(tmp, out_dir)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            shutil.rmtree(tmp)
        raise


def commit(out_dir: Path, write, sources: dict, base: dict = BASE_FIELDS) -> dict:
    """Run write(tmp) -> manifest fields in a staging folder, add each file's sha256 and size and
    the sources' hashes ({name: path}), sign it with the marker and rename it into place (see
    staged). The manifest is base updated with write's fields."""
    with staged(out_dir, written_by_prepare, PREPARE) as tmp:
        manifest = {**base, **write(tmp)}
        written = {p.relative_to(tmp).as_posix(): p for p in sorted(tmp.rglob("*")) if p.is_file()}
        manifest["files"] = {rel: sha256_file(p) for rel, p in written.items()}
        manifest["sizes"] = {rel: p.stat().st_size for rel, p in written.items()}
        manifest["sources"] = {name: sha256_file(Path(path)) for name, path in sorted(sources.items())
                               if Path(path).is_file()}
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
        mark(tmp, MARKER, PREPARE, dataset=manifest.get("dataset"))
    return manifest
