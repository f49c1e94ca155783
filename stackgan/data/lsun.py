"""`prepare` for an LSUN scene category from its official lmdb export (spec §5).

Raw layout: <raw>/<category>_train_lmdb/ (data.mdb, lock.mdb), as unpacked from the zip that
fyu/lsun's download.py fetches; <category> is `bedroom` or `church_outdoor`. Each entry maps a
key (an ASCII hash) to encoded image bytes (webp in the official export; any PIL format works).

Unconditional: one split, "train" (the harness uses the train split as the FID reference),
keys in the lmdb cursor order StackGAN-v2's LSUNClass uses, class id 0 for every image, no
embeddings or captions. `limit` keeps the first `limit` entries.

storage "pixels" stores every view resized (shards.py); "encoded" stores each lmdb value once,
byte for byte, and makes the views when read (encoded_shards.py), as the reference's LSUNClass
decodes every item: about 1/40 of the disk of the four uint8 views, for a decode per item.
"""

from pathlib import Path

import numpy as np

from stackgan.data import staging
from stackgan.data.labelled import check_count
from stackgan.errors import UserError

CATEGORIES = {"lsun-bedroom": "bedroom", "lsun-church": "church_outdoor"}
DATASET_OF = {category: name for name, category in CATEGORIES.items()}
LSUN_URL = "https://github.com/fyu/lsun"


def _remedy(raw: Path, category: str) -> str:
    return (f"download it with `python download.py -c {category}` from {LSUN_URL} and unzip "
            f"{category}_train_lmdb.zip into {raw}")


def find_database(raw: Path, category=None) -> tuple[Path, str]:
    """(lmdb folder, category): the named category's, or the only *_train_lmdb in raw."""
    if category is None:
        found = sorted(raw.glob("*_train_lmdb")) if raw.is_dir() else []
        if len(found) != 1:
            raise UserError(f"{raw} holds {len(found)} '*_train_lmdb' folders; expected exactly one "
                            f"(e.g. bedroom_train_lmdb): {_remedy(raw, 'bedroom')}")
        return found[0], found[0].name[:-len("_train_lmdb")]
    db = raw / f"{category}_train_lmdb"
    if not db.is_dir():
        raise UserError(f"{db} not found; {_remedy(raw, category)}")
    return db, category


def open_database(db: Path, category: str):
    try:
        import lmdb
    except ImportError:
        raise UserError(f"reading {db} needs the lmdb package; install it with `pip install lmdb`") from None
    if not (db / "data.mdb").is_file():
        raise UserError(f"{db / 'data.mdb'} not found; the lmdb export is incomplete, {_remedy(db.parent, category)}")
    try:
        return lmdb.open(str(db), readonly=True, lock=False, readahead=False, meminit=False, max_readers=1)
    except lmdb.Error as err:
        raise UserError(f"{db} cannot be opened as an lmdb database ({err}); {_remedy(db.parent, category)}") from None


def _key_text(db: Path, key: bytes) -> str:
    try:
        text = key.decode("ascii")
    except UnicodeDecodeError:
        text = ""
    if not text.isprintable() or not text or text != text.strip():
        raise UserError(f"{db}: key {key[:40]!r} is not an LSUN image key (printable ASCII); "
                        "this is not an official LSUN export")
    return text


def _items(db: Path, txn, count: int, remedy: str):
    """(key, decoded image, encoded bytes) for the first `count` entries in cursor order; every
    entry is decoded, so a corrupt one stops prepare whatever the storage."""
    for number, (key, value) in enumerate(txn.cursor()):
        if number == count:
            return
        text, data = _key_text(db, bytes(key)), bytes(value)
        yield text, staging.decode_rgb(data, f"{db} entry {text}", remedy), data


def prepare(raw_dir, out_dir, views: dict, limit=None, expected_counts=None, category=None,
            storage="pixels") -> dict:
    """Resize and shard one LSUN category; returns the manifest written to out_dir.

    category: "bedroom", "church_outdoor" (default: the only *_train_lmdb folder in raw_dir).
    expected_counts: {"train": 3033042} (bedroom) / {"train": 126227} (church), checked when
    limit is None. storage: "pixels" or "encoded" (see the module docstring).
    """
    raw, out_dir, views = staging.check_arguments(raw_dir, out_dir, views, limit)
    staging.check_storage(storage, f"prepare {raw}")
    db, category = find_database(raw, category)
    env = open_database(db, category)
    try:
        with env.begin(write=False) as txn:
            total = int(txn.stat()["entries"])
            check_count("train", total, expected_counts, limit, db)
            count = total if limit is None else min(limit, total)
            if count == 0:
                raise UserError(f"{db} holds no images; {_remedy(raw, category)}")
            meta = {"class_ids": np.zeros(count, dtype=np.int64)}

            def write(tmp: Path) -> dict:
                remedy = f"re-download it: {_remedy(raw, category)}"
                meta["keys"] = staging.write_split(tmp / "train", "train", meta, _items(db, txn, count, remedy),
                                                   views, storage)
                return {"dataset": DATASET_OF.get(category, f"lsun-{category}"), "category": category, "limit": limit,
                        "views": views, "crop": "none: whole image", "entries_in_lmdb": total, "storage": storage,
                        "splits": {"train": staging.split_summary(meta)}}

            return staging.commit(out_dir, write, {"data.mdb": db / "data.mdb"})
    finally:
        env.close()
