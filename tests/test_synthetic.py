import pickle
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from stackgan.data import synthetic, text_encoder
from stackgan.errors import UserError

N = 40  # two images per class


@pytest.fixture(scope="module")
def raw(tmp_path_factory):
    return synthetic.generate(tmp_path_factory.mktemp("syn") / "raw", num_images=N, seed=3)


def _all_files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _load(path):
    with open(path, "rb") as f:
        return pickle.load(f, encoding="latin1")


def test_same_seed_same_bytes_other_seed_other_images(raw, tmp_path):
    again = _all_files(synthetic.generate(tmp_path / "again", num_images=N, seed=3))
    assert again == _all_files(raw)
    other = _all_files(synthetic.generate(tmp_path / "other", num_images=N, seed=4))
    jpgs = [k for k in other if k.endswith(".jpg")]
    assert jpgs and all(other[k] != again[k] for k in jpgs)


def test_layout_files_parse_and_agree(raw):
    cub = raw / "CUB_200_2011"
    images = [line.split() for line in (cub / "images.txt").read_text().splitlines()]
    boxes = [line.split() for line in (cub / "bounding_boxes.txt").read_text().splitlines()]
    labels = [line.split() for line in (cub / "image_class_labels.txt").read_text().splitlines()]
    classes = [line.split() for line in (cub / "classes.txt").read_text().splitlines()]
    assert len(images) == len(boxes) == len(labels) == N and len(classes) == 20
    assert classes[0] == ["1", "001.Red_Circle"] and classes[6] == ["7", "007.Green_Square"]
    for (iid, rel), (bid, *box), (lid, cls) in zip(images, boxes, labels):
        assert iid == bid == lid
        assert rel.startswith(classes[int(cls) - 1][1] + "/")
        img = Image.open(cub / "images" / rel)
        assert img.format == "JPEG" and img.mode == "RGB"
        w, h = img.size
        assert 120 <= w <= 170 and 120 <= h <= 170
        x, y, bw, bh = (float(v) for v in box)
        assert 0 <= x and x + bw <= w and 0 <= y and y + bh <= h and bw > 50 and bh > 50
        captions = (raw / "text" / f"{rel[:-4]}.txt").read_text().splitlines()
        assert len(captions) == 10 and all(captions)


def test_class_disjoint_split_and_pickles(raw):
    keys, infos, embs = {}, {}, {}
    for split in ("train", "test"):
        keys[split] = _load(raw / split / "filenames.pickle")
        infos[split] = _load(raw / split / "class_info.pickle")
        embs[split] = _load(raw / split / "char-CNN-RNN-embeddings.pickle")
        assert isinstance(keys[split], list) and all(isinstance(k, str) for k in keys[split])
        assert embs[split].shape == (len(keys[split]), 10, 1024) and embs[split].dtype == np.float32
        assert [int(k[:3]) for k in keys[split]] == infos[split]
    assert len(set(infos["train"])) == 15 and len(set(infos["test"])) == 5
    assert not set(infos["train"]) & set(infos["test"])
    assert len(keys["train"]) + len(keys["test"]) == N
    train_names = {k.split("/")[0].split(".")[1] for k in keys["train"]}
    for shape in synthetic.ATTRIBUTES["shape"]:
        assert any(n.endswith(shape.title()) for n in train_names)
    for colour in synthetic.ATTRIBUTES["colour"]:
        assert any(n.startswith(colour.title()) for n in train_names)
    # embeddings are the project's text encoder applied to the caption file
    key = keys["test"][1]
    captions = (raw / "text" / f"{key}.txt").read_text().splitlines()
    np.testing.assert_array_equal(embs["test"][1], text_encoder.encode(captions))


# Written by hand, independent of synthetic.PHRASES: words that name each attribute value.
KEYWORDS = {
    "shape": [{"circle", "disc", "round"}, {"square", "box"}, {"triangle", "triangular"},
              {"diamond", "rhombus"}],
    "colour": [{"red", "crimson"}, {"green", "emerald"}, {"blue", "azure"}, {"yellow", "golden"},
               {"purple", "violet"}],
    "size": [{"small", "little", "tiny"}, {"large", "big", "huge"}],
    "position": [{"top", "upper"}, {"middle", "centre", "center"}, {"bottom", "lower"}],
    "background": [{"white"}, {"black"}, {"pink"}, {"brown"}],
}


def _attributes(raw):
    lines = (raw / synthetic.ATTRIBUTE_FILE).read_text().splitlines()
    header = [line for line in lines if line.startswith("#")]
    assert header[1:] == ["# shape: 0=circle 1=square 2=triangle 3=diamond",
                          "# colour: 0=red 1=green 2=blue 3=yellow 4=purple",
                          "# size: 0=small 1=large", "# position: 0=top 1=middle 2=bottom",
                          "# background: 0=white 1=black 2=pink 3=brown"]
    return {key: [int(v) for v in ids] for key, *ids in (line.split() for line in lines if not line.startswith("#"))}


def test_every_caption_states_every_attribute(raw):
    attributes = _attributes(raw)
    assert len(attributes) == N
    for key, attrs in attributes.items():
        for caption in (raw / "text" / f"{key}.txt").read_text().splitlines():
            tokens = set(text_encoder.tokenize(caption))
            for name, value in zip(KEYWORDS, attrs):
                assert tokens & KEYWORDS[name][value], (caption, name)
                others = set().union(*(k for v, k in enumerate(KEYWORDS[name]) if v != value))
                assert not tokens & others, (caption, name)


def test_pixels_follow_attributes(raw):
    attributes = _attributes(raw)
    rows = zip((raw / "CUB_200_2011/images.txt").read_text().splitlines(),
               (raw / "CUB_200_2011/bounding_boxes.txt").read_text().splitlines())
    for image_line, box_line in rows:
        rel = image_line.split()[1]
        shape, colour, size, position, background = attributes[rel[:-4]]
        x, y, w, h = (int(float(v)) for v in box_line.split()[1:])
        pixels = np.asarray(Image.open(raw / "CUB_200_2011/images" / rel), dtype=np.int32)
        corner = pixels[y + 2, x + 2]
        assert np.abs(corner - synthetic.BACKGROUND_RGB[background]).max() < 40
        row = pixels[int(y + h * synthetic.POSITION_Y[position]), x:x + w]
        assert (np.abs(row - synthetic.OBJECT_RGB[colour]).max(axis=1) < 45).sum() >= 4


def test_py2_pickle_bytes_match_python27_cpickle():
    # Python 2.7.18: cPickle.dumps(['ab', 'cd'], 2), cPickle.dumps(['ab'], 2),
    # cPickle.dumps([1, 300, 70000, -1], 2)
    assert synthetic.py2_pickle_bytes(["ab", "cd"]) == b"\x80\x02]q\x01(U\x02abq\x02U\x02cdq\x03e."
    assert synthetic.py2_pickle_bytes(["ab"]) == b"\x80\x02]q\x01U\x02abq\x02a."
    assert synthetic.py2_pickle_bytes([1, 300, 70000, -1]) == b"\x80\x02]q\x01(K\x01M,\x01Jp\x11\x01\x00J\xff\xff\xff\xffe."


def test_py2_array_pickle_needs_latin1():
    arr = np.linspace(-1, 1, 24, dtype=np.float32).reshape(2, 3, 4)
    data = synthetic.py2_pickle_bytes(arr)
    assert b"numpy.core.multiarray\n_reconstruct" in data
    with pytest.raises(UnicodeDecodeError):  # what users hit with the authors' files (spec §7)
        pickle.loads(data)
    back = pickle.loads(data, encoding="latin1")
    assert back.dtype == np.float32 and np.array_equal(back, arr)


def test_refuses_bad_requests(tmp_path):
    with pytest.raises(UserError, match="num_images"):
        synthetic.generate(tmp_path / "few", num_images=5)
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "thesis.tex").write_text("x")
    with pytest.raises(UserError, match="not empty"):
        synthetic.generate(tmp_path / "busy", num_images=20)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["busy"]


def test_regenerate_replaces_previous(tmp_path):
    out = synthetic.generate(tmp_path / "d", num_images=20, seed=0)
    (out / "stale.txt").write_text("old")
    synthetic.generate(out, num_images=21, seed=0)
    assert not (out / "stale.txt").exists()
    assert len((out / "CUB_200_2011/images.txt").read_text().splitlines()) == 21
    assert [p.name for p in tmp_path.iterdir()] == ["d"]
