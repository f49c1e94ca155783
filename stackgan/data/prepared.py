"""Read access to one split of a prepared dataset (written through stackgan.data.staging).

Layout of `<root>/<split>/`: keys.txt, class_ids.npy, [embeddings.npy], [captions.json],
[attributes.npy], and the images: with the manifest's storage "pixels" (the default when it
names none), per view images_<view>.u8 + images_<view>.idx.npy (see shards.py); with storage
"encoded", source_images.bin/.idx.npy/.json once (see encoded_shards.py). `shard(view)` gives
the same reader contract for both. `<root>/manifest.json` describes the whole dataset.
"""

import json
from pathlib import Path

import numpy as np

from stackgan.data.encoded_shards import STORAGES, EncodedShardReader, EncodedViewReader
from stackgan.data.shards import ShardReader
from stackgan.errors import UserError


def read_manifest(root) -> dict:
    path = Path(root) / "manifest.json"
    if not path.is_file():
        raise UserError(f"{path} not found; run `stackgan prepare` to build the prepared dataset")
    return json.loads(path.read_text())


class PreparedSplit:
    """keys, class_ids, embeddings (N, C, D) float32 memory-mapped or None, captions (N lists
    of C strings) or None, attributes (N, A) int64 or None, and image(view, i)."""

    def __init__(self, root, split: str):
        self.root = Path(root)
        self.split = split
        self.manifest = read_manifest(self.root)
        self.dir = self.root / split
        keys_path = self.dir / "keys.txt"
        if not keys_path.is_file():
            raise UserError(f"{keys_path} not found; split '{split}' was not prepared "
                            f"(manifest lists {sorted(self.manifest.get('splits', {}))})")
        self.keys = keys_path.read_text().splitlines()
        self.class_ids = np.load(self.dir / "class_ids.npy")
        self.embeddings = self._optional_npy("embeddings.npy", mmap_mode="r")
        self.attributes = self._optional_npy("attributes.npy")
        captions_path = self.dir / "captions.json"
        self.captions = json.loads(captions_path.read_text()) if captions_path.is_file() else None
        self.storage = self.manifest.get("storage", "pixels")
        if self.storage not in STORAGES:
            raise UserError(f"{self.root / 'manifest.json'} records storage '{self.storage}', which this "
                            f"version cannot read; re-run `stackgan prepare {self.manifest.get('dataset', '')}`")
        self._source: EncodedShardReader | None = None
        self._shards: dict[str, ShardReader | EncodedViewReader] = {}

    def __getstate__(self):
        # Pickled into spawn/forkserver DataLoader workers: reopen the memory map there
        # instead of copying every embedding into each worker.
        state = self.__dict__.copy()
        state["embeddings"] = None
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        self.embeddings = self._optional_npy("embeddings.npy", mmap_mode="r")

    def _optional_npy(self, name, mmap_mode=None):
        path = self.dir / name
        return np.load(path, mmap_mode=mmap_mode) if path.is_file() else None

    @property
    def views(self) -> list[str]:
        return sorted(self.manifest.get("views", {}))

    def shard(self, view: str) -> ShardReader | EncodedViewReader:
        """The view's reader: len(), reader[i] (read-only HxWx3 uint8), index[:, 1:] (sizes)."""
        if view not in self._shards:
            self._shards[view] = ShardReader(self.dir, view) if self.storage == "pixels" else self._encoded(view)
        return self._shards[view]

    def _encoded(self, view: str) -> EncodedViewReader:
        spec = self.manifest.get("views", {}).get(view)
        if spec is None:
            raise UserError(f"{self.root}: no view '{view}' was prepared (views: {', '.join(self.views)}); "
                            "add it to the dataset's views in params.yaml and run `stackgan prepare`")
        if self._source is None:
            self._source = EncodedShardReader(self.dir, self.manifest.get("dataset"), self.keys)
        return EncodedViewReader(self._source, view, spec)

    def image(self, view: str, i: int) -> np.ndarray:
        """Image i of the stored view as a read-only (H, W, 3) uint8 array."""
        return self.shard(view)[i]

    def __len__(self) -> int:
        return len(self.keys)
