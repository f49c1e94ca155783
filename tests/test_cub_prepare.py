import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from stackgan.data import cub, synthetic
from stackgan.data.prepared import PreparedSplit
from stackgan.errors import UserError

# (key, (width, height), bbox line, hand-computed crop box (x1, y1, x2, y2)) in images.txt order.
# box: R = int(0.75 max(w, h)), c = int((2x + w) / 2), [max(0, c - R), min(size, c + R)].
IMAGES = [
    ("001.Aa_Bird/Aa_Bird_0001_11", (120, 100), "40 30 33 21", (32, 16, 80, 64)),  # R24 c(56,40)
    ("001.Aa_Bird/Aa_Bird_0002_12", (100, 80), "10 20 30 40", (0, 10, 55, 70)),  # R30 c(25,40) left clip
    ("002.Bb_Bird/Bb_Bird_0003_13", (90, 90), "50.0 60.0 39.0 29.0", (40, 45, 90, 90)),  # R29 c(69,74)
    ("002.Bb_Bird/Bb_Bird_0004_14", (64, 64), "0 0 64 64", (0, 0, 64, 64)),  # grey JPEG, R48
    ("003.Cc_Bird/Cc_Bird_0005_15", (80, 120), "20 30 40 50", (3, 18, 77, 92)),  # R37 c(40,55)
    ("003.Cc_Bird/Cc_Bird_0006_16", (70, 70), "5 5 60 60", (0, 0, 70, 70)),  # R45 c(35,35)
]
SPLIT_OF = {"001": "train", "002": "train", "003": "test"}
VIEWS = {"crop": {"mode": "crop"}, "short76": {"mode": "short", "size": 76, "resample": "bilinear"},
         "sq16": {"mode": "square", "size": 16, "resample": "bicubic"}}
DIM = 16


def make_cub(raw: Path) -> Path:
    """A tiny raw folder in the authors' format: JPEGs, CUB text tables, Python-2 pickles."""
    rng = np.random.default_rng(0)
    images_txt, boxes_txt = [], []
    splits = {"train": [], "test": []}
    for number, (key, (w, h), box, _) in enumerate(IMAGES, start=1):
        path = raw / "CUB_200_2011" / "images" / f"{key}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        if number == 4:
            Image.fromarray(rng.integers(0, 256, (h, w), dtype=np.uint8), "L").save(path, quality=95)
        else:
            Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(path, quality=95)
        images_txt.append(f"{number} {key}.jpg\n")
        boxes_txt.append(f"{number} {box}\n")
        text = raw / "text" / f"{key}.txt"
        text.parent.mkdir(parents=True, exist_ok=True)
        text.write_text("".join(f"caption {c} of {key}\n" for c in range(10)) + "\n")
        splits[SPLIT_OF[key[:3]]].append(key)
    (raw / "CUB_200_2011" / "images.txt").write_text("".join(images_txt))
    (raw / "CUB_200_2011" / "bounding_boxes.txt").write_text("".join(boxes_txt))
    for split, keys in splits.items():
        (raw / split).mkdir()
        (raw / split / "filenames.pickle").write_bytes(synthetic.py2_pickle_bytes(keys))
        (raw / split / "class_info.pickle").write_bytes(synthetic.py2_pickle_bytes([int(k[:3]) for k in keys]))
        (raw / split / "char-CNN-RNN-embeddings.pickle").write_bytes(
            synthetic.py2_pickle_bytes(embeddings_for(keys)))
    return raw


def embeddings_for(keys):
    return np.stack([np.random.default_rng(int(k[-2:])).standard_normal((10, DIM)) for k in keys]).astype(np.float32)


@pytest.fixture
def raw(tmp_path):
    return make_cub(tmp_path / "raw")


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    root = tmp_path_factory.mktemp("cub")
    raw = make_cub(root / "raw")
    manifest = cub.prepare(raw, root / "prepared", VIEWS, expected_counts={"train": 4, "test": 2})
    return raw, root / "prepared", manifest


def test_bbox_crop_matches_hand_computation(prepared):
    raw, out, _ = prepared
    splits = {s: PreparedSplit(out, s) for s in ("train", "test")}
    index = {s: 0 for s in splits}
    for key, _, _, box in IMAGES:
        split = SPLIT_OF[key[:3]]
        i = index[split]
        index[split] += 1
        assert splits[split].keys[i] == key
        source = Image.open(raw / "CUB_200_2011" / "images" / f"{key}.jpg").convert("RGB")
        crop = source.crop(box)
        stored = splits[split].image("crop", i)
        assert stored.shape == (box[3] - box[1], box[2] - box[0], 3)
        np.testing.assert_array_equal(stored, np.asarray(crop))
        np.testing.assert_array_equal(splits[split].image("sq16", i),
                                      np.asarray(crop.resize((16, 16), Image.BICUBIC)))
        short = splits[split].image("short76", i)
        if crop.size[0] == crop.size[1]:
            assert short.shape == (76, 76, 3)
        np.testing.assert_array_equal(short, np.asarray(crop.resize(short.shape[1::-1], Image.BILINEAR)))
    grey = splits["train"].image("crop", 3)
    assert (grey[..., 0] == grey[..., 1]).all() and (grey[..., 1] == grey[..., 2]).all()


def test_short_view_sizes_follow_torchvision_scale(prepared):
    _, out, _ = prepared
    train = PreparedSplit(out, "train")
    # crop 55x60 (w<h): (76, int(76*60/55)=82); crop 50x45 (w>h): (int(76*50/45)=84, 76)
    assert train.image("short76", 1).shape == (82, 76, 3)
    assert train.image("short76", 2).shape == (76, 84, 3)


def test_metadata_and_manifest(prepared):
    raw, out, manifest = prepared
    assert json.loads((out / "manifest.json").read_text()) == manifest
    assert manifest["dataset"] == "cub" and manifest["limit"] is None and manifest["attributes"] is None
    assert manifest["splits"]["train"]["count"] == 4 and manifest["splits"]["test"]["count"] == 2
    assert manifest["splits"]["train"]["num_classes"] == 2 and manifest["splits"]["test"]["num_classes"] == 1
    assert manifest["views"]["crop"]["mode"] == "crop" and manifest["views"]["sq16"]["resample"] == "bicubic"
    written = {p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()} - {"manifest.json",
                                                                                         ".stackgan-prepared"}
    assert set(manifest["files"]) == written
    for rel, digest in manifest["files"].items():
        assert hashlib.sha256((out / rel).read_bytes()).hexdigest() == digest
    assert manifest["sources"]["train/char-CNN-RNN-embeddings.pickle"] == hashlib.sha256(
        (raw / "train" / "char-CNN-RNN-embeddings.pickle").read_bytes()).hexdigest()
    assert "CUB_200_2011/bounding_boxes.txt" in manifest["sources"]
    test = PreparedSplit(out, "test")
    assert len(test) == 2 and test.keys == [IMAGES[4][0], IMAGES[5][0]]
    assert test.class_ids.dtype == np.int64 and test.class_ids.tolist() == [3, 3]
    np.testing.assert_array_equal(test.embeddings, embeddings_for(test.keys))
    assert test.captions[1] == [f"caption {c} of {IMAGES[5][0]}" for c in range(10)]
    assert test.attributes is None


def test_limit_spreads_over_classes(raw, tmp_path):
    manifest = cub.prepare(raw, tmp_path / "p3", VIEWS, limit=3, expected_counts={"train": 99})
    train = PreparedSplit(tmp_path / "p3", "train")
    # round robin: class 1 first image, class 2 first image, class 1 second image; file order
    assert train.keys == [IMAGES[0][0], IMAGES[1][0], IMAGES[2][0]]
    assert manifest["limit"] == 3 and manifest["splits"]["test"]["count"] == 2
    np.testing.assert_array_equal(train.embeddings, embeddings_for(train.keys))
    cub.prepare(raw, tmp_path / "p1", VIEWS, limit=1)
    assert PreparedSplit(tmp_path / "p1", "train").keys == [IMAGES[0][0]]


def test_missing_class_info_means_one_class_per_image(raw, tmp_path):
    (raw / "test" / "class_info.pickle").unlink()
    manifest = cub.prepare(raw, tmp_path / "p", {"sq16": VIEWS["sq16"]})
    assert PreparedSplit(tmp_path / "p", "test").class_ids.tolist() == [0, 1]
    assert manifest["splits"]["test"]["class_info"].startswith("absent")


def _truncate(path: Path):
    path.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 2])


def _drop_last_line(path: Path):
    path.write_text("".join(path.read_text().splitlines(keepends=True)[:-1]))


def _nest_cub(raw: Path):
    shutil.move(raw / "CUB_200_2011", raw / "tmp")
    (raw / "CUB_200_2011").mkdir()
    shutil.move(raw / "tmp", raw / "CUB_200_2011" / "CUB_200_2011")


def _unnest_cub(raw: Path):
    shutil.move(raw / "CUB_200_2011" / "CUB_200_2011", raw / "tmp")
    (raw / "CUB_200_2011").rmdir()
    shutil.move(raw / "tmp", raw / "CUB_200_2011")


def _swap_embeddings(raw: Path, keys):
    (raw / "train" / "char-CNN-RNN-embeddings.pickle").write_bytes(synthetic.py2_pickle_bytes(embeddings_for(keys)))


TRAIN_KEYS = [k for k, *_ in IMAGES[:4]]
JPEG = "CUB_200_2011/images/002.Bb_Bird/Bb_Bird_0003_13.jpg"
# (damage, repair, text the one-line message must contain)
BAD_INPUTS = {
    "missing embeddings pickle": (
        lambda r: (r / "train/char-CNN-RNN-embeddings.pickle").rename(r / "emb.bak"),
        lambda r: (r / "emb.bak").rename(r / "train/char-CNN-RNN-embeddings.pickle"),
        ["train/char-CNN-RNN-embeddings.pickle", cub.BIRDS_DRIVE_ID]),
    "missing filenames pickle": (
        lambda r: (r / "test/filenames.pickle").rename(r / "fn.bak"),
        lambda r: (r / "fn.bak").rename(r / "test/filenames.pickle"),
        ["test/filenames.pickle", cub.BIRDS_DRIVE_ID]),
    "corrupt jpeg": (
        lambda r: (shutil.copy(r / JPEG, r / "good.jpg"), _truncate(r / JPEG)),
        lambda r: shutil.copy(r / "good.jpg", r / JPEG),
        [JPEG, "corrupt"]),
    "missing image": (
        lambda r: (r / JPEG).rename(r / "good.jpg"),
        lambda r: (r / "good.jpg").rename(r / JPEG),
        [JPEG, "missing"]),
    "truncated bounding boxes": (
        lambda r: (shutil.copy(r / "CUB_200_2011/bounding_boxes.txt", r / "bb.bak"),
                   _drop_last_line(r / "CUB_200_2011/bounding_boxes.txt")),
        lambda r: shutil.copy(r / "bb.bak", r / "CUB_200_2011/bounding_boxes.txt"),
        ["bounding_boxes.txt", "re-extract"]),
    "embedding count mismatch": (
        lambda r: _swap_embeddings(r, TRAIN_KEYS[:3]),
        lambda r: _swap_embeddings(r, TRAIN_KEYS),
        ["train/char-CNN-RNN-embeddings.pickle", "4 filenames"]),
    "corrupt pickle": (
        lambda r: (shutil.copy(r / "train/class_info.pickle", r / "ci.bak"), _truncate(r / "train/class_info.pickle")),
        lambda r: shutil.copy(r / "ci.bak", r / "train/class_info.pickle"),
        ["train/class_info.pickle", "re-download"]),
    "cub unpacked one level too deep": (_nest_cub, _unnest_cub, ["CUB_200_2011/CUB_200_2011", "too deep"]),
    "missing caption file": (
        lambda r: (r / "text" / f"{TRAIN_KEYS[1]}.txt").rename(r / "cap.bak"),
        lambda r: (r / "cap.bak").rename(r / "text" / f"{TRAIN_KEYS[1]}.txt"),
        [f"text/{TRAIN_KEYS[1]}.txt"]),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_fails_cleanly_then_succeeds_after_fix(raw, tmp_path, case):
    damage, repair, needles = BAD_INPUTS[case]
    out_parent = tmp_path / "prepared_root"
    out_parent.mkdir()
    damage(raw)
    with pytest.raises(UserError) as err:
        cub.prepare(raw, out_parent / "cub", VIEWS)
    message = str(err.value)
    assert "\n" not in message
    for needle in needles:
        assert needle in message, message
    assert list(out_parent.iterdir()) == []  # nothing half-written
    repair(raw)
    cub.prepare(raw, out_parent / "cub", VIEWS)
    assert [p.name for p in out_parent.iterdir()] == ["cub"]
    assert PreparedSplit(out_parent / "cub", "train").image("sq16", 2).shape == (16, 16, 3)


def test_layout_errors_point_to_the_remedy(tmp_path):
    with pytest.raises(UserError, match="not found.*0B3y_msrWZaXLT1BZdVdycDY5TEE"):
        cub.prepare(tmp_path / "nothing", tmp_path / "out", VIEWS)
    make_cub(tmp_path / "data" / "birds")
    with pytest.raises(UserError, match=r"pass --raw .*data/birds"):
        cub.prepare(tmp_path / "data", tmp_path / "out", VIEWS)
    with pytest.raises(UserError, match="expected 8855"):
        cub.prepare(tmp_path / "data" / "birds", tmp_path / "out", VIEWS,
                    expected_counts={"train": 8855, "test": 2933})
    with pytest.raises(UserError, match="mode"):
        cub.prepare(tmp_path / "data" / "birds", tmp_path / "out", {"x": {"mode": "zoom", "size": 4}})
    assert not (tmp_path / "out").exists()


def test_failed_rerun_keeps_previous_output(raw, tmp_path):
    cub.prepare(raw, tmp_path / "p", VIEWS)
    before = (tmp_path / "p" / "manifest.json").read_bytes()
    _truncate(raw / JPEG)
    with pytest.raises(UserError):
        cub.prepare(raw, tmp_path / "p", VIEWS)
    assert (tmp_path / "p" / "manifest.json").read_bytes() == before
    assert [p.name for p in tmp_path.iterdir() if p.name != "raw"] == ["p"]


def test_synthetic_dataset_prepares_unchanged(tmp_path):
    raw = synthetic.generate(tmp_path / "raw", num_images=20, seed=1)
    manifest = cub.prepare(raw, tmp_path / "p", {"sq76": {"mode": "square", "size": 76, "resample": "bicubic"}})
    assert manifest["dataset"] == "synthetic"
    assert manifest["attributes"]["names"] == ["shape", "colour", "size", "position", "background"]
    assert manifest["attributes"]["values"]["position"] == ["top", "middle", "bottom"]
    assert manifest["splits"]["train"]["count"] == 15 and manifest["splits"]["test"]["count"] == 5
    test = PreparedSplit(tmp_path / "p", "test")
    lines = dict(line.split(" ", 1) for line in (raw / "synthetic_attributes.txt").read_text().splitlines()
                 if not line.startswith("#"))
    for key, attrs in zip(test.keys, test.attributes):
        assert [int(v) for v in lines[key].split()] == attrs.tolist()
    assert test.embeddings.shape == (5, 10, 1024) and len(test.captions[0]) == 10
