"""`prepare` for datasets in StackGAN's CUB layout: real CUB-200-2011 with the authors' birds
metadata, and the embedded synthetic dataset (same layout, plus ground-truth attributes).

Raw layout (StackGAN-v2 data/birds; reference spec §5):
    <raw>/train|test/filenames.pickle, char-CNN-RNN-embeddings.pickle, [class_info.pickle]
    <raw>/text/<key>.txt or text_c10/ (optional)   <raw>/CUB_200_2011/images/<key>.jpg,
    <raw>/CUB_200_2011/images.txt, bounding_boxes.txt     [<raw>/synthetic_attributes.txt]
Output: the prepared format of stackgan/data/prepared.py, written by staging.py (temporary
folder renamed into place only when complete).
"""

import math
import os
import re
from pathlib import Path

from PIL import Image

from stackgan.data import staging
from stackgan.data.labelled import check_count
from stackgan.errors import UserError

SPLITS = ("train", "test")
BIRDS_DRIVE_ID = "0B3y_msrWZaXLT1BZdVdycDY5TEE"
CUB_URL = "http://www.vision.caltech.edu/visipedia/CUB-200-2011.html"
ATTRIBUTE_FILE = "synthetic_attributes.txt"


def _metadata_hint(raw: Path) -> str:
    return (f"download the StackGAN birds metadata (Google Drive id {BIRDS_DRIVE_ID}) and unpack "
            f"it so that {raw}/train/filenames.pickle exists")


def _images_hint(raw: Path) -> str:
    return f"download CUB_200_2011.tgz ({CUB_URL}) and unpack it into {raw} (giving {raw}/CUB_200_2011/images/)"


def check_layout(raw: Path):
    """Fail early, with the remedy, when the raw folder is not in StackGAN's layout."""
    if not raw.is_dir():
        raise UserError(f"raw folder {raw} not found; {_metadata_hint(raw)}, and {_images_hint(raw)}")
    for split in SPLITS:
        for name in ("filenames.pickle", "char-CNN-RNN-embeddings.pickle"):
            staging.require_file(raw, f"{split}/{name}", ("birds", "Data/birds", "data/birds"), _metadata_hint(raw))
    cub = raw / "CUB_200_2011"
    for name in ("images.txt", "bounding_boxes.txt"):
        if not (cub / name).is_file():
            if (cub / "CUB_200_2011" / name).is_file():
                raise UserError(f"{cub / name} not found but {cub / 'CUB_200_2011' / name} exists; "
                                f"the archive was unpacked one level too deep: move its contents up")
            if (raw / name).is_file():
                raise UserError(f"{cub / name} not found but {raw / name} exists; move CUB's files "
                                f"into {cub}/ (the layout is <raw>/CUB_200_2011/{name})")
            raise UserError(f"{cub / name} not found; {_images_hint(raw)}")


def _reextract(path: Path) -> str:
    return f"the file is damaged, re-extract {path.name} from CUB_200_2011.tgz"


def _read_rows(path: Path, columns: int) -> list[tuple[int, list[str]]]:
    """(line number, fields) per non-blank line."""
    rows = []
    for number, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), start=1):
        if not line.strip():
            continue
        fields = line.split()
        if len(fields) != columns:
            raise UserError(f"{path} line {number}: expected {columns} fields, got {len(fields)}; {_reextract(path)}")
        rows.append((number, fields))
    return rows


def _parse_bbox(path: Path, number: int, fields: list[str]) -> tuple[int, int, int, int]:
    try:
        values = [float(v) for v in fields]
    except ValueError:
        values = None
    if values is None or not all(math.isfinite(v) for v in values):
        raise UserError(f"{path} line {number}: {' '.join(fields)!r} is not four finite numbers; {_reextract(path)}")
    bbox = tuple(int(v) for v in values)  # the reference reads them as int
    if bbox[2] <= 0 or bbox[3] <= 0:
        raise UserError(f"{path} line {number}: box {bbox} has a width or height below 1; {_reextract(path)}")
    return bbox


def read_image_rows(cub: Path) -> dict[str, tuple[str, tuple[int, int, int, int], int]]:
    """key -> (relative image path, bbox (x, y, w, h) as ints, its line in bounding_boxes.txt);
    row i of images.txt pairs with row i of bounding_boxes.txt, as in the reference loaders."""
    boxes_path = cub / "bounding_boxes.txt"
    images = _read_rows(cub / "images.txt", 2)
    boxes = _read_rows(boxes_path, 5)
    if len(images) != len(boxes):
        raise UserError(f"{boxes_path} has {len(boxes)} rows but images.txt has "
                        f"{len(images)}; one is truncated, re-extract both from CUB_200_2011.tgz")
    table = {}
    for (_, (image_id, rel)), (number, (box_id, *box)) in zip(images, boxes):
        if image_id != box_id:
            raise UserError(f"{boxes_path} line {number}: row for image id {box_id} is paired with "
                            f"images.txt id {image_id}; the files do not match, re-extract both")
        table[os.path.splitext(rel)[0]] = (rel, _parse_bbox(boxes_path, number, box), number)
    return table


def bbox_crop_box(bbox, width: int, height: int) -> tuple[int, int, int, int]:
    """StackGAN's custom_crop box: a 1.5 x max(w, h) square around the bbox centre, clipped."""
    x, y, w, h = bbox
    r = int(0.75 * max(w, h))
    cx, cy = int((2 * x + w) / 2), int((2 * y + h) / 2)
    return max(0, cx - r), max(0, cy - r), min(width, cx + r), min(height, cy + r)


def load_rgb(path: Path) -> Image.Image:
    """A CUB image listed in images.txt, as RGB."""
    if not path.is_file():
        raise UserError(f"{path} is missing (listed in images.txt); re-extract CUB_200_2011.tgz")
    return staging.decode_rgb(path, path, "re-download and re-extract CUB_200_2011.tgz")


def read_attributes(path: Path):
    """(names, values per name, key -> ids) from synthetic_attributes.txt."""
    names, values, table = [], {}, {}
    for number, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), start=1):
        header = re.fullmatch(r"# (\w+): ((?:\d+=\S+ ?)+)", line)
        if header:
            names.append(header.group(1))
            values[header.group(1)] = [item.split("=", 1)[1] for item in header.group(2).split()]
        elif line.strip() and not line.startswith("#"):
            key, *ids = line.split()
            if len(ids) != len(names):
                raise UserError(f"{path} line {number}: {key} has {len(ids)} ids, the header names {len(names)} "
                                "attributes; regenerate the synthetic dataset")
            # an id is a position in its attribute's header list
            if not all(v.isdecimal() and int(v) < len(values[n]) for v, n in zip(ids, names)):
                raise UserError(f"{path} line {number}: ids {' '.join(ids)!r} are not all attribute value ids "
                                "listed in the header; regenerate the synthetic dataset")
            table[key] = [int(v) for v in ids]
    return names, values, table


def _per_image(raw: Path, meta: dict, attributes, text_dir) -> dict:
    """A split's attribute ids and captions ({} where the raw folder has none), in key order."""
    keys, out = meta["keys"], {}
    if attributes is not None:
        missing = [k for k in keys if k not in attributes]
        if missing:
            raise UserError(f"{raw / ATTRIBUTE_FILE} has no entry for {missing[0]}; regenerate the synthetic dataset")
        out["attributes"] = [attributes[k] for k in keys]
    if text_dir is not None:
        out["captions"] = [staging.read_captions(text_dir, k, meta["embeddings"].shape[1]) for k in keys]
    return out


def _crops(raw: Path, table: dict, keys):
    """(key, bbox crop) for each key, as the reference's custom_crop gives it."""
    boxes_path = raw / "CUB_200_2011" / "bounding_boxes.txt"
    for key in keys:
        rel, bbox, number = table[key]
        img = load_rgb(raw / "CUB_200_2011" / "images" / rel)
        (x, y, w, h), (width, height) = bbox, img.size
        box = bbox_crop_box(bbox, width, height)
        if x >= width or y >= height or x + w <= 0 or y + h <= 0:
            raise UserError(f"{boxes_path} line {number}: box {bbox} of {key} lies outside its {width}x{height} "
                            f"image; {_reextract(boxes_path)}")
        if box[2] <= box[0] or box[3] <= box[1]:
            raise UserError(f"{boxes_path} line {number}: box {bbox} of {key} crops nothing from its "
                            f"{width}x{height} image; {_reextract(boxes_path)}")
        yield key, img.crop(box)


def prepare(raw_dir, out_dir, views: dict, limit=None, expected_counts=None, dataset=None, text_dim=None) -> dict:
    """Crop, resize and shard a CUB-layout dataset; returns the manifest written to out_dir.

    views: {name: {"mode": "short"|"square"|"crop", "size": int, "resample": "bilinear"|...}}.
    limit: keep this many images per split, spread over classes (for CI-sized runs).
    expected_counts: {"train": 8855, "test": 2933}; checked when limit is None.
    dataset: the name recorded in the manifest (default "synthetic" when the raw folder holds
    synthetic_attributes.txt, else "cub").
    text_dim: the embedding width required (staging.TEXT_DIM for the authors' pickles; None: any).
    """
    raw, out_dir, views = staging.check_arguments(raw_dir, out_dir, views, limit)
    check_layout(raw)
    table = read_image_rows(raw / "CUB_200_2011")
    attr_path = raw / ATTRIBUTE_FILE
    attr_names, attr_values, attributes = (read_attributes(attr_path) if attr_path.is_file()
                                           else (None, None, None))
    # V2 reads text/, StackGAN-v1 TF text_c10/; captions are optional (never used in training)
    text_dir = next((raw / d for d in ("text", "text_c10") if (raw / d).is_dir()), None)
    remedy = f"re-download the metadata (Google Drive id {BIRDS_DRIVE_ID})"
    metas = {split: staging.read_embedding_metadata(raw / split, remedy, text_dim) for split in SPLITS}
    for split, meta in metas.items():
        check_count(split, len(meta["keys"]), expected_counts, limit, raw / split / "filenames.pickle")
        unknown = [k for k in meta["keys"] if k not in table]
        if unknown:
            raise UserError(f"{raw / split / 'filenames.pickle'} names {unknown[0]}, which "
                            f"{raw / 'CUB_200_2011' / 'images.txt'} does not list; {_images_hint(raw)}")
        if limit is not None:
            meta = staging.subset(meta, staging.spread_selection(meta["class_ids"], limit))
        metas[split] = {**meta, **_per_image(raw, meta, attributes, text_dir)}

    def write(tmp):
        for split, meta in metas.items():
            staging.write_split(tmp / split, split, meta, _crops(raw, table, meta["keys"]), views)
        return {
            "dataset": dataset or ("synthetic" if attributes is not None else "cub"),
            "limit": limit,
            "crop": "StackGAN custom_crop: 1.5 x max(bbox w, h) square around the bbox centre, clipped",
            "views": views,
            "splits": {split: {**staging.split_summary(meta), "class_info": staging.class_info_source(meta)}
                       for split, meta in metas.items()},
            "attributes": None if attributes is None else {"names": attr_names, "values": attr_values},
        }

    metadata = ["CUB_200_2011/images.txt", "CUB_200_2011/bounding_boxes.txt", ATTRIBUTE_FILE,
                *(f"{s}/{f}" for s in SPLITS
                  for f in ("filenames.pickle", "class_info.pickle", "char-CNN-RNN-embeddings.pickle"))]
    # base: CUB-layout manifests have never named a storage; kept so prepared data stays identical
    return staging.commit(out_dir, write, {rel: raw / rel for rel in metadata}, base={"format_version": 1})
