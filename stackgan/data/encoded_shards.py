"""Encoded shards: each image's original encoded bytes (LSUN's webp, say), stored once per split;
every view is decoded and resized when an item is read.

`source_images.bin` holds the source bytes back to back exactly as the source gave them (no
re-encoding, so nothing is lost); `source_images.idx.npy` is int64 (N, 4) = (byte offset,
length, height, width of the decoded image). A view reader decodes image i as prepare does and
applies views.make_view, the function that fills the pixel shards of shards.py, so both storages
return identical arrays. `source_images.json` holds a probe, the hash of each view of the first
few images made at prepare time, which a reader checks once: a Pillow whose decoder or resampler
gives other pixels fails loudly instead of silently training on different images.
"""

import hashlib
import io
import json
from pathlib import Path

import numpy as np
import PIL
from PIL import Image, features

from stackgan.data.shards import AppendingWriter, check_packed, damaged, load_index, map_bytes
from stackgan.data.views import make_view
from stackgan.errors import UserError

# pixels: every view resized once at prepare and stored as uint8 (shards.py); encoded: the source
# bytes stored once, views made when read (this module): slower to load, far smaller on disk.
STORAGES = ("pixels", "encoded")
DECODE_ERRORS = (OSError, SyntaxError, ValueError, Image.DecompressionBombError)
PROBE_ITEMS = 4  # images hashed per view at prepare time and checked when a reader opens


def encoded_paths(split_dir) -> tuple[Path, Path, Path]:
    """(bytes, index, probe) files of a split folder."""
    split_dir = Path(split_dir)
    return (split_dir / "source_images.bin", split_dir / "source_images.idx.npy",
            split_dir / "source_images.json")


def open_rgb(source) -> Image.Image:
    """The whole image as RGB from a path or encoded bytes; DECODE_ERRORS on bad input. The one
    decode both storages use (staging.decode_rgb at prepare time, EncodedShardReader at load)."""
    with Image.open(io.BytesIO(source) if isinstance(source, (bytes, memoryview)) else source) as img:
        img.load()
        return img.convert("RGB")


def decoder_versions() -> dict:
    return {"pillow": PIL.__version__, "webp": features.version("webp"), "jpeg": features.version("jpg")}


def view_shape(spec: dict, height, width):
    """(height, width) of make_view's output for sources of that size (ints or int arrays)."""
    if spec["mode"] == "square":
        size = spec["size"]
        return np.broadcast_to(size, np.shape(height)), np.broadcast_to(size, np.shape(width))
    if spec["mode"] == "short":
        size = spec["size"]
        h, w = np.asarray(height, dtype=np.int64), np.asarray(width, dtype=np.int64)
        # make_view's int(size * h / w) truncates a float64 quotient; so does this.
        portrait = (size * h / np.maximum(w, 1)).astype(np.int64)
        landscape = (size * w / np.maximum(h, 1)).astype(np.int64)
        untouched = np.minimum(w, h) == size
        return (np.where(untouched, h, np.where(w < h, portrait, size)),
                np.where(untouched, w, np.where(w < h, size, landscape)))
    return height, width  # crop: stored as given


def _probe_hash(image: np.ndarray, digest):
    digest.update(np.asarray(image.shape, dtype=np.int64).tobytes())
    digest.update(np.ascontiguousarray(image).tobytes())


class EncodedShardWriter(AppendingWriter):
    """Append (source bytes, decoded RGB image) in order; `close()` writes index and probe."""

    def __init__(self, split_dir, views: dict):
        self.data_path, self.index_path, self.probe_path = encoded_paths(split_dir)
        self.views = views
        self._file = open(self.data_path, "wb")  # noqa: SIM115 -- closed by close() / __exit__
        self._index: list[tuple[int, int, int, int]] = []
        self._offset = 0
        self._probe = {name: hashlib.sha256() for name in views}

    def append(self, data: bytes, image: Image.Image):
        if image.mode != "RGB":
            raise ValueError(f"encoded shards index RGB decodes, got mode {image.mode}")
        self._file.write(data)
        self._index.append((self._offset, len(data), image.height, image.width))
        self._offset += len(data)
        if len(self._index) <= PROBE_ITEMS:
            for name, spec in self.views.items():
                _probe_hash(make_view(image, spec), self._probe[name])

    def close(self):
        self._file.close()
        np.save(self.index_path, np.array(self._index, dtype=np.int64).reshape(-1, 4))
        probe = {"items": min(PROBE_ITEMS, len(self._index)), "decoder": decoder_versions(),
                 "views": {name: digest.hexdigest() for name, digest in self._probe.items()}}
        self.probe_path.write_text(json.dumps(probe, indent=2, sort_keys=True) + "\n")


class EncodedShardReader:
    """Random access to a split's source images: `decode(i)` is image i as an RGB PIL image.
    Memory maps open lazily, so the reader pickles cheaply into DataLoader worker processes."""

    def __init__(self, split_dir, dataset=None, keys=None):
        self.data_path, self.index_path, self.probe_path = encoded_paths(split_dir)
        self.keys = keys
        self.remedy = f"re-run `stackgan prepare {dataset or '<dataset>'}` to rebuild {Path(split_dir).parent}"
        for path in (self.data_path, self.index_path, self.probe_path):
            if not path.is_file():
                raise UserError(f"{path} not found; the prepared split is incomplete, {self.remedy}")
        self.probe = self._read_probe(dataset)
        index = load_index(self.index_path, 4, dataset, mmap_mode="r")
        check_packed(self.data_path, index[:, 0], index[:, 1], self.index_path, dataset)
        self._index = index
        self._data = None

    def _read_probe(self, dataset) -> dict:
        try:
            probe = json.loads(self.probe_path.read_text())
        except (ValueError, UnicodeDecodeError):
            probe = None
        if not (isinstance(probe, dict) and isinstance(probe.get("items"), int)
                and isinstance(probe.get("views"), dict) and "decoder" in probe):
            raise damaged(f"{self.probe_path} is not the probe record prepare writes", dataset)
        return probe

    def __getstate__(self):
        state = self.__dict__.copy()
        state["_index"] = state["_data"] = None
        return state

    @property
    def index(self) -> np.ndarray:
        if self._index is None:
            self._index = np.load(self.index_path, mmap_mode="r")
        return self._index

    def _mapped(self) -> np.ndarray:
        if self._data is None:
            self._data = map_bytes(self.data_path)
        return self._data

    def __len__(self) -> int:
        return len(self.index)

    def _where(self, i: int) -> str:
        key = f" (key {self.keys[i]})" if self.keys is not None else ""
        return f"{self.data_path} item {i}{key}"

    def encoded(self, i: int) -> bytes:
        offset, length = (int(v) for v in self.index[i, :2])
        data = self._mapped()[offset:offset + length]
        if len(data) != length:
            raise UserError(f"{self._where(i)} is cut short ({len(data)} of {length} bytes stored); "
                            f"the shard file is truncated, {self.remedy}")
        return data.tobytes()

    def decode(self, i: int) -> Image.Image:
        i = int(i)
        if not -len(self) <= i < len(self):
            raise IndexError(f"item {i} of {len(self)} in {self.data_path}")
        i %= len(self)
        try:
            image = open_rgb(self.encoded(i))
        except DECODE_ERRORS as err:
            reason = str(err).replace("\n", " ")
            raise UserError(f"{self._where(i)} cannot be decoded ({reason}); the stored image is "
                            f"corrupt, {self.remedy}") from None
        height, width = (int(v) for v in self.index[i, 2:])
        if (image.height, image.width) != (height, width):
            raise UserError(f"{self._where(i)} decodes to {image.height}x{image.width}, but the index "
                            f"records {height}x{width}; the shard is damaged, {self.remedy}")
        return image

    def check_view(self, name: str, spec: dict):
        """Fail unless this Pillow reproduces the probe hashed for view `name` at prepare time."""
        expected = self.probe["views"].get(name)
        if expected is None:
            raise UserError(f"{self.probe_path} has no probe for view '{name}'; the prepared split "
                            f"does not match its manifest, {self.remedy}")
        digest = hashlib.sha256()
        for i in range(int(self.probe["items"])):
            _probe_hash(make_view(self.decode(i), spec), digest)
        if digest.hexdigest() != expected:
            raise UserError(f"{self.data_path}: view '{name}' of the first {self.probe['items']} images "
                            f"differs from what prepare made: this Pillow ({decoder_versions()}) decodes "
                            f"or resizes differently from the one used then ({self.probe['decoder']}); "
                            f"install that version or {self.remedy}")


class EncodedViewReader:
    """One view of an encoded shard, with ShardReader's contract: `reader[i]` is a read-only
    (H, W, 3) uint8 array, identical to what a pixel shard of the view would hold, and `index`
    is int64 (N, 3) = (byte offset of the source bytes, view height, view width)."""

    def __init__(self, source: EncodedShardReader, name: str, spec: dict):
        source.check_view(name, spec)
        self.source = source
        self.name = name
        self.spec = spec
        self._index = None

    def __getstate__(self):
        state = self.__dict__.copy()
        state["_index"] = None  # recomputed on demand; workers only read items
        return state

    @property
    def index(self) -> np.ndarray:
        if self._index is None:
            src = np.asarray(self.source.index)
            height, width = view_shape(self.spec, src[:, 2], src[:, 3])
            self._index = np.stack([src[:, 0], height, width], axis=1).astype(np.int64)
        return self._index

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, i: int) -> np.ndarray:
        image = make_view(self.source.decode(i), self.spec)
        image.flags.writeable = False
        return image
