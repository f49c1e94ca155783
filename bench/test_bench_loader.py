"""Loader speed: prepared uint8 shards vs decoding each JPEG per item as the reference loaders do.

Both produce the same thing per item: a 64 px random crop (+ flip) of the bbox-cropped image
scaled to shorter side 76, plus 32 and 16 px resizes of that crop, as tensors in [-1, 1].
The LSUN cases compare the two storages of a prepared split (pixels: uint8 views; encoded: the
lmdb's webp bytes, decoded and resized per item) on LSUN-like 256 px webp scenes, for the v1
Stage-I view (sq76 -> 64) and the v2 view (short304 -> 256, 128, 64); their items are identical.
Run with `pytest bench/test_bench_loader.py`; images/s = ITEMS / mean time.
"""

import io

import lmdb
import numpy as np
import pytest
from PIL import Image

from stackgan.data import cub, lsun, synthetic, views
from stackgan.data.loader import ImageOnlyDataset, crop_flip_resize
from stackgan.data.prepared import PreparedSplit

IMSIZES = [16, 32, 64]
ITEMS = 40


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("bench_loader")
    raw = synthetic.generate(root / "raw", num_images=ITEMS + 20, seed=0)
    cub.prepare(raw, root / "prepared", {"short76": {"mode": "short", "size": 76, "resample": "bilinear"}})
    return raw, PreparedSplit(root / "prepared", "train")


def test_prepared_shards(benchmark, dataset):
    _, split = dataset
    data = ImageOnlyDataset(split, "short76", IMSIZES)

    def run():
        return [data[i] for i in range(ITEMS)]

    benchmark(run)
    benchmark.extra_info["images_per_s"] = ITEMS / benchmark.stats.stats.mean


def test_decode_jpeg_per_item(benchmark, dataset):
    raw, split = dataset
    table = cub.read_image_rows(raw / "CUB_200_2011")
    spec = {"mode": "short", "size": 76, "resample": "bilinear"}

    def item(i, rng):  # V2 get_imgs: open the JPEG, bbox crop, Scale(76), then crop/flip/resize
        rel, bbox, _ = table[split.keys[i]]
        img = cub.load_rgb(raw / "CUB_200_2011" / "images" / rel)
        scaled = views.make_view(img.crop(cub.bbox_crop_box(bbox, *img.size)), spec)
        return crop_flip_resize(scaled, rng, IMSIZES, True)

    def run():
        return [item(i, np.random.default_rng([0, 0, i])) for i in range(ITEMS)]

    benchmark(run)
    benchmark.extra_info["images_per_s"] = ITEMS / benchmark.stats.stats.mean


LSUN_VIEWS = {"sq76": {"mode": "square", "size": 76, "resample": "bicubic"},
              "short304": {"mode": "short", "size": 304, "resample": "bilinear"}}
LSUN_CASES = {"sq76": [64], "short304": [64, 128, 256]}


def lsun_scene(seed: int) -> bytes:
    """A 256 px-high webp (quality 75, LSUN's export setting) of smooth colour plus noise."""
    rng = np.random.default_rng(seed)
    width = int(rng.choice([256, 341, 384]))
    y, x = np.mgrid[0:256, 0:width]
    tint = rng.integers(0, 256, 3)
    base = (np.stack([x, y, x + y], axis=-1) * rng.uniform(0.3, 1.0, 3) + tint) % 256
    pixels = np.clip(base + rng.normal(0, 12, base.shape), 0, 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, "WEBP", quality=75)
    return buf.getvalue()


@pytest.fixture(scope="module")
def lsun_storages(tmp_path_factory):
    root = tmp_path_factory.mktemp("bench_lsun")
    db = root / "raw" / "bedroom_train_lmdb"
    db.mkdir(parents=True)
    env = lmdb.open(str(db), map_size=1 << 26)
    with env.begin(write=True) as txn:
        for k in range(ITEMS):
            txn.put(f"{k:040x}".encode(), lsun_scene(k))
    env.close()
    for storage in ("pixels", "encoded"):
        lsun.prepare(root / "raw", root / storage, LSUN_VIEWS, storage=storage)
    return {storage: PreparedSplit(root / storage, "train") for storage in ("pixels", "encoded")}


@pytest.mark.parametrize("view", sorted(LSUN_CASES))
@pytest.mark.parametrize("storage", ["pixels", "encoded"])
def test_lsun_storage(benchmark, lsun_storages, storage, view):
    data = ImageOnlyDataset(lsun_storages[storage], view, LSUN_CASES[view])

    def run():
        return [data[i] for i in range(ITEMS)]

    benchmark(run)
    benchmark.extra_info["images_per_s"] = ITEMS / benchmark.stats.stats.mean
