"""`prepare` for CIFAR-10 from its official python version (spec sgan-reference.md §5).

Raw input, either form in <raw>/: the unpacked `cifar-10-batches-py/` folder or the archive
`cifar-10-python.tar.gz` itself. Each batch is a Python-2 pickle of a dict with `data`
(10000 x 3072 uint8, channel-planar R, G, B rows of 32x32) and `labels` (10000 ints).
Train = data_batch_1..5 (50,000), test = test_batch (10,000); view `native32`.
"""

import tarfile
import zlib
from pathlib import Path

import numpy as np

from stackgan import untrusted
from stackgan.data.labelled import check_count, select, write_prepared
from stackgan.errors import UserError

FOLDER = "cifar-10-batches-py"
ARCHIVE = "cifar-10-python.tar.gz"
BATCHES = {"train": [f"data_batch_{i}" for i in range(1, 6)], "test": ["test_batch"]}
URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
BATCH_REMEDY = "it is truncated or not a CIFAR-10 batch, re-download cifar-10-python.tar.gz"


def _remedy(raw):
    return f"download {URL} into {raw}/ (or unpack it there)"


def _field(batch: dict, name: str):
    # Python-2 pickles give str keys under latin1 and bytes keys under encoding="bytes".
    return batch[name] if name in batch else batch.get(name.encode())


def _unpickle(source, where: str):
    """A batch file (a Path) or archive member (its bytes), through the restricted unpickler."""
    if isinstance(source, Path):
        return untrusted.load_pickle(source, BATCH_REMEDY)
    return untrusted.load_pickle(where, BATCH_REMEDY, data=source)


def decode_batch(source, where: str):
    """One pickled batch (a Path or bytes) -> (uint8 (N, 32, 32, 3), int64 (N,))."""
    batch = _unpickle(source, where)
    if not isinstance(batch, dict) or _field(batch, "data") is None or _field(batch, "labels") is None:
        raise UserError(f"{where} is not a CIFAR-10 batch (no data/labels); re-download cifar-10-python.tar.gz")
    try:
        pixels, labels = np.asarray(_field(batch, "data")), np.asarray(_field(batch, "labels"))
    except (ValueError, TypeError, OverflowError):  # ragged or unconvertible lists
        raise UserError(f"{where} holds data or labels that are not arrays; {BATCH_REMEDY}") from None
    if pixels.dtype != np.uint8 or pixels.ndim != 2 or pixels.shape[1] != 3072 or labels.dtype.kind not in "iu" \
            or labels.ndim != 1 or len(pixels) != len(labels):
        raise UserError(f"{where} holds data {pixels.dtype} {pixels.shape} and labels {labels.dtype} "
                        f"{labels.shape}, expected N x 3072 uint8 and N integers; re-download cifar-10-python.tar.gz")
    if len(labels) and (labels.min() < 0 or labels.max() > 9):
        raise UserError(f"{where} has labels outside 0..9; re-download cifar-10-python.tar.gz")
    return pixels.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1).copy(), labels.astype(np.int64)


def _read_batches(raw: Path):
    """{batch name: its file, or its bytes read from the archive}, the source files, and where they are."""
    folder, archive = raw / FOLDER, raw / ARCHIVE
    names = [n for split in BATCHES.values() for n in split]
    if folder.is_dir():
        missing = [n for n in names if not (folder / n).is_file()]
        if missing:
            raise UserError(f"{folder / missing[0]} is missing; {_remedy(raw)}")
        return {n: folder / n for n in names}, [folder / n for n in names], folder
    if not archive.is_file():
        raise UserError(f"neither {folder}/ nor {archive} exists; {_remedy(raw)}")
    try:
        with tarfile.open(archive, "r:gz") as tar:
            out = {}
            for n in names:
                try:
                    member = tar.extractfile(f"{FOLDER}/{n}")
                except KeyError:
                    member = None
                if member is None:
                    raise UserError(f"{archive} has no {FOLDER}/{n}; {_remedy(raw)}")
                out[n] = member.read()
    except (tarfile.TarError, EOFError, OSError, zlib.error) as err:
        raise UserError(f"{archive} cannot be read ({type(err).__name__}: {err}); it is corrupt or "
                        f"truncated, {_remedy(raw)}") from None
    return out, [archive], archive


def prepare(raw_dir, out_dir, limit=None, expected_counts=None) -> dict:
    raw = Path(raw_dir)
    data, sources, where = _read_batches(raw)
    splits = {}
    for split, names in BATCHES.items():
        parts = [decode_batch(data[n], f"{where}/{n}" if where.is_dir() else f"{where}:{FOLDER}/{n}")
                 for n in names]
        images = np.concatenate([p[0] for p in parts])
        labels = np.concatenate([p[1] for p in parts])
        check_count(split, len(labels), expected_counts, limit, where)
        splits[split] = select(images, labels, limit)
    return write_prepared(out_dir, "cifar10", splits, sources, limit)
