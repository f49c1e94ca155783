"""`prepare` for Oxford-102 flowers with StackGAN's flowers metadata (spec §5, V1TF layout).

Raw layout (<raw> = StackGAN-v1 TF's Data/flowers):
    <raw>/train|test/filenames.pickle        keys "jpg/image_06734" (Python-2 pickles)
    <raw>/train|test/char-CNN-RNN-embeddings.pickle   (N, 10, 1024)
    <raw>/train|test/class_info.pickle       class ids 1..102, one per key (required: the V1TF
                                             loader reads it unconditionally)
    <raw>/jpg/image_%05d.jpg                 from the official 102flowers.tgz
    [<raw>/text_c10/class_%05d/image_%05d.txt]   10 captions (Reed et al.); optional
    [<raw>/imagelabels.mat, <raw>/setid.mat] official labels, cross-checked when present
The split is the class-disjoint one the pickles define (82 train / 20 test classes). No bbox
crop: views are made from the whole image.
"""

import re
from pathlib import Path

import numpy as np
import scipy.io

from stackgan.data import staging
from stackgan.data.labelled import check_count
from stackgan.data.staging import spread_selection
from stackgan.errors import UserError

SPLITS = ("train", "test")
FLOWERS_DRIVE_ID = "0B3y_msrWZaXLaUc0UXpmcnhaVmM"
OXFORD_URL = "https://www.robots.ox.ac.uk/~vgg/data/flowers/102/"
# what loadmat raises on a damaged or foreign file, or one without the expected variable
MAT_ERRORS = (ValueError, KeyError, TypeError, OSError, NotImplementedError, scipy.io.matlab.MatReadError)
KEY = re.compile(r"jpg/image_(\d{5})")


def _metadata_remedy(raw: Path) -> str:
    return (f"download the StackGAN flowers metadata (Google Drive id {FLOWERS_DRIVE_ID}) and "
            f"unpack it so that {raw}/train/filenames.pickle exists")


def _images_remedy(raw: Path) -> str:
    return f"download 102flowers.tgz ({OXFORD_URL}) and unpack it into {raw} (giving {raw}/jpg/)"


def check_layout(raw: Path):
    if not raw.is_dir():
        raise UserError(f"raw folder {raw} not found; {_metadata_remedy(raw)}, and {_images_remedy(raw)}")
    for split in SPLITS:
        for name in ("filenames.pickle", "char-CNN-RNN-embeddings.pickle", "class_info.pickle"):
            staging.require_file(raw, f"{split}/{name}", ("flowers", "Data/flowers"), _metadata_remedy(raw))
    if not (raw / "jpg").is_dir():
        raise UserError(f"{raw / 'jpg'} not found; {_images_remedy(raw)}")


def read_official_labels(raw: Path):
    """image number -> class (1..102) from imagelabels.mat, and the set of image numbers listed
    by setid.mat (trnid, valid, tstid); None for a file that is absent."""
    labels, listed = None, None
    path = raw / "imagelabels.mat"
    if path.is_file():
        try:
            values = np.asarray(scipy.io.loadmat(path)["labels"]).reshape(-1).astype(np.int64)
        except MAT_ERRORS as err:
            raise UserError(f"{path} cannot be read as Oxford-102 labels ({type(err).__name__}); "
                            f"re-download it from {OXFORD_URL}") from None
        labels = {number: int(c) for number, c in enumerate(values, start=1)}
    path = raw / "setid.mat"
    if path.is_file():
        try:
            mat = scipy.io.loadmat(path)
            listed = {int(v) for name in ("trnid", "valid", "tstid") for v in np.asarray(mat[name]).reshape(-1)}
        except MAT_ERRORS as err:
            raise UserError(f"{path} cannot be read as Oxford-102 set ids ({type(err).__name__}); "
                            f"re-download it from {OXFORD_URL}") from None
    return labels, listed


def _check_keys(raw: Path, split: str, meta: dict, labels, listed):
    where = raw / split / "filenames.pickle"
    for key, class_id in zip(meta["keys"], meta["class_ids"]):
        match = KEY.fullmatch(key)
        if match is None:
            raise UserError(f"{where} holds key {key!r}, not of the form 'jpg/image_00001'; this is not "
                            f"the flowers metadata, {_metadata_remedy(raw)}")
        number = int(match.group(1))
        if listed is not None and number not in listed:
            raise UserError(f"{where} names image {number}, which {raw / 'setid.mat'} does not list; "
                            "the metadata and the official files are from different datasets")
        if labels is not None and labels.get(number) != class_id:
            raise UserError(f"{raw / split / 'class_info.pickle'} gives {key} class {class_id} but "
                            f"{raw / 'imagelabels.mat'} gives {labels.get(number)}; re-download both")


def _caption_name(key: str, class_id: int) -> str:
    # V1TF readCaptions: "jpg/" is replaced by the class folder "class_%05d/".
    return f"class_{class_id:05d}/{key[len('jpg/'):]}"


def _items(raw: Path, keys):
    for key in keys:
        yield key, staging.decode_rgb(raw / f"{key}.jpg", raw / f"{key}.jpg", _images_remedy(raw))


def prepare(raw_dir, out_dir, views: dict, limit=None, expected_counts=None, text_dim=None) -> dict:
    """Resize and shard Oxford-102 with StackGAN's split; returns the manifest written to out_dir.

    views: as in cub.prepare (mode "crop" keeps the whole image). limit: images per split,
    spread over classes. expected_counts: {"train": 7034, "test": 1155}, checked when limit is None.
    text_dim: the embedding width required, as in cub.prepare.
    """
    raw, out_dir, views = staging.check_arguments(raw_dir, out_dir, views, limit)
    check_layout(raw)
    labels, listed = read_official_labels(raw)
    text_dir = raw / "text_c10" if (raw / "text_c10").is_dir() else None
    metas = {split: staging.read_embedding_metadata(raw / split, _metadata_remedy(raw), text_dim) for split in SPLITS}
    for split, meta in metas.items():
        check_count(split, len(meta["keys"]), expected_counts, limit, raw / split / "filenames.pickle")
        _check_keys(raw, split, meta, labels, listed)
    shared = set(metas["train"]["class_ids"].tolist()) & set(metas["test"]["class_ids"].tolist())
    if shared:
        raise UserError(f"{raw / 'train' / 'class_info.pickle'} and {raw / 'test' / 'class_info.pickle'} "
                        f"share classes {sorted(shared)[:5]}; the split must be class-disjoint, "
                        f"{_metadata_remedy(raw)}")
    for split, meta in metas.items():
        if limit is not None:
            meta = metas[split] = staging.subset(meta, spread_selection(meta["class_ids"], limit))
        if text_dir is not None:
            meta["captions"] = [staging.read_captions(text_dir, _caption_name(k, int(c)), meta["embeddings"].shape[1])
                                for k, c in zip(meta["keys"], meta["class_ids"])]

    def write(tmp: Path) -> dict:
        for split, meta in metas.items():
            staging.write_split(tmp / split, split, meta, _items(raw, meta["keys"]), views)
        return {"dataset": "oxford102", "limit": limit, "views": views,
                "crop": "none: whole image (flowers have no bounding boxes)",
                "label_check": [name for name, v in (("imagelabels.mat", labels), ("setid.mat", listed))
                                if v is not None],
                "splits": {split: staging.split_summary(meta) for split, meta in metas.items()}}

    sources = {rel: raw / rel for rel in ("imagelabels.mat", "setid.mat",
               *(f"{s}/{f}" for s in SPLITS
                 for f in ("filenames.pickle", "class_info.pickle", "char-CNN-RNN-embeddings.pickle")))}
    return staging.commit(out_dir, write, sources)
