"""`prepare` for MNIST from the four official IDX files (spec sgan-reference.md §5).

IDX: a big-endian header (magic 0x00000803 + count, rows, cols for images; magic 0x00000801 +
count for labels) followed by uint8 data; the official files are gzipped. Uncompressed copies
(the names without .gz) are accepted too. Images are stored as 28x28x3 with three equal
channels (shards hold RGB); the SGAN dataset keeps one. View `native28`.

The reference reads improved-gan's mnist.npz (train 50k + valid 10k = these 60k train images).
"""

import gzip
import struct
import zlib
from pathlib import Path

import numpy as np

from stackgan.data.labelled import check_count, select, write_prepared
from stackgan.errors import UserError

FILES = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
         "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}
IMAGE_MAGIC, LABEL_MAGIC = 2051, 2049
URL = "https://ossci-datasets.s3.amazonaws.com/mnist/"


def _locate(raw: Path, name: str) -> Path:
    for candidate in (raw / f"{name}.gz", raw / name):
        if candidate.is_file():
            return candidate
    raise UserError(f"{raw / (name + '.gz')} not found; download it from {URL} into {raw}/")


def _read(path: Path) -> bytes:
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as f:
                return f.read()
        return path.read_bytes()
    except (OSError, EOFError, zlib.error) as err:
        raise UserError(f"{path} cannot be decompressed ({type(err).__name__}); it is corrupt or "
                        f"truncated, re-download it from {URL}") from None


def read_idx(path: Path, magic: int) -> np.ndarray:
    data = _read(path)
    dims = 3 if magic == IMAGE_MAGIC else 1
    header = 4 * (1 + dims)
    if len(data) < header or struct.unpack(">I", data[:4])[0] != magic:
        raise UserError(f"{path} is not an IDX file with magic number {magic}; re-download it from {URL}")
    shape = struct.unpack(f">{dims}I", data[4:header])
    need = int(np.prod(shape))
    if len(data) - header != need:
        raise UserError(f"{path} holds {len(data) - header} bytes of data, its header announces {need}; "
                        f"the file is truncated or damaged, re-download it from {URL}")
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(shape)


def prepare(raw_dir, out_dir, limit=None, expected_counts=None) -> dict:
    raw = Path(raw_dir)
    paths = {split: [_locate(raw, name) for name in names] for split, names in FILES.items()}
    splits, sources = {}, []
    for split, (image_path, label_path) in paths.items():
        images = read_idx(image_path, IMAGE_MAGIC)
        labels = read_idx(label_path, LABEL_MAGIC).astype(np.int64)
        if len(images) != len(labels):
            raise UserError(f"{image_path} has {len(images)} images but {label_path} has {len(labels)} "
                            f"labels; re-download both from {URL}")
        if labels.size and labels.max() > 9:
            raise UserError(f"{label_path} has labels above 9; re-download it from {URL}")
        check_count(split, len(labels), expected_counts, limit, image_path)
        images, labels = select(images, labels, limit)
        splits[split] = (np.repeat(images[..., None], 3, axis=3), labels)
        sources += [image_path, label_path]
    return write_prepared(out_dir, "mnist", splits, sources, limit)
