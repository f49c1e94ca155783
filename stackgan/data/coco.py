"""`prepare` for COCO 2014 with StackGAN's COCO embeddings (spec §5, StackGAN-Pytorch layout).

Raw layout (<raw> = StackGAN-Pytorch's data/coco):
    <raw>/train/filenames.pickle, char-CNN-RNN-embeddings.pickle (N, 5, 1024), [class_info.pickle]
    <raw>/test/filenames.pickle, char-CNN-RNN-embeddings.pickle   (same format), or instead
    <raw>/test/val_captions.t7   the authors' COCO eval download (see below)
    <raw>/train2014/COCO_train2014_%012d.jpg, <raw>/val2014/COCO_val2014_%012d.jpg (official zips),
        or <raw>/images/<key>.jpg as StackGAN-Pytorch reads them
    [<raw>/annotations/captions_train2014.json, captions_val2014.json]   official captions
Keys name the image file ("COCO_train2014_000000000009", a folder prefix is ignored).

Test split: the test pickles are used when present. Otherwise test/val_captions.t7 (Torch7:
raw_txt and fea_txt, one 1024-d embedding per caption and no image names) is read, and each
caption is matched to its val2014 image through annotations/captions_val2014.json (then
required) by exact text; see group_by_image. The manifest's "test_source" records the counts.

Captions: COCO has 5 (sometimes up to 7) captions per image; the embeddings must hold exactly 5
per image (verified), and captions.json keeps each image's first 5 annotations by annotation id
(from the .t7: the captions of the 5 embeddings kept, in the same order).
Without class_info.pickle every image is its own class (the reference's wrong-image rule).
"""

import json
import re
from pathlib import Path

import numpy as np

from stackgan.data import staging
from stackgan.data.labelled import check_count
from stackgan.data.staging import spread_selection
from stackgan.data.torch7 import read_caption_embeddings
from stackgan.errors import UserError
from stackgan.hashing import sha256_file

SPLITS = ("train", "test")
CAPTIONS_PER_IMAGE = 5
TRAIN_DRIVE_ID = "0B3y_msrWZaXLQXVzOENCY2E3TlU"
EVAL_DRIVE_ID = "0B3y_msrWZaXLeEs5MTg0RC1fa0U"
COCO_URL = "https://cocodataset.org/#download"
NAME = re.compile(r"COCO_(train|val)2014_\d{12}")
PICKLES = ("filenames.pickle", "char-CNN-RNN-embeddings.pickle")
T7_NAME = "val_captions.t7"
MIN_FOUND = 0.9  # share of .t7 captions that must be val2014 captions (else it is another file)


def _metadata_remedy(raw: Path, split: str) -> str:
    if split == "train":
        return (f"download StackGAN's COCO train metadata (Google Drive id {TRAIN_DRIVE_ID}) and unpack it "
                f"so that {raw}/train/filenames.pickle exists")
    return (f"download the authors' COCO eval data (Google Drive id {EVAL_DRIVE_ID}) and unpack it so that "
            f"{raw}/test/{T7_NAME} exists (with no test pickles), or give both test pickles intact")


def _images_remedy(raw: Path, folder: str) -> str:
    return f"download {folder}.zip ({COCO_URL}) and unpack it into {raw} (giving {raw}/{folder}/)"


def _t7_remedy() -> str:
    return (f"download the authors' COCO eval data (Google Drive id {EVAL_DRIVE_ID}) again and unpack it "
            f"so that test/{T7_NAME} is complete")


def _test_split_from_t7(raw: Path) -> bool:
    """Whether the test split comes from test/val_captions.t7: only when no test pickle exists."""
    return (raw / "test" / T7_NAME).is_file() and not any((raw / "test" / n).is_file() for n in PICKLES)


def check_layout(raw: Path):
    if not raw.is_dir():
        raise UserError(f"raw folder {raw} not found; {_metadata_remedy(raw, 'train')}")
    for split in SPLITS:
        if split == "test" and _test_split_from_t7(raw):
            table = raw / "annotations" / "captions_val2014.json"
            if not table.is_file():
                raise UserError(f"{table} not found; it names the val2014 image of each caption in "
                                f"{raw / 'test' / T7_NAME}: download annotations_trainval2014.zip "
                                f"({COCO_URL}) and unpack it into {raw}")
            continue
        for name in PICKLES:
            staging.require_file(raw, f"{split}/{name}", ("coco",), _metadata_remedy(raw, split))


def image_path(raw: Path, key: str) -> Path:
    """StackGAN-Pytorch's <raw>/images/<key>.jpg if present, else the official zip's folder."""
    name = key.rsplit("/", 1)[-1]
    flat = raw / "images" / f"{name}.jpg"
    if flat.is_file():
        return flat
    return raw / f"{NAME.fullmatch(name).group(1)}2014" / f"{name}.jpg"


def read_annotation_captions(path: Path) -> dict:
    """file name stem -> its captions in annotation-id order, from captions_*2014.json."""
    try:
        data = json.loads(path.read_bytes())
        names = {img["id"]: img["file_name"].rsplit(".", 1)[0] for img in data["images"]}
        by_name = {}
        for ann in sorted(data["annotations"], key=lambda a: a["id"]):
            by_name.setdefault(names[ann["image_id"]], []).append(" ".join(ann["caption"].split()))
    except (ValueError, KeyError, TypeError, AttributeError) as err:
        raise UserError(f"{path} is not a COCO captions file ({type(err).__name__}: {err}); "
                        f"re-download annotations_trainval2014.zip from {COCO_URL}") from None
    return by_name


def _check_keys(raw: Path, split: str, meta: dict):
    where = raw / split / "filenames.pickle"
    for key in meta["keys"]:
        if NAME.fullmatch(key.rsplit("/", 1)[-1]) is None:
            raise UserError(f"{where} holds key {key!r}, not a COCO 2014 image name "
                            f"('COCO_train2014_000000000009'); {_metadata_remedy(raw, split)}")
    per_image = meta["embeddings"].shape[1]
    if per_image != CAPTIONS_PER_IMAGE:
        raise UserError(f"{raw / split / 'char-CNN-RNN-embeddings.pickle'} holds {per_image} embeddings "
                        f"per image, COCO has {CAPTIONS_PER_IMAGE}; {_metadata_remedy(raw, split)}")


def _captions(raw: Path, split: str, keys, tables: dict):
    out = []
    for key in keys:
        name = key.rsplit("/", 1)[-1]
        folder = f"{NAME.fullmatch(name).group(1)}2014"
        table_path = raw / "annotations" / f"captions_{folder}.json"
        if table_path not in tables:
            if not table_path.is_file():
                raise UserError(f"{table_path} not found but the other captions file exists; download "
                                f"annotations_trainval2014.zip ({COCO_URL}) and unpack it into {raw}")
            tables[table_path] = read_annotation_captions(table_path)
        captions = tables[table_path].get(name, [])
        if len(captions) < CAPTIONS_PER_IMAGE:
            raise UserError(f"{table_path} has {len(captions)} captions for {name}, COCO has at least "
                            f"{CAPTIONS_PER_IMAGE}; re-download annotations_trainval2014.zip")
        out.append(captions[:CAPTIONS_PER_IMAGE])
    return out


def normalise_caption(text: str) -> str:
    """The form in which .t7 and annotation captions are compared: whitespace runs as one space,
    lower case (the char-CNN-RNN's alphabet has no capitals)."""
    return " ".join(text.split()).lower()


def group_by_image(captions: list, embeddings: np.ndarray, table: dict) -> tuple[dict, dict]:
    """An image split from one embedding per caption: (meta as read_embedding_metadata's plus
    captions, counts). table: image name -> captions in annotation-id order.

    Why: the reference generates one sample per .t7 caption and never needs the image; our
    evaluation generates from each test image's captions (and compares with the real images), so
    each caption must be given its image. A caption belongs to the image that has an annotation
    of the same normalised text. A text that several images share is ambiguous and left out
    rather than guessed; a caption repeated more often than its image has it is a duplicate.
    Each image's matched captions are ordered by annotation id and its first CAPTIONS_PER_IMAGE
    kept; images with fewer are dropped. Keys are in name (image id) order.
    """
    owners = {}  # normalised text -> {image name: [positions in the image's captions]}
    for name, texts in table.items():
        for position, text in enumerate(texts):
            owners.setdefault(normalise_caption(text), {}).setdefault(name, []).append(position)
    rows = {}  # image name -> {position: .t7 row}
    counts = dict.fromkeys(("matched", "ambiguous", "unmatched", "duplicate"), 0)
    for row, caption in enumerate(captions):
        found = owners.get(normalise_caption(caption), {})
        if len(found) != 1:
            counts["ambiguous" if found else "unmatched"] += 1
            continue
        ((name, positions),) = found.items()
        taken = rows.setdefault(name, {})
        free = [p for p in positions if p not in taken]
        counts["matched" if free else "duplicate"] += 1
        if free:
            taken[free[0]] = row
    keys = sorted(n for n, taken in rows.items() if len(taken) >= CAPTIONS_PER_IMAGE)
    kept = [sorted(rows[n])[:CAPTIONS_PER_IMAGE] for n in keys]
    index = np.array([[rows[n][p] for p in ps] for n, ps in zip(keys, kept)], dtype=np.int64)
    meta = {"keys": keys, "embeddings": embeddings[index.reshape(-1, CAPTIONS_PER_IMAGE)],
            "captions": [[table[n][p] for p in ps] for n, ps in zip(keys, kept)],
            "class_ids": np.arange(len(keys), dtype=np.int64), "class_info": False}
    counts.update(captions=len(captions), images_kept=len(keys), images_dropped=len(rows) - len(keys))
    return meta, counts


def _t7_test_split(raw: Path, tables: dict) -> tuple[dict, dict]:
    """The test split's metadata from test/val_captions.t7 and its record for the manifest."""
    path, table_path = raw / "test" / T7_NAME, raw / "annotations" / "captions_val2014.json"
    captions, embeddings = read_caption_embeddings(path, _t7_remedy())
    if table_path not in tables:
        tables[table_path] = read_annotation_captions(table_path)
    meta, counts = group_by_image(captions, embeddings, tables[table_path])
    found = counts["captions"] - counts["unmatched"]
    if found < MIN_FOUND * counts["captions"]:
        raise UserError(f"only {found} of the {counts['captions']} captions in {path} are captions in "
                        f"{table_path}; it is not the authors' COCO val2014 caption file, {_t7_remedy()}")
    if not meta["keys"]:
        raise UserError(f"no val2014 image has {CAPTIONS_PER_IMAGE} of its captions in {path} ({counts}); "
                        f"the test split needs {CAPTIONS_PER_IMAGE} per image, {_t7_remedy()}")
    bad = next((k for k in meta["keys"] if not k.startswith("COCO_val2014_") or not NAME.fullmatch(k)), None)
    if bad is not None:
        raise UserError(f"{table_path} names image {bad!r}, not a COCO val2014 file name; "
                        f"re-download annotations_trainval2014.zip from {COCO_URL}")
    return meta, {"file": f"test/{T7_NAME}", "sha256": sha256_file(path), **counts}


def _items(raw: Path, keys):
    for key in keys:
        path = image_path(raw, key)
        yield key, staging.decode_rgb(path, path, _images_remedy(raw, path.parent.name))


def prepare(raw_dir, out_dir, views: dict, limit=None, expected_counts=None, text_dim=None) -> dict:
    """Resize and shard COCO 2014 with StackGAN's embeddings; returns the manifest written.

    views: as in cub.prepare (mode "crop" keeps the whole image). limit: images per split
    (spread over classes; without class_info: the first `limit`). expected_counts: checked
    when limit is None.
    text_dim: the embedding width required, as in cub.prepare.
    """
    raw, out_dir, views = staging.check_arguments(raw_dir, out_dir, views, limit)
    check_layout(raw)
    with_captions = (raw / "annotations").is_dir()
    tables, metas, test_source = {}, {}, None
    for split in SPLITS:
        if split == "test" and _test_split_from_t7(raw):
            listing = raw / "test" / T7_NAME
            meta, test_source = _t7_test_split(raw, tables)
        else:
            listing = raw / split / "filenames.pickle"
            meta = staging.read_embedding_metadata(raw / split, _metadata_remedy(raw, split), text_dim)
            _check_keys(raw, split, meta)
        check_count(split, len(meta["keys"]), expected_counts, limit, listing)
        if limit is not None:
            meta = staging.subset(meta, spread_selection(meta["class_ids"], limit))
        missing = next((p for p in (image_path(raw, k) for k in meta["keys"]) if not p.is_file()), None)
        if missing is not None:
            raise UserError(f"{missing} not found (an image of {listing}); "
                            f"{_images_remedy(raw, missing.parent.name)}")
        if with_captions and "captions" not in meta:
            meta["captions"] = _captions(raw, split, meta["keys"], tables)
        metas[split] = meta

    def write(tmp: Path) -> dict:
        for split, meta in metas.items():
            staging.write_split(tmp / split, split, meta, _items(raw, meta["keys"]), views)
        return {"dataset": "coco", "limit": limit, "views": views,
                "crop": "none: whole image",
                "class_info": {s: staging.class_info_source(m) for s, m in metas.items()},
                "splits": {split: staging.split_summary(meta) for split, meta in metas.items()},
                "test_source": test_source or "test/filenames.pickle + char-CNN-RNN-embeddings.pickle"}

    sources = {f"{s}/{f}": raw / s / f for s in SPLITS
               for f in ("filenames.pickle", "class_info.pickle", "char-CNN-RNN-embeddings.pickle")}
    if test_source is not None:
        sources[test_source["file"]] = raw / test_source["file"]
    sources.update({str(p.relative_to(raw)): p for p in tables})
    return staging.commit(out_dir, write, sources)
