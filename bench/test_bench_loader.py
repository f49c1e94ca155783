"""Loader speed: prepared uint8 shards vs decoding each JPEG per item as the reference loaders do.

Both produce the same thing per item: a 64 px random crop (+ flip) of the bbox-cropped image
scaled to shorter side 76, plus 32 and 16 px resizes of that crop, as tensors in [-1, 1].
Run with `pytest bench/test_bench_loader.py`; images/s = ITEMS / mean time.
"""

import numpy as np
import pytest

from stackgan.data import cub, synthetic
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
    table = cub.read_image_table(raw / "CUB_200_2011")
    spec = {"mode": "short", "size": 76, "resample": "bilinear"}

    def item(i, rng):  # V2 get_imgs: open the JPEG, bbox crop, Scale(76), then crop/flip/resize
        rel, bbox = table[split.keys[i]]
        img = cub.load_rgb(raw / "CUB_200_2011" / "images" / rel)
        scaled = cub.make_view(img.crop(cub.bbox_crop_box(bbox, *img.size)), spec)
        return crop_flip_resize(scaled, rng, IMSIZES, True)

    def run():
        return [item(i, np.random.default_rng([0, 0, i])) for i in range(ITEMS)]

    benchmark(run)
    benchmark.extra_info["images_per_s"] = ITEMS / benchmark.stats.stats.mean
