"""Image shards: many variable-size HxWx3 uint8 images in one flat file plus an index.

`images_<view>.u8` holds every image's bytes back to back (C order, RGB); `images_<view>.idx.npy`
is int64 (N, 3) = (byte offset, height, width). The reader memory-maps the .u8 file, so
DataLoader workers share the page cache instead of each holding a copy.
"""

from pathlib import Path

import numpy as np

from stackgan.errors import UserError


def damaged(what: str, dataset=None) -> UserError:
    """The one-line error for prepared data that no longer matches what prepare wrote."""
    return UserError(f"{what}; the prepared data is damaged: run `stackgan prepare {dataset or '<dataset>'}` "
                     "again (or `dvc repro`)")


def load_npy(path: Path, dataset=None, mmap_mode=None) -> np.ndarray:
    """np.load with a truncated or foreign file named as damage (allow_pickle stays False)."""
    try:
        return np.load(path, mmap_mode=mmap_mode)
    except (ValueError, EOFError) as err:
        raise damaged(f"{path} cannot be read as a numpy array ({err})", dataset) from None


def load_index(path: Path, columns: int, dataset=None, mmap_mode=None) -> np.ndarray:
    """A shard index: int64 (N, columns) of non-negative offsets, lengths and sizes."""
    index = load_npy(path, dataset, mmap_mode)
    if index.ndim != 2 or index.shape[1] != columns or index.dtype != np.int64 or (index < 0).any():
        raise damaged(f"{path} is not an index of non-negative int64 (N, {columns}) entries "
                      f"(got {index.dtype} {index.shape})", dataset)
    return index


def check_packed(data_path: Path, offsets, lengths, index_path: Path, dataset=None):
    """The writers store items back to back, so the index must tile the data file exactly: a
    truncated shard fails when it is opened, not as a reshape error at some later item."""
    lengths = np.asarray(lengths, dtype=np.int64)
    starts = np.cumsum(lengths) - lengths
    expected, actual = int(lengths.sum()), data_path.stat().st_size
    if not np.array_equal(np.asarray(offsets), starts) or actual != expected:
        raise damaged(f"{data_path} is {actual} bytes, its index {index_path.name} describes {expected}", dataset)


def shard_paths(split_dir, view: str) -> tuple[Path, Path]:
    split_dir = Path(split_dir)
    return split_dir / f"images_{view}.u8", split_dir / f"images_{view}.idx.npy"


def map_bytes(path: Path) -> np.ndarray:
    """A read-only uint8 memory map of a file (numpy cannot map an empty one)."""
    if path.stat().st_size == 0:
        return np.zeros(0, dtype=np.uint8)
    return np.memmap(path, dtype=np.uint8, mode="r")


class AppendingWriter:
    """Context-manager behaviour of the shard writers: `close()` (which writes the index) only
    when the block succeeded; after an error just the data file is closed, and the caller's
    staging folder is discarded whole."""

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is None:
            self.close()
        else:
            self._file.close()


class ShardWriter(AppendingWriter):
    """Append images in order; `close()` writes the index. Use as a context manager."""

    def __init__(self, split_dir, view: str):
        self.data_path, self.index_path = shard_paths(split_dir, view)
        self._file = open(self.data_path, "wb")
        self._index: list[tuple[int, int, int]] = []
        self._offset = 0

    def append(self, image: np.ndarray):
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(f"shard images must be HxWx3 uint8, got {image.dtype} {image.shape}")
        data = np.ascontiguousarray(image).tobytes()
        self._file.write(data)
        self._index.append((self._offset, image.shape[0], image.shape[1]))
        self._offset += len(data)

    def close(self):
        self._file.close()
        np.save(self.index_path, np.array(self._index, dtype=np.int64).reshape(-1, 3))


class ShardReader:
    """Random access to a shard; `reader[i]` is a read-only (H, W, 3) uint8 view."""

    def __init__(self, split_dir, view: str, dataset=None):
        self.data_path, self.index_path = shard_paths(split_dir, view)
        if not self.data_path.is_file() or not self.index_path.is_file():
            raise UserError(f"{self.data_path}: no image shard for view '{view}'; "
                            "run `stackgan prepare` with this view")
        self.index = load_index(self.index_path, 3, dataset)
        check_packed(self.data_path, self.index[:, 0], self.index[:, 1] * self.index[:, 2] * 3, self.index_path,
                     dataset)
        self._data = None

    def _mapped(self) -> np.ndarray:
        # Opened lazily so the reader pickles cheaply into DataLoader worker processes.
        if self._data is None:
            self._data = map_bytes(self.data_path)
        return self._data

    def __getstate__(self):
        state = self.__dict__.copy()
        state["_data"] = None
        return state

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, i: int) -> np.ndarray:
        offset, height, width = (int(v) for v in self.index[i])
        return self._mapped()[offset:offset + height * width * 3].reshape(height, width, 3)
