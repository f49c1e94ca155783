"""Encoded shard storage (stackgan/data/encoded_shards.py): the source bytes kept once per split,
views made when read, identical to the pixel shards prepare would have written."""

import io
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from test_datasets_real import leftovers, make_lsun

from stackgan import config
from stackgan.data import lsun
from stackgan.data.encoded_shards import (
    PROBE_ITEMS,
    EncodedShardReader,
    EncodedShardWriter,
    encoded_paths,
    view_shape,
)
from stackgan.data.loader import ImageOnlyDataset
from stackgan.data.prepared import PreparedSplit
from stackgan.data.views import check_views, make_view
from stackgan.errors import UserError
from stackgan.prepare import prepare
from stackgan.train import EpochItems, StepBatches

PARAMS = config.load_params(Path(__file__).resolve().parents[1] / "params.yaml")
LSUN_VIEWS = PARAMS["datasets"]["lsun-bedroom"]["views"]  # short76, short304, sq76, sq304


def encode(pixels: np.ndarray, fmt: str, **kwargs) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, fmt, **kwargs)
    return buf.getvalue()


def scene(seed: int, width: int, height: int) -> np.ndarray:
    """Smooth gradients plus noise: compresses like a photo, unlike pure noise."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    base = np.stack([x * 255 // max(width - 1, 1), y * 255 // max(height - 1, 1), (x + y) % 256], axis=-1)
    return np.clip(base + rng.integers(-20, 21, base.shape), 0, 255).astype(np.uint8)


def lsun_like_sources() -> list[bytes]:
    """Encoded images of the shapes and formats an lmdb can hold: LSUN's 256 px shorter side in
    landscape / portrait / square webp, shorter sides equal to a view size (make_view leaves those
    untouched), lossless webp, greyscale JPEG and RGBA PNG (converted to RGB like prepare does)."""
    return [encode(scene(0, 341, 256), "WEBP", quality=75),
            encode(scene(1, 256, 343), "WEBP", quality=75),
            encode(scene(2, 256, 256), "WEBP", quality=75),
            encode(scene(3, 400, 304), "WEBP", quality=75),
            encode(scene(4, 76, 101), "WEBP", lossless=True),
            encode(scene(5, 300, 257)[..., 0], "JPEG", quality=90),
            encode(np.dstack([scene(6, 97, 80), np.full((80, 97), 128, np.uint8)]), "PNG")]


def make_lmdb(raw: Path, category: str, values: list[bytes]) -> list[str]:
    """An lmdb export like the official one; returns the keys in cursor (byte) order."""
    lmdb = pytest.importorskip("lmdb")
    db = raw / f"{category}_train_lmdb"
    db.mkdir(parents=True)
    env = lmdb.open(str(db), map_size=1 << 26)
    keys = [f"{(k * 7919) % 1000:040x}" for k in range(len(values))]
    with env.begin(write=True) as txn:
        for key, value in zip(keys, values):
            txn.put(key.encode(), value)
    env.close()
    return sorted(keys)


@pytest.fixture(scope="module")
def both_storages(tmp_path_factory):
    """The same lmdb prepared with storage pixels and with storage encoded."""
    root = tmp_path_factory.mktemp("storages")
    values = lsun_like_sources()
    keys = make_lmdb(root / "raw", "bedroom", values)
    by_key = dict(zip([f"{(k * 7919) % 1000:040x}" for k in range(len(values))], values))
    for storage in ("pixels", "encoded"):
        lsun.prepare(root / "raw", root / storage, LSUN_VIEWS, storage=storage)
    return (PreparedSplit(root / "pixels", "train"), PreparedSplit(root / "encoded", "train"),
            [by_key[k] for k in keys])


def test_writer_reader_round_trip_keeps_the_bytes(tmp_path):
    values = lsun_like_sources()
    views = check_views({"sq76": LSUN_VIEWS["sq76"]})
    with EncodedShardWriter(tmp_path, views) as writer:
        for value in values:
            writer.append(value, Image.open(io.BytesIO(value)).convert("RGB"))
    reader = EncodedShardReader(tmp_path, "lsun-bedroom")
    assert len(reader) == len(values)
    assert encoded_paths(tmp_path)[0].read_bytes() == b"".join(values)
    offsets = np.cumsum([0] + [len(v) for v in values[:-1]])
    np.testing.assert_array_equal(reader.index[:, 0], offsets)
    for i, value in enumerate(values):
        assert reader.encoded(i) == value
        size = Image.open(io.BytesIO(value)).size
        assert tuple(reader.index[i, 2:]) == (size[1], size[0]) == (reader.decode(i).height, reader.decode(i).width)
    with pytest.raises(IndexError):
        reader.decode(len(values))
    # Pickled into workers without the memory maps, which reopen on first use there.
    blob = pickle.dumps(reader)
    assert len(blob) < 2000 and pickle.loads(blob).encoded(3) == values[3]


@pytest.mark.parametrize("spec", [{"mode": "short", "size": 76}, {"mode": "short", "size": 304},
                                  {"mode": "square", "size": 76}, {"mode": "crop"}])
def test_view_shape_is_the_shape_make_view_gives(spec):
    spec = {"resample": "bilinear", **spec}
    sizes = [(256, 341), (341, 256), (256, 256), (76, 77), (77, 76), (76, 76), (304, 999), (1000, 303), (3, 7), (255, 257)]
    height, width = view_shape(spec, np.array([h for h, _ in sizes]), np.array([w for _, w in sizes]))
    for (h, w), vh, vw in zip(sizes, height, width):
        assert make_view(Image.new("RGB", (w, h)), spec).shape == (vh, vw, 3), (h, w)


def test_every_lsun_view_is_pixel_identical_to_the_uint8_shards(both_storages):
    pixels, encoded, _ = both_storages
    assert pixels.manifest["storage"] == "pixels" and encoded.manifest["storage"] == "encoded"
    assert set(pixels.views) == set(encoded.views) == {"short76", "short304", "sq76", "sq304"}
    assert not list(encoded.dir.glob("images_*")) and not list(pixels.dir.glob("source_images*"))
    for view in LSUN_VIEWS:
        want, got = pixels.shard(view), encoded.shard(view)
        assert len(got) == len(want) == 7
        np.testing.assert_array_equal(got.index[:, 1:], want.index[:, 1:])
        for i in range(len(want)):
            image = encoded.image(view, i)
            assert image.dtype == np.uint8 and not image.flags.writeable
            np.testing.assert_array_equal(image, pixels.image(view, i), err_msg=f"{view} item {i}")
    # ...and so are the training items built from them (crop, flip, smaller resizes).
    for view, imsizes in (("short76", [64]), ("short304", [64, 128, 256]), ("sq76", [64])):
        a, b = ImageOnlyDataset(pixels, view, imsizes, seed=5), ImageOnlyDataset(encoded, view, imsizes, seed=5)
        for i in range(len(a)):
            assert all(x.equal(y) for x, y in zip(a[i]["imgs"], b[i]["imgs"]))


def test_encoded_storage_keeps_each_source_once_byte_for_byte(both_storages):
    pixels, encoded, values = both_storages
    data_path = encoded_paths(encoded.dir)[0]
    assert data_path.read_bytes() == b"".join(values)
    assert f"train/{data_path.name}" in encoded.manifest["files"]
    encoded_size = sum(p.stat().st_size for p in encoded.dir.glob("source_images*"))
    pixel_size = sum(p.stat().st_size for p in pixels.dir.glob("images_*"))
    assert encoded_size * 10 < pixel_size


def test_prepare_from_params_and_the_training_loader(tmp_path):
    make_lsun(tmp_path / "raw", count=6)
    ds = config.dataset_config(PARAMS, "lsun-church", "ci")
    assert ds["storage"] == "encoded"
    prepare(ds, tmp_path / "raw", tmp_path / "out", limit=6)
    split = PreparedSplit(tmp_path / "out", "train")
    assert split.manifest["storage"] == "encoded" and split.manifest["dataset"] == "lsun-church"
    assert len(split) == 6 and split.storage == "encoded"

    # The loader exactly as train.py builds it, with worker processes reading the shard.
    dataset = ImageOnlyDataset(split, "short76", [16, 64], seed=2)
    sampler = StepBatches(len(dataset), 3, 0, 1, 2, 0, 4)
    loader = torch.utils.data.DataLoader(EpochItems(dataset), batch_sampler=sampler, num_workers=2)
    batches = list(loader)
    assert len(batches) == 4
    for step, batch in enumerate(batches):
        epoch = step // sampler.iters_per_epoch
        for row, index in enumerate(batch["index"].tolist()):
            dataset.set_epoch(epoch)
            want = dataset[index]["imgs"]
            assert batch["imgs"][0][row].equal(want[0]) and batch["imgs"][1][row].equal(want[1])


def test_storage_switch_is_checked(tmp_path):
    (tmp_path / "raw").mkdir()
    cub_ds = config.dataset_config(PARAMS, "cub", "ci")
    with pytest.raises(UserError, match=r"datasets.cub.storage in params.yaml is 'encoded', but layout 'cub' "
                                        r"supports only pixels storage"):
        prepare({**cub_ds, "storage": "encoded"}, tmp_path / "raw", tmp_path / "out")
    church = config.dataset_config(PARAMS, "lsun-church", "ci")
    with pytest.raises(UserError, match=r"datasets.lsun-church.storage in params.yaml is 'webp'; use one of "
                                        r"pixels, encoded"):
        prepare({**church, "storage": "webp"}, tmp_path / "raw", tmp_path / "out")
    with pytest.raises(UserError, match=r"storage must be one of pixels, encoded, got 'png'"):
        lsun.prepare(tmp_path / "raw", tmp_path / "out", LSUN_VIEWS, storage="png")
    assert not (tmp_path / "out").exists()


def prepared_church(tmp_path, count=PROBE_ITEMS + 2) -> tuple[Path, list[str]]:
    keys = list(make_lsun(tmp_path / "raw", count=count))
    lsun.prepare(tmp_path / "raw", tmp_path / "out", LSUN_VIEWS, storage="encoded")
    return tmp_path / "out", keys


def test_a_corrupt_stored_image_names_shard_item_and_remedy(tmp_path):
    out, keys = prepared_church(tmp_path)
    data_path, index_path, _ = encoded_paths(out / "train")
    index = np.load(index_path)
    last = len(keys) - 1  # past the probe, so only reading it finds the damage
    offset, length = (int(v) for v in index[last, :2])
    with open(data_path, "r+b") as f:
        f.seek(offset)
        f.write(b"\0" * length)
    split = PreparedSplit(out, "train")
    assert split.image("sq76", 0).shape == (76, 76, 3)
    with pytest.raises(UserError, match=rf"{data_path} item {last} \(key {keys[last]}\) cannot be decoded .*"
                                        rf"re-run `stackgan prepare lsun-church` to rebuild {out}"):
        split.image("short76", last)
    with pytest.raises(UserError, match=r"cannot be decoded"):
        ImageOnlyDataset(split, "short76", [64])[last]

    intact = data_path.read_bytes()
    with open(data_path, "r+b") as f:
        f.truncate(offset + length // 2)
    with pytest.raises(UserError, match=rf"{data_path} is {offset + length // 2} bytes, the manifest says "
                                        rf"{offset + length}; the prepared data is damaged"):
        PreparedSplit(out, "train")

    data_path.write_bytes(intact)
    index[0, 2] += 1  # the index no longer matches what the bytes decode to
    np.save(index_path, index)
    with pytest.raises(UserError, match=r"item 0 .* decodes to 20x24, but the index records 21x24"):
        PreparedSplit(out, "train").shard("short76")


def test_a_pillow_that_decodes_differently_is_caught(tmp_path):
    out, _ = prepared_church(tmp_path)
    probe_path = encoded_paths(out / "train")[2]
    probe = probe_path.read_text()
    assert PreparedSplit(out, "train").shard("short304") is not None
    sq = probe.split('"sq304": "')[1][:64]
    probe_path.write_text(probe.replace(sq, "0" * 64))  # as if another Pillow had made the views
    split = PreparedSplit(out, "train")
    split.image("short304", 1)
    with pytest.raises(UserError, match=r"view 'sq304' of the first 4 images differs from what prepare made.*"
                                        r"install that version or re-run `stackgan prepare lsun-church`"):
        split.image("sq304", 1)
    with pytest.raises(UserError, match=r"no view 'sq152' was prepared \(views: short304, short76, sq304, sq76\)"):
        split.shard("sq152")


def test_failed_prepare_leaves_nothing_half_written(tmp_path):
    make_lsun(tmp_path / "bad", corrupt=3)
    with pytest.raises(UserError, match=r"entry .* cannot be decoded"):
        lsun.prepare(tmp_path / "bad", tmp_path / "out", LSUN_VIEWS, storage="encoded")
    assert not (tmp_path / "out").exists() and leftovers(tmp_path) == []
    # An earlier prepared dataset in place survives a failed re-prepare untouched.
    out, _ = prepared_church(tmp_path)
    before = {p: p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}
    with pytest.raises(UserError, match=r"entry .* cannot be decoded"):
        lsun.prepare(tmp_path / "bad", out, LSUN_VIEWS, storage="encoded")
    assert {p: p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()} == before
    assert leftovers(tmp_path) == []
    assert PreparedSplit(out, "train").image("short76", 5).shape[0] == 76
