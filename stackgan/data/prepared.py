"""Read access to one split of a prepared dataset (written through stackgan.data.staging).

Layout of `<root>/<split>/`: keys.txt, class_ids.npy, [embeddings.npy], [captions.json],
[attributes.npy], and the images: with the manifest's storage "pixels" (the default when it
names none), per view images_<view>.u8 + images_<view>.idx.npy (see shards.py); with storage
"encoded", source_images.bin/.idx.npy/.json once (see encoded_shards.py). `shard(view)` gives
the same reader contract for both. `<root>/manifest.json` describes the whole dataset: each
file's sha256 and, in manifests written with the ownership marker (.stackgan-prepared), its
size. Opening a split checks its files' sizes (cheap, always); verify_prepared also checks every
hash (`--verify`, `stackgan check-data`).
"""

import json
from pathlib import Path, PurePosixPath

import numpy as np

from stackgan.data.encoded_shards import STORAGES, EncodedShardReader, EncodedViewReader
from stackgan.data.shards import ShardReader, damaged, load_npy
from stackgan.data.staging import MANIFEST, MANIFEST_FIELDS, MARKER, listing
from stackgan.errors import UserError
from stackgan.hashing import sha256_file


def _relative(name) -> bool:
    path = PurePosixPath(name) if isinstance(name, str) else None
    return path is not None and name != "" and not path.is_absolute() and ".." not in path.parts


def read_manifest(root) -> dict:
    """The manifest, checked to be one prepare wrote: the keys every reader relies on, and file
    entries that stay inside the folder."""
    path = Path(root) / MANIFEST
    if not path.is_file():
        raise UserError(f"{path} not found; run `stackgan prepare` to build the prepared dataset")
    try:
        manifest = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as err:
        raise damaged(f"{path} cannot be parsed ({str(err).splitlines()[0]})") from None
    if not isinstance(manifest, dict):
        raise damaged(f"{path} holds a {type(manifest).__name__}, not a manifest")
    dataset = manifest.get("dataset") if isinstance(manifest.get("dataset"), str) else None
    wrong = sorted(k for k, kind in MANIFEST_FIELDS.items() if not isinstance(manifest.get(k), kind))
    if wrong:
        raise damaged(f"{path} lacks {', '.join(wrong)} or holds the wrong type there", dataset)
    files, sizes = manifest["files"], manifest.get("sizes", {})
    if not all(_relative(k) and isinstance(v, str) for k, v in files.items()):
        raise damaged(f"{path}: 'files' is not a map of relative paths inside the folder to sha256s", dataset)
    # Manifests written before sizes were recorded have none: those are checked for presence only.
    if not (isinstance(sizes, dict) and sizes.keys() <= files.keys()
            and all(isinstance(v, int) and v >= 0 for v in sizes.values())):
        raise damaged(f"{path}: 'sizes' is not a map of the listed files to byte counts", dataset)
    return manifest


def _size_problem(root: Path, manifest: dict, rel: str) -> str | None:
    path = root / rel
    if not path.is_file():
        return f"{path} is missing (the manifest lists it)"
    actual, expected = path.stat().st_size, manifest.get("sizes", {}).get(rel)
    if expected is not None and actual != expected:
        return f"{path} is {actual} bytes, the manifest says {expected}"
    return None


def check_split_files(root: Path, manifest: dict, split: str):
    """The cheap check made whenever a split is opened: each of its listed files is present and of
    the recorded size, so a truncated file is named here rather than failing as a reshape later."""
    for rel in manifest["files"]:
        if rel.startswith(f"{split}/"):
            problem = _size_problem(root, manifest, rel)
            if problem:
                raise damaged(problem, manifest["dataset"])


def verify_prepared(root, hashes=True) -> dict:
    """Every file of a prepared dataset against its manifest: present, of the recorded size and,
    with hashes, of the recorded sha256; files it does not list are reported too. Returns
    {"folder", "dataset", "files", "bytes", "hashes", "problems": [one line each]}. Raises UserError
    when the manifest itself is missing or damaged."""
    root = Path(root)
    manifest = read_manifest(root)
    problems, total = [], 0
    for rel, digest in sorted(manifest["files"].items()):
        problem = _size_problem(root, manifest, rel)
        if problem is None and hashes and sha256_file(root / rel) != digest:
            problem = f"{root / rel} does not have the sha256 the manifest records"
        if problem is None:
            total += (root / rel).stat().st_size
        else:
            problems.append(problem)
    for rel in sorted(listing(root) - manifest["files"].keys() - {MANIFEST, MARKER}):
        problems.append(f"{root / rel} is not listed in the manifest")
    return {"folder": str(root), "dataset": manifest["dataset"], "files": len(manifest["files"]),
            "bytes": total, "hashes": hashes, "problems": problems}


def check_prepared(root, hashes=True) -> dict:
    """verify_prepared, raising a one-line UserError naming the first problem (and how many more)."""
    report = verify_prepared(root, hashes)
    problems = report["problems"]
    if problems:
        more = f" (and {len(problems) - 1} more problems)" if len(problems) > 1 else ""
        raise damaged(problems[0] + more, report["dataset"])
    return report


class PreparedSplit:
    """keys, class_ids, embeddings (N, C, D) float32 memory-mapped or None, captions (N lists
    of C strings) or None, attributes (N, A) int64 or None, and image(view, i)."""

    def __init__(self, root, split: str):
        self.root = Path(root)
        self.split = split
        self.manifest = read_manifest(self.root)
        self.dataset = self.manifest["dataset"]
        self.dir = self.root / split
        check_split_files(self.root, self.manifest, split)
        keys_path = self.dir / "keys.txt"
        if not keys_path.is_file():
            raise UserError(f"{keys_path} not found; split '{split}' was not prepared "
                            f"(manifest lists {sorted(self.manifest['splits'])})")
        self.keys = self._read("keys.txt", str.splitlines)
        self.class_ids = load_npy(self.dir / "class_ids.npy", self.dataset)
        self.embeddings = self._optional_npy("embeddings.npy", mmap_mode="r")
        self.attributes = self._optional_npy("attributes.npy")
        self.captions = self._read("captions.json", json.loads) if (self.dir / "captions.json").is_file() else None
        self.storage = self.manifest.get("storage", "pixels")
        if self.storage not in STORAGES:
            raise UserError(f"{self.root / MANIFEST} records storage '{self.storage}', which this "
                            f"version cannot read; re-run `stackgan prepare {self.dataset}`")
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
        return load_npy(path, self.dataset, mmap_mode) if path.is_file() else None

    def _read(self, name, parse):
        path = self.dir / name
        try:
            return parse(path.read_text())
        except (ValueError, UnicodeDecodeError) as err:
            raise damaged(f"{path} cannot be read ({str(err).splitlines()[0]})", self.dataset) from None

    @property
    def views(self) -> list[str]:
        return sorted(self.manifest.get("views", {}))

    def shard(self, view: str) -> ShardReader | EncodedViewReader:
        """The view's reader: len(), reader[i] (read-only HxWx3 uint8), index[:, 1:] (sizes)."""
        if view not in self._shards:
            pixels = self.storage == "pixels"
            self._shards[view] = ShardReader(self.dir, view, self.dataset) if pixels else self._encoded(view)
        return self._shards[view]

    def _encoded(self, view: str) -> EncodedViewReader:
        spec = self.manifest.get("views", {}).get(view)
        if spec is None:
            raise UserError(f"{self.root}: no view '{view}' was prepared (views: {', '.join(self.views)}); "
                            "add it to the dataset's views in params.yaml and run `stackgan prepare`")
        if self._source is None:
            self._source = EncodedShardReader(self.dir, self.dataset, self.keys)
        return EncodedViewReader(self._source, view, spec)

    def image(self, view: str, i: int) -> np.ndarray:
        """Image i of the stored view as a read-only (H, W, 3) uint8 array."""
        return self.shard(view)[i]

    def __len__(self) -> int:
        return len(self.keys)
