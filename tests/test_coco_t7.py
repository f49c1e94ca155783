"""COCO's test split from the authors' eval download (test/val_captions.t7, Torch7, one
embedding per caption): the Torch7 reader, caption-to-image matching and prepare end to end."""

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torchfile
from t7_writer import caption_file_bytes, t7_bytes
from test_datasets_real import VIEWS, coco_name, decoded, leftovers, make_coco

from stackgan.data import coco
from stackgan.data.prepared import PreparedSplit
from stackgan.data.torch7 import read_caption_embeddings
from stackgan.errors import UserError

EVAL_ID = coco.EVAL_DRIVE_ID
SHARED = "A cat on a mat."
# val2014 annotations, in annotation-id order: 42 has 6 captions, 73 has 5 + one it shares with
# 88, and 88 has 4 + the shared one. No jpg exists for 88: it must be dropped, not looked up.
VAL = {42: [f"A  picture 42 number {c}.\n" for c in range(6)],
       73: [f"A  picture 73 number {c}.\n" for c in range(5)] + [SHARED],
       88: [f"A  picture 88 number {c}.\n" for c in range(4)] + ["a cat  on a MAT."]}


def write_val_annotations(raw: Path):
    images = [{"id": n, "file_name": f"{coco_name('test', n)}.jpg", "width": 32, "height": 26} for n in VAL]
    annotations = [{"id": 1000 * n + c, "image_id": n, "caption": text}
                   for n, texts in VAL.items() for c, text in enumerate(texts)]
    annotations.reverse()  # the official files are not in annotation-id order
    (raw / "annotations" / "captions_val2014.json").write_text(json.dumps({"images": images, "annotations": annotations}))


def t7_rows():
    """(caption as the .t7 holds it, (image, annotation position) or the outcome) per row."""
    rows = [(VAL[42][c].upper() if c % 2 else f" {VAL[42][c]}  ", (42, c)) for c in range(6)]
    rows += [(VAL[73][c].lower(), (73, c)) for c in range(5)]
    rows += [(VAL[88][c], (88, c)) for c in range(4)]
    rows = [rows[i] for i in np.random.default_rng(7).permutation(len(rows))]  # not in image order
    return rows + [("a cat on a mat.", "ambiguous"), ("A picture 42 number 3.", "duplicate"),
                   ("An unrelated sentence.", "unmatched")]


def t7_embeddings(n):
    return np.random.default_rng(11).standard_normal((n, 1024)).astype(np.float32)


def write_t7(raw: Path, rows=None, tensor_type="Float") -> bytes:
    rows = t7_rows() if rows is None else rows
    data = caption_file_bytes([text for text, _ in rows], t7_embeddings(len(rows)), tensor_type)
    (raw / "test" / "val_captions.t7").write_bytes(data)
    return data


def make_coco_t7(raw: Path) -> Path:
    """make_coco's fixture with the test split given only as val_captions.t7."""
    make_coco(raw)
    for name in coco.PICKLES:
        (raw / "test" / name).unlink()
    write_val_annotations(raw)
    write_t7(raw)
    return raw


# ---------------------------------------------------------------- the Torch7 reader
@pytest.mark.parametrize("tensor_type", ["Float", "Cuda"])  # get_embedding.lua runs the encoder on the GPU
def test_writer_round_trip_through_torchfile(tmp_path, tensor_type):
    emb = t7_embeddings(3)
    path = tmp_path / "c.t7"
    path.write_bytes(caption_file_bytes(["a dog", "café au lait", "x"], emb, tensor_type))
    table = torchfile.load(str(path), use_list_heuristic=False)
    assert sorted(table) == [b"fea_txt", b"raw_txt"]
    assert dict(table[b"raw_txt"]) == {1: b"a dog", 2: "café au lait".encode(), 3: b"x"}
    assert [t.shape for t in table[b"fea_txt"].values()] == [(1, 1024)] * 3
    np.testing.assert_array_equal(np.concatenate([table[b"fea_txt"][i] for i in (1, 2, 3)]), emb)
    captions, embeddings = read_caption_embeddings(path)
    assert captions == ["a dog", "café au lait", "x"]
    assert embeddings.dtype == np.float32
    np.testing.assert_array_equal(embeddings, emb)


@pytest.mark.parametrize("last", ["fea_txt", "raw_txt"])  # Lua writes a table's fields in hash order
def test_reader_rejects_every_truncation(tmp_path, last):
    fields = {"raw_txt": ["a", "b"], "fea_txt": [row[None] for row in t7_embeddings(2)]}
    data = t7_bytes({k: fields[k] for k in sorted(fields, key=lambda k: k == last)})
    path = tmp_path / "c.t7"
    path.write_bytes(data)
    read_caption_embeddings(path)  # the whole file reads
    for cut in sorted({0, 3, 40, len(data) // 2, len(data) - 4097, len(data) - 4, len(data) - 1}):
        path.write_bytes(data[:cut])
        with pytest.raises(UserError, match=r"c\.t7 (cannot be read as a Torch7 file|is cut off).*again"):
            read_caption_embeddings(path, "download it again")


@pytest.mark.parametrize("value, message", [
    ({"raw_txt": ["a"]}, r"holds no fea_txt"),
    ({"raw_txt": ["a", "b"], "fea_txt": [np.zeros((1, 1024))]}, r"holds 2 captions \(raw_txt\) and 1 embeddings"),
    ({"raw_txt": ["a"], "fea_txt": [np.zeros((1, 512))]}, r"fea_txt\[1\] is \(1, 512\), not a 1x1024"),
    ({"raw_txt": ["a"], "fea_txt": ["not a tensor"]}, r"fea_txt\[1\] is bytes, not a 1x1024"),
    ({"raw_txt": {2: "a"}, "fea_txt": [np.zeros((1, 1024))]}, r"raw_txt is not a list"),
    ({"raw_txt": [], "fea_txt": []}, r"holds 0 captions"),
    ([1, 2], r"holds no raw_txt or fea_txt"),
])
def test_reader_rejects_other_contents(tmp_path, value, message):
    path = tmp_path / "c.t7"
    path.write_bytes(t7_bytes(value))
    with pytest.raises(UserError, match=rf"c\.t7.*{message}.*fix it"):
        read_caption_embeddings(path, "fix it")


# ---------------------------------------------------------------- matching
def test_group_by_image_rules():
    table = {coco_name("test", n): [" ".join(t.split()) for t in texts] for n, texts in VAL.items()}
    rows = t7_rows()
    emb = t7_embeddings(len(rows))
    meta, counts = coco.group_by_image([text for text, _ in rows], emb, table)
    assert counts == {"captions": 18, "matched": 15, "ambiguous": 1, "unmatched": 1, "duplicate": 1,
                      "images_kept": 2, "images_dropped": 1}
    row_of = {where: i for i, (_, where) in enumerate(rows) if isinstance(where, tuple)}
    assert meta["keys"] == [coco_name("test", 42), coco_name("test", 73)]
    expected = np.stack([emb[[row_of[(n, c)] for c in range(5)]] for n in (42, 73)])
    np.testing.assert_array_equal(meta["embeddings"], expected)  # annotation order, first 5
    assert meta["captions"][0] == [f"A picture 42 number {c}." for c in range(5)]
    assert meta["class_ids"].tolist() == [0, 1]


# ---------------------------------------------------------------- prepare
def test_prepare_test_split_from_t7(tmp_path):
    raw = make_coco_t7(tmp_path / "raw")
    manifest = coco.prepare(raw, tmp_path / "out", VIEWS)
    source = manifest["test_source"]
    t7 = (raw / "test" / "val_captions.t7").read_bytes()
    assert source == {"file": "test/val_captions.t7", "sha256": hashlib.sha256(t7).hexdigest(), "captions": 18,
                      "matched": 15, "ambiguous": 1, "unmatched": 1, "duplicate": 1,
                      "images_kept": 2, "images_dropped": 1}
    assert manifest["sources"]["test/val_captions.t7"] == source["sha256"]
    assert manifest["splits"]["test"] == {"count": 2, "num_classes": 2, "captions": True,
                                          "captions_per_image": 5, "embedding_dim": 1024}
    test = PreparedSplit(tmp_path / "out", "test")
    assert test.keys == [coco_name("test", 42), coco_name("test", 73)]
    rows, emb = t7_rows(), t7_embeddings(18)
    row_of = {where: i for i, (_, where) in enumerate(rows) if isinstance(where, tuple)}
    np.testing.assert_array_equal(test.embeddings, np.stack([emb[[row_of[(n, c)] for c in range(5)]]
                                                             for n in (42, 73)]))
    assert test.captions == [[f"A picture {n} number {c}." for c in range(5)] for n in (42, 73)]
    np.testing.assert_array_equal(test.image("crop", 1), np.asarray(decoded(raw / "val2014" / f"{coco_name('test', 73)}.jpg")))
    train = PreparedSplit(tmp_path / "out", "train")  # the train split is read from its pickles as before
    assert train.keys == [coco_name("train", n) for n in (9, 25, 30)]


def test_prepare_limit_and_pickles_preferred(tmp_path):
    raw = make_coco_t7(tmp_path / "raw")
    manifest = coco.prepare(raw, tmp_path / "lim", VIEWS, limit=1)
    assert PreparedSplit(tmp_path / "lim", "test").keys == [coco_name("test", 42)]
    assert manifest["test_source"]["images_kept"] == 2  # counts describe the file, before --limit
    make_coco(raw)  # the test pickles back beside the .t7: they win
    manifest = coco.prepare(raw, tmp_path / "both", VIEWS)
    assert manifest["test_source"].startswith("test/filenames.pickle")
    assert "test/val_captions.t7" not in manifest["sources"]
    assert PreparedSplit(tmp_path / "both", "test").embeddings.shape == (2, 5, 8)


def _cut(raw):
    data = (raw / "test" / "val_captions.t7").read_bytes()
    (raw / "test" / "val_captions.t7").write_bytes(data[: len(data) - 100])


def _other_captions(raw):
    write_t7(raw, [(f"words {i}", None) for i in range(17)] + [("a cat on a mat.", None)])


@pytest.mark.parametrize("damage, message", [
    (_cut, rf"test/val_captions.t7 is cut off.*{EVAL_ID}"),
    (lambda raw: (raw / "test" / "val_captions.t7").write_bytes(b"t7"),
     rf"test/val_captions.t7 cannot be read as a Torch7 file.*{EVAL_ID}"),
    (lambda raw: (raw / "annotations" / "captions_val2014.json").unlink(),
     r"annotations/captions_val2014.json not found; it names the val2014 image of each caption"),
    (_other_captions, rf"only 1 of the 18 captions in .*val_captions.t7 are captions in .*captions_val2014.json.*{EVAL_ID}"),
    (lambda raw: write_t7(raw, [(t, None) for t in VAL[42][:4] + VAL[73][:4]]),
     r"no val2014 image has 5 of its captions in .*val_captions.t7"),
    (lambda raw: (raw / "test" / "filenames.pickle").write_bytes(b""),  # half the pickle route
     r"test/char-CNN-RNN-embeddings.pickle not found"),
])
def test_bad_t7_input_names_the_file_leaves_nothing_and_rerun_works(tmp_path, damage, message):
    raw = make_coco_t7(tmp_path / "raw")
    damage(raw)
    with pytest.raises(UserError, match=message):
        coco.prepare(raw, tmp_path / "out", VIEWS)
    assert not (tmp_path / "out").exists() and leftovers(tmp_path) == []
    (raw / "test" / "filenames.pickle").unlink(missing_ok=True)
    write_val_annotations(raw)
    write_t7(raw)
    assert coco.prepare(raw, tmp_path / "out", VIEWS)["test_source"]["images_kept"] == 2
