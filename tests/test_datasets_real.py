"""prepare for Oxford-102, COCO, LSUN and ImageNet on tiny fixtures in each native format, and
the unconditional loader."""

import io
import json
from pathlib import Path

import numpy as np
import pytest
import scipy.io
from PIL import Image

from stackgan.data import coco, imagenet, lsun, oxford102
from stackgan.data.loader import ImageOnlyDataset, crop_flip_resize
from stackgan.data.prepared import PreparedSplit
from stackgan.data.synthetic import py2_pickle_bytes
from stackgan.errors import UserError

VIEWS = {"crop": {"mode": "crop"}, "sq16": {"mode": "square", "size": 16, "resample": "bicubic"},
         "short20": {"mode": "short", "size": 20, "resample": "bilinear"}}
DIM = 8


def jpeg(path: Path, seed: int, size=(40, 30), fmt="JPEG"):
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, fmt, quality=90)
    path.write_bytes(buf.getvalue())
    return buf.getvalue()


def decoded(path: Path) -> Image.Image:
    with Image.open(path) as img:
        return img.convert("RGB")


def embeddings(n, per_image, seed):
    return np.random.default_rng(seed).standard_normal((n, per_image, DIM)).astype(np.float32)


def write_pickles(folder: Path, keys, emb, class_info=None):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "filenames.pickle").write_bytes(py2_pickle_bytes(list(keys)))
    (folder / "char-CNN-RNN-embeddings.pickle").write_bytes(py2_pickle_bytes(emb))
    if class_info is not None:
        (folder / "class_info.pickle").write_bytes(py2_pickle_bytes(list(class_info)))


def leftovers(parent: Path):
    return sorted(p.name for p in parent.iterdir() if p.name.startswith("."))


# ---------------------------------------------------------------- Oxford-102
FLOWERS = {"train": [(1, 1), (2, 1), (3, 2), (4, 2)], "test": [(5, 3), (6, 3)]}  # (image number, class)


def make_flowers(raw: Path, mats=True) -> Path:
    for split, items in FLOWERS.items():
        for number, cls in items:
            jpeg(raw / "jpg" / f"image_{number:05d}.jpg", number, size=(30 + number, 24))
            caption = raw / "text_c10" / f"class_{cls:05d}" / f"image_{number:05d}.txt"
            caption.parent.mkdir(parents=True, exist_ok=True)
            caption.write_text("".join(f"flower {number} caption {c}\n" for c in range(10)))
        write_pickles(raw / split, [f"jpg/image_{n:05d}" for n, _ in items],
                      embeddings(len(items), 10, len(split)), [c for _, c in items])
    if mats:
        labels = [c for items in FLOWERS.values() for _, c in items]
        scipy.io.savemat(raw / "imagelabels.mat", {"labels": np.array([labels], dtype=np.uint8)})
        scipy.io.savemat(raw / "setid.mat", {"trnid": np.array([[1, 5]]), "valid": np.array([[2, 6]]),
                                             "tstid": np.array([[3, 4]])})
    return raw


def test_oxford_prepare_end_to_end(tmp_path):
    raw = make_flowers(tmp_path / "raw")
    manifest = oxford102.prepare(raw, tmp_path / "out", VIEWS, expected_counts={"train": 4, "test": 2})
    assert manifest["splits"]["train"]["count"] == 4 and manifest["splits"]["test"]["num_classes"] == 1
    assert manifest["label_check"] == ["imagelabels.mat", "setid.mat"]
    assert set(manifest["sources"]) >= {"imagelabels.mat", "train/filenames.pickle"}
    test = PreparedSplit(tmp_path / "out", "test")
    assert test.keys == ["jpg/image_00005", "jpg/image_00006"]
    assert test.class_ids.tolist() == [3, 3]
    np.testing.assert_array_equal(test.embeddings, embeddings(2, 10, 4))
    assert test.captions[1][9] == "flower 6 caption 9"
    source = decoded(raw / "jpg" / "image_00006.jpg")  # 36 x 24: no bbox crop for flowers
    np.testing.assert_array_equal(test.image("crop", 1), np.asarray(source))
    np.testing.assert_array_equal(test.image("sq16", 1), np.asarray(source.resize((16, 16), Image.BICUBIC)))
    assert test.image("short20", 1).shape == (20, 30, 3)  # 36x24 -> shorter side 20, 30 = int(20*36/24)
    assert leftovers(tmp_path) == []


def test_oxford_limit_and_count_check(tmp_path):
    raw = make_flowers(tmp_path / "raw", mats=False)
    with pytest.raises(UserError, match=r"train/filenames.pickle.*expected 7034"):
        oxford102.prepare(raw, tmp_path / "out", VIEWS, expected_counts={"train": 7034})
    manifest = oxford102.prepare(raw, tmp_path / "out", {"sq16": VIEWS["sq16"]}, limit=2,
                                 expected_counts={"train": 7034})
    assert PreparedSplit(tmp_path / "out", "train").keys == ["jpg/image_00001", "jpg/image_00003"]
    assert manifest["label_check"] == [] and manifest["limit"] == 2


def test_oxford_labels_cross_checked_against_imagelabels_mat(tmp_path):
    raw = make_flowers(tmp_path / "raw")
    scipy.io.savemat(raw / "imagelabels.mat", {"labels": np.array([[1, 1, 2, 7, 3, 3]])})
    with pytest.raises(UserError, match=r"jpg/image_00004 class 2 but .*imagelabels.mat gives 7"):
        oxford102.prepare(raw, tmp_path / "out", VIEWS)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("damage, message", [
    (lambda raw: (raw / "train" / "class_info.pickle").unlink(), r"train/class_info.pickle not found.*Drive id"),
    (lambda raw: (raw / "test" / "filenames.pickle").write_bytes(b"\x80\x02garbage"),
     r"test/filenames.pickle cannot be read as a pickle"),
    (lambda raw: (raw / "jpg" / "image_00006.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated"),
     r"image_00006.jpg cannot be decoded.*102flowers.tgz"),
    (lambda raw: (raw / "text_c10" / "class_00003" / "image_00005.txt").unlink(), r"class_00003/image_00005.txt is missing"),
    (lambda raw: [write_pickles(raw / "test", ["jpg/image_00005", "jpg/image_00006"], embeddings(2, 10, 0), [2, 2]),
                  (raw / "imagelabels.mat").unlink()], r"share classes \[2\]"),
    (lambda raw: write_pickles(raw / "test", ["image_00005", "image_00006"], embeddings(2, 10, 0), [3, 3]),
     r"key 'image_00005', not of the form"),
])
def test_oxford_bad_input_names_the_file_and_leaves_nothing(tmp_path, damage, message):
    raw = make_flowers(tmp_path / "raw")
    damage(raw)
    with pytest.raises(UserError, match=message):
        oxford102.prepare(raw, tmp_path / "out", VIEWS)
    assert not (tmp_path / "out").exists() and leftovers(tmp_path) == []


# ---------------------------------------------------------------- COCO
COCO_IMAGES = {"train": [9, 25, 30], "test": [42, 73]}


def coco_name(split, number):
    return f"COCO_{'train' if split == 'train' else 'val'}2014_{number:012d}"


def make_coco(raw: Path, flat=False) -> Path:
    for split, numbers in COCO_IMAGES.items():
        folder = "train2014" if split == "train" else "val2014"
        images, annotations = [], []
        for k, number in enumerate(numbers):
            name = coco_name(split, number)
            jpeg(raw / ("images" if flat else folder) / f"{name}.jpg", number, size=(32, 26 + k))
            images.append({"id": number, "file_name": f"{name}.jpg", "width": 32, "height": 26 + k})
            for c in range(6 if k == 0 else 5):  # some COCO images have more than 5 captions
                annotations.append({"id": 1000 * number + c, "image_id": number,
                                    "caption": f"A  picture {number} number {c}.\n"})
        annotations.reverse()  # the official files are not in annotation-id order
        (raw / "annotations").mkdir(parents=True, exist_ok=True)
        (raw / "annotations" / f"captions_{folder}.json").write_text(
            json.dumps({"images": images, "annotations": annotations}))
        write_pickles(raw / split, [coco_name(split, n) for n in numbers], embeddings(len(numbers), 5, len(split)))
    return raw


@pytest.mark.parametrize("flat", [False, True])
def test_coco_prepare_end_to_end(tmp_path, flat):
    raw = make_coco(tmp_path / "raw", flat)
    manifest = coco.prepare(raw, tmp_path / "out", VIEWS, expected_counts={"train": 3, "test": 2})
    assert manifest["splits"]["train"]["captions_per_image"] == 5
    assert manifest["class_info"]["train"].startswith("absent")
    assert "annotations/captions_val2014.json" in manifest["sources"]
    train = PreparedSplit(tmp_path / "out", "train")
    assert train.keys == [coco_name("train", n) for n in COCO_IMAGES["train"]]
    assert train.class_ids.tolist() == [0, 1, 2]  # no class_info: one class per image
    assert train.captions[0] == [f"A picture 9 number {c}." for c in range(5)]  # first 5 by id
    test = PreparedSplit(tmp_path / "out", "test")
    np.testing.assert_array_equal(test.embeddings, embeddings(2, 5, 4))
    folder = "images" if flat else "val2014"
    source = decoded(raw / folder / f"{coco_name('test', 73)}.jpg")
    np.testing.assert_array_equal(test.image("crop", 1), np.asarray(source))
    assert test.image("short20", 1).shape == (20, 23, 3)  # 32x27 -> int(20*32/27) = 23


@pytest.mark.parametrize("damage, message", [
    (lambda raw: [(raw / "test" / f).unlink() for f in ("filenames.pickle", "char-CNN-RNN-embeddings.pickle")]
     + [(raw / "test" / "val_captions.t7").write_bytes(b"t7")], r"val_captions.t7 cannot be read as a Torch7 file"),
    (lambda raw: (raw / "train" / "filenames.pickle").unlink(), r"train/filenames.pickle not found.*0B3y_msrWZaXLQXVzOENCY2E3TlU"),
    (lambda raw: write_pickles(raw / "train", [coco_name("train", n) for n in (9, 25, 30)], embeddings(3, 10, 0)),
     r"holds 10 embeddings per image, COCO has 5"),
    (lambda raw: (raw / "val2014" / f"{coco_name('test', 42)}.jpg").unlink(), r"val2014/COCO_val2014_000000000042.jpg not found"),
    (lambda raw: (raw / "train2014" / f"{coco_name('train', 25)}.jpg").write_bytes(b"not a jpeg"),
     r"COCO_train2014_000000000025.jpg cannot be decoded"),
    (lambda raw: (raw / "annotations" / "captions_val2014.json").write_text('{"images": []}'),
     r"captions_val2014.json is not a COCO captions file"),
])
def test_coco_bad_input_names_the_file_and_leaves_nothing(tmp_path, damage, message):
    raw = make_coco(tmp_path / "raw")
    damage(raw)
    with pytest.raises(UserError, match=message):
        coco.prepare(raw, tmp_path / "out", VIEWS)
    assert not (tmp_path / "out").exists() and leftovers(tmp_path) == []


# ---------------------------------------------------------------- LSUN
def make_lsun(raw: Path, count=5, corrupt=None) -> dict:
    lmdb = pytest.importorskip("lmdb")
    db = raw / "church_outdoor_train_lmdb"
    db.mkdir(parents=True)
    sources = {}
    env = lmdb.open(str(db), map_size=1 << 24)
    with env.begin(write=True) as txn:
        for k in range(count):
            key = f"{(k * 7919) % 1000:040x}"
            data = b"junk" if k == corrupt else jpeg(raw / "src" / f"{k}.webp", k, (24 + k, 20), "WEBP")
            txn.put(key.encode(), data)
            sources[key] = raw / "src" / f"{k}.webp"
    env.close()
    return dict(sorted(sources.items()))  # lmdb iterates keys in byte order


def test_lsun_prepare_end_to_end(tmp_path):
    sources = make_lsun(tmp_path / "raw")
    manifest = lsun.prepare(tmp_path / "raw", tmp_path / "out", VIEWS, expected_counts={"train": 5})
    assert manifest["dataset"] == "lsun-church" and manifest["splits"]["train"]["count"] == 5
    split = PreparedSplit(tmp_path / "out", "train")
    assert split.keys == list(sources) and split.embeddings is None and split.captions is None
    assert split.class_ids.tolist() == [0] * 5
    for i, path in enumerate(sources.values()):
        np.testing.assert_array_equal(split.image("crop", i), np.asarray(decoded(path)))
    lsun.prepare(tmp_path / "raw", tmp_path / "small", VIEWS, limit=2, expected_counts={"train": 99})
    assert PreparedSplit(tmp_path / "small", "train").keys == list(sources)[:2]


def test_lsun_corrupt_entry_and_wrong_count(tmp_path):
    make_lsun(tmp_path / "raw", corrupt=3)
    bad = f"{(3 * 7919) % 1000:040x}"
    with pytest.raises(UserError, match=rf"church_outdoor_train_lmdb entry {bad} cannot be decoded"):
        lsun.prepare(tmp_path / "raw", tmp_path / "out", VIEWS)
    with pytest.raises(UserError, match=r"holds 5 train images, expected 126227"):
        lsun.prepare(tmp_path / "raw", tmp_path / "out", VIEWS, expected_counts={"train": 126227})
    assert not (tmp_path / "out").exists() and leftovers(tmp_path) == []


def test_lsun_missing_database_names_the_folder_and_the_download(tmp_path):
    (tmp_path / "raw").mkdir()
    with pytest.raises(UserError, match=r"raw/bedroom_train_lmdb not found; download it with .*-c bedroom"):
        lsun.prepare(tmp_path / "raw", tmp_path / "out", VIEWS, category="bedroom")
    with pytest.raises(UserError, match=r"holds 0 '\*_train_lmdb' folders"):
        lsun.prepare(tmp_path / "raw", tmp_path / "out", VIEWS)


# ---------------------------------------------------------------- ImageNet
def test_imagenet_subset_lists():
    assert len(imagenet.DOG_WNIDS) == 118 == len(set(imagenet.DOG_WNIDS))
    assert all(w.startswith("n02") and len(w) == 9 for w in imagenet.DOG_WNIDS + imagenet.CAT_WNIDS)
    assert (imagenet.DOG_WNIDS[0], imagenet.DOG_WNIDS[-1]) == ("n02085620", "n02113978")
    assert list(imagenet.DOG_WNIDS) == sorted(imagenet.DOG_WNIDS)
    assert len(imagenet.CAT_WNIDS) == 17 == len(set(imagenet.CAT_WNIDS))
    assert set(imagenet.CAT_IN_ILSVRC2012) < set(imagenet.CAT_WNIDS) and len(imagenet.CAT_IN_ILSVRC2012) == 5


def make_cats(raw: Path, per_class=2) -> Path:
    for c, wnid in enumerate(imagenet.CAT_IN_ILSVRC2012):
        for k in range(per_class):
            jpeg(raw / "train" / wnid / f"{wnid}_{k + 1}.JPEG", 10 * c + k, (24 + k, 22))
    (raw / "train" / "n01440764").mkdir()  # another ILSVRC class: not part of the subset
    jpeg(raw / "train" / "n01440764" / "fish.JPEG", 99)
    return raw


@pytest.fixture(scope="module")
def cats(tmp_path_factory):
    root = tmp_path_factory.mktemp("cats")
    raw = make_cats(root / "raw")
    manifest = imagenet.prepare(raw, root / "out", VIEWS, expected_counts={"train": 10}, subset="cat")
    return raw, root / "out", manifest


def test_imagenet_cat_prepare_end_to_end(cats):
    raw, out, manifest = cats
    assert manifest["wnids"] == sorted(imagenet.CAT_IN_ILSVRC2012)
    assert len(manifest["wnids_absent"]) == 12 and "n02121808" in manifest["wnids_absent"]
    split = PreparedSplit(out, "train")
    assert split.keys[:3] == ["n02123045/n02123045_1", "n02123045/n02123045_2", "n02123159/n02123159_1"]
    assert split.class_ids.tolist() == [0, 0, 1, 1, 2, 2, 3, 3, 4, 4]
    source = decoded(raw / "train" / "n02124075" / "n02124075_2.JPEG")
    np.testing.assert_array_equal(split.image("crop", 9), np.asarray(source))
    np.testing.assert_array_equal(split.image("sq16", 9), np.asarray(source.resize((16, 16), Image.BICUBIC)))


def test_imagenet_limit_spreads_over_classes(tmp_path):
    raw = make_cats(tmp_path / "raw")
    imagenet.prepare(raw, tmp_path / "out", {"sq16": VIEWS["sq16"]}, limit=5, expected_counts={"train": 6500},
                     subset="cat")
    assert PreparedSplit(tmp_path / "out", "train").class_ids.tolist() == [0, 1, 2, 3, 4]


def test_imagenet_bad_input(tmp_path):
    raw = tmp_path / "raw"
    with pytest.raises(UserError, match=r"raw/train not found; ImageNet needs an account.*train/<wnid>/"):
        imagenet.prepare(raw, tmp_path / "out", VIEWS, subset="dog")
    make_cats(raw)
    with pytest.raises(UserError, match=r"train/n02085620 not found \(one of the 118 ImageNet dog classes\)"):
        imagenet.prepare(raw, tmp_path / "out", VIEWS, subset="dog")
    (raw / "train" / "n02123597" / "n02123597_1.JPEG").write_bytes(b"\xff\xd8 broken")
    with pytest.raises(UserError, match=r"n02123597_1.JPEG cannot be decoded"):
        imagenet.prepare(raw, tmp_path / "out", VIEWS, subset="cat")
    assert not (tmp_path / "out").exists() and leftovers(tmp_path) == []
    for f in (raw / "train" / "n02123045").iterdir():
        f.unlink()
    with pytest.raises(UserError, match=r"train/n02123045 holds no images"):
        imagenet.prepare(raw, tmp_path / "out", VIEWS, subset="cat")


def test_imagenet_from_the_user_folder_through_the_fetch_record(tmp_path):
    from stackgan.fetch import fetch

    user = make_cats(tmp_path / "user" / "imagenet")
    ds = {"name": "imagenet-cat", "source": "user", "user_dir": str(user), "subset": "cat"}
    record_dir = tmp_path / "raw" / "imagenet-cat"
    assert fetch(ds, record_dir) == record_dir
    record = json.loads((record_dir / imagenet.RECORD).read_text())
    assert record["source"] == user.as_posix() and record["images"] == 10 and sorted(record) == \
        ["images", "listing_sha256", "source", "subset", "wnids"]
    assert sorted(p.name for p in record_dir.iterdir()) == [imagenet.RECORD]  # no copy of the images
    manifest = imagenet.prepare(record_dir, tmp_path / "out", VIEWS, subset="cat")
    assert manifest["source"] == {"folder": user.as_posix(), "listing_sha256": record["listing_sha256"]}
    direct = imagenet.prepare(user, tmp_path / "direct", VIEWS, subset="cat")
    assert direct["splits"] == manifest["splits"]  # same images, same hashes, whichever way it was reached
    jpeg(user / "train" / "n02123045" / "n02123045_3.JPEG", 7)
    with pytest.raises(UserError, match=r"changed since `stackgan fetch` verified them .*fetch imagenet-cat"):
        imagenet.prepare(record_dir, tmp_path / "again", VIEWS, subset="cat")
    assert not (tmp_path / "again").exists()
    fetch(ds, record_dir)
    assert imagenet.prepare(record_dir, tmp_path / "again", VIEWS, subset="cat")["splits"]["train"]["count"] == 11
    (record_dir / imagenet.RECORD).write_text("{}")
    with pytest.raises(UserError, match=r"user-data.json is damaged"):
        imagenet.prepare(record_dir, tmp_path / "third", VIEWS, subset="cat")


# ---------------------------------------------------------------- unconditional loader
def test_image_only_dataset_is_a_pure_function_of_seed_epoch_index(cats):
    _, out, _ = cats
    split = PreparedSplit(out, "train")
    data = ImageOnlyDataset(split, "short20", [8, 16], seed=3)
    item = data[4]
    assert set(item) == {"imgs", "index"} and item["index"] == 4
    assert [tuple(x.shape) for x in item["imgs"]] == [(3, 8, 8), (3, 16, 16)]
    expected = crop_flip_resize(split.image("short20", 4), np.random.default_rng([3, 0, 4]), [8, 16], True)
    for got, want in zip(item["imgs"], expected):
        assert got.equal(want)
    data.set_epoch(1)
    assert any(not ImageOnlyDataset(split, "short20", [16], seed=3)[i]["imgs"][0].equal(data[i]["imgs"][1])
               for i in range(len(split)))
    with pytest.raises(UserError, match="smaller than the crop size 32"):
        ImageOnlyDataset(split, "short20", [32])
