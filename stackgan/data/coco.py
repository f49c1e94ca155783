"""`prepare` for COCO 2014 with StackGAN's COCO embeddings (spec §5, StackGAN-Pytorch layout).

Raw layout (<raw> = StackGAN-Pytorch's data/coco):
    <raw>/train/filenames.pickle, char-CNN-RNN-embeddings.pickle (N, 5, 1024), [class_info.pickle]
    <raw>/test/filenames.pickle, char-CNN-RNN-embeddings.pickle   (same format; see below)
    <raw>/train2014/COCO_train2014_%012d.jpg, <raw>/val2014/COCO_val2014_%012d.jpg (official zips),
        or <raw>/images/<key>.jpg as StackGAN-Pytorch reads them
    [<raw>/annotations/captions_train2014.json, captions_val2014.json]   official captions
Keys name the image file ("COCO_train2014_000000000009", a folder prefix is ignored).

Test split: the authors' COCO eval download holds test/val_captions.t7 (Torch7: raw_txt and
fea_txt, one 1024-d embedding per caption and no image names), which cannot make an image split.
It has to be converted to the pickle layout above: filenames.pickle (val2014 keys) and
char-CNN-RNN-embeddings.pickle (N, 5, 1024) grouped by image (the captions identify the image
through captions_val2014.json). prepare says so when it finds only the .t7 file.

Captions: COCO has 5 (sometimes up to 7) captions per image; the embeddings must hold exactly 5
per image (verified), and captions.json keeps each image's first 5 annotations by annotation id.
Without class_info.pickle every image is its own class (the reference's wrong-image rule).
"""

import json
import re
from pathlib import Path

from stackgan.data import staging
from stackgan.data.cub import check_views, spread_selection
from stackgan.data.labelled import check_count
from stackgan.errors import UserError

SPLITS = ("train", "test")
CAPTIONS_PER_IMAGE = 5
TRAIN_DRIVE_ID = "0B3y_msrWZaXLQXVzOENCY2E3TlU"
EVAL_DRIVE_ID = "0B3y_msrWZaXLeEs5MTg0RC1fa0U"
COCO_URL = "https://cocodataset.org/#download"
NAME = re.compile(r"COCO_(train|val)2014_\d{12}")


def _metadata_remedy(raw: Path, split: str) -> str:
    drive = TRAIN_DRIVE_ID if split == "train" else EVAL_DRIVE_ID
    return (f"download StackGAN's COCO {split} metadata (Google Drive id {drive}) and unpack it "
            f"so that {raw}/{split}/filenames.pickle exists")


def _images_remedy(raw: Path, folder: str) -> str:
    return f"download {folder}.zip ({COCO_URL}) and unpack it into {raw} (giving {raw}/{folder}/)"


def _t7_remedy(raw: Path) -> str:
    return (f"{raw}/test/val_captions.t7 holds one embedding per caption but no image names, so it "
            f"cannot give a test split with images; convert it to {raw}/test/filenames.pickle (the "
            "val2014 keys, e.g. 'COCO_val2014_000000000042') and char-CNN-RNN-embeddings.pickle "
            "(N x 5 x 1024, each image's 5 caption embeddings, matched through "
            "annotations/captions_val2014.json); reading .t7 files needs the torchfile package")


def check_layout(raw: Path):
    if not raw.is_dir():
        raise UserError(f"raw folder {raw} not found; {_metadata_remedy(raw, 'train')}")
    for split in SPLITS:
        for name in ("filenames.pickle", "char-CNN-RNN-embeddings.pickle"):
            path = raw / split / name
            if path.is_file():
                continue
            if split == "test" and (raw / "test" / "val_captions.t7").is_file():
                raise UserError(f"{path} not found; {_t7_remedy(raw)}")
            if (raw / "coco" / split / name).is_file():
                raise UserError(f"{path} not found but {raw / 'coco' / split / name} exists; pass --raw {raw / 'coco'}")
            raise UserError(f"{path} not found; {_metadata_remedy(raw, split)}")


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


def _items(raw: Path, keys):
    for key in keys:
        path = image_path(raw, key)
        yield key, staging.decode_rgb(path, path, _images_remedy(raw, path.parent.name))


def prepare(raw_dir, out_dir, views: dict, limit=None, expected_counts=None) -> dict:
    """Resize and shard COCO 2014 with StackGAN's embeddings; returns the manifest written.

    views: as in cub.prepare (mode "crop" keeps the whole image). limit: images per split
    (spread over classes; without class_info: the first `limit`). expected_counts: checked
    when limit is None.
    """
    raw, out_dir = Path(raw_dir), Path(out_dir)
    views = check_views(views)
    staging.check_limit(limit)
    staging.check_output(out_dir)
    check_layout(raw)
    with_captions = (raw / "annotations").is_dir()
    tables, metas = {}, {}
    for split in SPLITS:
        meta = staging.read_embedding_metadata(raw / split, _metadata_remedy(raw, split))
        check_count(split, len(meta["keys"]), expected_counts, limit, raw / split / "filenames.pickle")
        _check_keys(raw, split, meta)
        if limit is not None:
            meta = staging.subset(meta, spread_selection(meta["class_ids"], limit))
        missing = next((p for p in (image_path(raw, k) for k in meta["keys"]) if not p.is_file()), None)
        if missing is not None:
            raise UserError(f"{missing} not found (listed in {raw / split / 'filenames.pickle'}); "
                            f"{_images_remedy(raw, missing.parent.name)}")
        if with_captions:
            meta["captions"] = _captions(raw, split, meta["keys"], tables)
        metas[split] = meta

    def write(tmp: Path) -> dict:
        for split, meta in metas.items():
            staging.write_split(tmp / split, split, meta, _items(raw, meta["keys"]), views)
        return {"dataset": "coco", "limit": limit, "views": views,
                "crop": "none: whole image",
                "class_info": {s: "class_info.pickle" if m["class_info"] else "absent: one class per image"
                               for s, m in metas.items()},
                "splits": {split: staging.split_summary(meta) for split, meta in metas.items()}}

    sources = {f"{s}/{f}": raw / s / f for s in SPLITS
               for f in ("filenames.pickle", "class_info.pickle", "char-CNN-RNN-embeddings.pickle")}
    sources.update({str(p.relative_to(raw)): p for p in tables})
    return staging.commit(out_dir, write, sources)
