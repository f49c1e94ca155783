"""Input files at prepare time are data, never code, and are checked before any work: hostile
pickles in every pickle the readers open, and malformed embeddings, bounding boxes, attribute
tables and CIFAR-10 batches, each refused with one line naming the file and the remedy."""

import os
import pathlib
import pickle
import subprocess
import sys
import tarfile
import warnings
from pathlib import Path

import numpy as np
import pytest
import scipy.io
from t7_writer import caption_file_bytes
from test_cub_prepare import VIEWS as CUB_VIEWS
from test_cub_prepare import make_cub
from test_datasets_real import VIEWS, make_coco, make_flowers
from test_labelled_datasets import write_cifar, write_svhn

from stackgan.data import cifar10, coco, cub, oxford102, svhn
from stackgan.data.prepared import PreparedSplit
from stackgan.data.synthetic import py2_pickle_bytes
from stackgan.data.torch7 import read_caption_embeddings
from stackgan.errors import UserError
from stackgan.prepare import prepare

REPO = Path(__file__).resolve().parents[1]
LAYOUTS = {"cub": CUB_VIEWS, "oxford102": VIEWS, "coco": VIEWS}
MAKERS = {"cub": make_cub, "oxford102": make_flowers, "coco": make_coco}
# the Drive file each split's metadata comes from (COCO's test split: the authors' eval download)
DRIVE_IDS = {("cub", s): cub.BIRDS_DRIVE_ID for s in ("train", "test")} | \
    {("oxford102", s): oxford102.FLOWERS_DRIVE_ID for s in ("train", "test")} | \
    {("coco", "train"): coco.TRAIN_DRIVE_ID, ("coco", "test"): coco.EVAL_DRIVE_ID}


class Payload:
    """Unpickles as func(*args): what a hostile file runs under plain pickle.load."""

    def __init__(self, func, *args):
        self.func, self.args = func, args

    def __reduce__(self):
        return self.func, self.args


def hostile(kind: str, target: Path) -> bytes:
    """A pickle that creates `target` when loaded with plain pickle."""
    if kind == "os.system":
        return pickle.dumps(Payload(os.system, f"touch '{target}'"), protocol=2)
    if kind == "Path.touch":  # a dotted name: protocol 4
        return pickle.dumps(Payload(pathlib.Path.touch, target), protocol=4)
    if kind == "exec":  # a callable of the builtins module, whose types are admitted
        return pickle.dumps(Payload(exec, f"open({str(target)!r}, 'w').close()"), protocol=2)
    if kind == "inside a list":  # a valid-looking list whose last item runs code
        return pickle.dumps(["001.Aa_Bird/Aa_Bird_0001_11", Payload(os.system, f"touch '{target}'")], protocol=2)
    if kind == "inside an object array":
        return pickle.dumps(np.array([0.5, Payload(pathlib.Path.touch, target)], dtype=object), protocol=2)
    raise ValueError(kind)


PAYLOADS = ["os.system", "Path.touch", "exec", "inside a list", "inside an object array"]


def one_line(err) -> str:
    message = str(err.value)
    assert "\n" not in message and "; " in message, message
    return message


def prepare_layout(layout: str, raw: Path, out: Path, limit=None):
    return prepare({"name": layout, "layout": layout, "views": LAYOUTS[layout]}, raw, out, limit)


@pytest.mark.parametrize("kind", PAYLOADS)
def test_payloads_are_live_under_plain_pickle(tmp_path, kind):
    """The fixtures would run code if the harness used plain pickle (so the refusals below mean something)."""
    target = tmp_path / "pwned"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pickle.loads(hostile(kind, target))
    assert target.exists()


@pytest.mark.parametrize("kind", PAYLOADS)
def test_every_payload_kind_is_refused_in_cub_embeddings(tmp_path, kind):
    raw, target = make_cub(tmp_path / "raw"), tmp_path / "pwned"
    path = raw / "train" / "char-CNN-RNN-embeddings.pickle"
    path.write_bytes(hostile(kind, target))
    with pytest.raises(UserError) as err:
        prepare_layout("cub", raw, tmp_path / "out")
    message = one_line(err)
    assert message.startswith(f"{path} is refused as a pickle (it names ") and cub.BIRDS_DRIVE_ID in message
    assert not target.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["raw"]  # no output, no staging folder


@pytest.mark.parametrize("layout,split,name", [
    (layout, split, name) for layout in LAYOUTS for split in ("train", "test")
    for name in ("filenames.pickle", "char-CNN-RNN-embeddings.pickle", "class_info.pickle")])
def test_hostile_metadata_pickle_is_refused(tmp_path, layout, split, name):
    raw, target = MAKERS[layout](tmp_path / "raw"), tmp_path / "pwned"
    path = raw / split / name
    path.write_bytes(hostile("os.system", target))  # COCO has no class_info: it is read when present
    with pytest.raises(UserError) as err:
        prepare_layout(layout, raw, tmp_path / "out")
    message = one_line(err)
    assert message.startswith(f"{path} is refused as a pickle (it names posix.system") or \
        message.startswith(f"{path} is refused as a pickle (it names os.system"), message
    assert DRIVE_IDS[layout, split] in message
    assert not target.exists() and not (tmp_path / "out").exists()


@pytest.mark.parametrize("archive", [False, True])
def test_hostile_cifar_batch_is_refused(tmp_path, archive):
    raw, target = tmp_path / "raw", tmp_path / "pwned"
    write_cifar(raw)
    (raw / cifar10.FOLDER / "data_batch_2").write_bytes(hostile("Path.touch", target))
    if archive:
        with tarfile.open(raw / cifar10.ARCHIVE, "w:gz") as tar:
            tar.add(raw / cifar10.FOLDER, arcname=cifar10.FOLDER)
        for f in (raw / cifar10.FOLDER).iterdir():
            f.unlink()
        (raw / cifar10.FOLDER).rmdir()
    member = f"{cifar10.FOLDER}/data_batch_2"
    where = f"{raw / cifar10.ARCHIVE}:{member}" if archive else str(raw / member)
    with pytest.raises(UserError) as err:
        prepare({"name": "cifar10", "layout": "cifar10"}, raw, tmp_path / "out")
    message = one_line(err)
    assert message.startswith(f"{where} is refused as a pickle (it names pathlib"), message
    assert "re-download cifar-10-python.tar.gz" in message and "/tmp" not in message.replace(str(tmp_path), "")
    assert not target.exists() and not (tmp_path / "out").exists()


@pytest.mark.subprocess
def test_cli_shows_the_refusal_as_one_line_and_exit_2(tmp_path):
    raw, target = make_cub(tmp_path / "raw"), tmp_path / "pwned"
    (raw / "train" / "filenames.pickle").write_bytes(hostile("os.system", target))
    proc = subprocess.run([sys.executable, "-m", "stackgan.cli", "--params", str(REPO / "params.yaml"), "prepare",
                           "cub", "--raw", str(raw), "--out", str(tmp_path / "out")],
                          cwd=tmp_path, capture_output=True, text=True)
    assert proc.returncode == 2, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert lines == [f"stackgan: error: {raw / 'train' / 'filenames.pickle'} is refused as a pickle (it names "
                     f"posix.system, which a data file never needs); re-download the metadata (Google Drive id "
                     f"{cub.BIRDS_DRIVE_ID})"], proc.stderr
    assert not target.exists() and not (tmp_path / "out").exists()


# ---------------------------------------------------------------- embeddings, filenames, class_info
def _emb(raw: Path, split="train") -> Path:
    return raw / split / "char-CNN-RNN-embeddings.pickle"


def _py2(path: Path):
    """A fixture's own Python-2 pickle, read back as numpy reads Python 2's."""
    return pickle.loads(path.read_bytes(), encoding="latin1")


def _stored(raw, split="train"):
    return _py2(_emb(raw, split))


BAD_METADATA = {
    "NaN embedding": (lambda raw: _emb(raw).write_bytes(py2_pickle_bytes(_nan(_stored(raw), 2))),
                      "char-CNN-RNN-embeddings.pickle holds NaN or infinite values for 1 of 4 images (the first "
                      "002.Bb_Bird/Bb_Bird_0003_13)"),
    "inf embedding": (lambda raw: _emb(raw).write_bytes(py2_pickle_bytes(_nan(_stored(raw), 0, np.inf))),
                      "holds NaN or infinite values for 1 of 4 images (the first 001.Aa_Bird/Aa_Bird_0001_11)"),
    "float32 overflow": (lambda raw: _emb(raw).write_bytes(py2_pickle_bytes(_nan(_stored(raw).astype(np.float64),
                                                                                  1, 1e300))),
                         "holds NaN or infinite values for 1 of 4 images (the first 001.Aa_Bird/Aa_Bird_0002_12)"),
    "dict": (lambda raw: _emb(raw).write_bytes(pickle.dumps({"emb": _stored(raw)}, protocol=2)),
             "char-CNN-RNN-embeddings.pickle does not hold an array of embeddings (it holds a dict of object)"),
    "strings": (lambda raw: _emb(raw).write_bytes(py2_pickle_bytes(["0.5"] * 4)),
                "does not hold an array of embeddings (it holds a list of <U3)"),
    "ragged list": (lambda raw: _emb(raw).write_bytes(py2_pickle_bytes([a[:9] if i == 2 else a
                                                                        for i, a in enumerate(_stored(raw))])),
                    "does not hold an array of embeddings (it holds a list)"),
    "bool array": (lambda raw: _emb(raw).write_bytes(py2_pickle_bytes(_stored(raw) > 0)),
                   "(it holds a ndarray of bool)"),
    "4-d": (lambda raw: _emb(raw).write_bytes(py2_pickle_bytes(_stored(raw)[..., None])),
            "holds embeddings of shape (4, 10, 16, 1) for 4 filenames (expected (4, captions, width))"),
    "no captions": (lambda raw: _emb(raw).write_bytes(py2_pickle_bytes(_stored(raw)[:, :0])),
                    "holds embeddings of shape (4, 0, 16) for 4 filenames"),
    "count": (lambda raw: _emb(raw).write_bytes(py2_pickle_bytes(_stored(raw)[:3])),
              "holds embeddings of shape (3, 10, 16) for 4 filenames"),
    "class_info length": (lambda raw: (raw / "test" / "class_info.pickle").write_bytes(py2_pickle_bytes([3])),
                          "test/class_info.pickle has 1 entries for 2 filenames"),
    "class_info floats": (lambda raw: (raw / "test" / "class_info.pickle").write_bytes(
        py2_pickle_bytes(np.array([3.0, 3.5]))), "test/class_info.pickle does not hold a list of integer class ids "
        "(it holds a ndarray of float64)"),
    "class_info strings": (lambda raw: (raw / "test" / "class_info.pickle").write_bytes(py2_pickle_bytes(["3", "3"])),
                           "test/class_info.pickle does not hold a list of integer class ids (it holds a list of <U1)"),
    "filenames tuple": (lambda raw: (raw / "test" / "filenames.pickle").write_bytes(
        py2_pickle_bytes(("003.Cc_Bird/Cc_Bird_0005_15", "003.Cc_Bird/Cc_Bird_0006_16"))),
        "test/filenames.pickle does not hold a list of keys (non-empty printable strings)"),
    "filenames int": (lambda raw: (raw / "test" / "filenames.pickle").write_bytes(
        py2_pickle_bytes(["003.Cc_Bird/Cc_Bird_0005_15", 16])), "test/filenames.pickle does not hold a list of keys"),
    "filenames newline": (lambda raw: (raw / "test" / "filenames.pickle").write_bytes(
        py2_pickle_bytes(["003.Cc_Bird/Cc_Bird_0005_15", "003.Cc_Bird/Cc_Bird_0006_16\nx"])),
        "test/filenames.pickle does not hold a list of keys"),
    "filenames empty": (lambda raw: (raw / "test" / "filenames.pickle").write_bytes(py2_pickle_bytes([])),
                        "test/filenames.pickle lists no images"),
}


def _nan(array, index, value=np.nan):
    array = array.copy()
    array[index, 3, 5] = value
    return array


@pytest.mark.parametrize("case", list(BAD_METADATA))
def test_bad_metadata_is_one_line_naming_the_file(tmp_path, case):
    raw = make_cub(tmp_path / "raw")
    damage, needle = BAD_METADATA[case]
    damage(raw)
    with pytest.raises(UserError) as err, warnings.catch_warnings():
        warnings.simplefilter("error")  # no numpy warning before the message either
        prepare_layout("cub", raw, tmp_path / "out")
    message = one_line(err)
    assert needle in message and str(raw) in message and cub.BIRDS_DRIVE_ID in message, message
    assert sorted(p.name for p in tmp_path.iterdir()) == ["raw"]


@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_nan_embeddings_refused_for_every_layout(tmp_path, layout):
    raw = MAKERS[layout](tmp_path / "raw")
    _emb(raw, "test").write_bytes(py2_pickle_bytes(_nan(_stored(raw, "test"), 1)))
    with pytest.raises(UserError, match=r"test/char-CNN-RNN-embeddings.pickle holds NaN or infinite values") as err:
        prepare_layout(layout, raw, tmp_path / "out")
    assert DRIVE_IDS[layout, "test"] in one_line(err)


def test_embedding_width_is_checked_against_text_dim(tmp_path):
    raw = make_cub(tmp_path / "raw")
    with pytest.raises(UserError) as err:
        cub.prepare(raw, tmp_path / "out", CUB_VIEWS, text_dim=1024)
    assert one_line(err).startswith(f"{_emb(raw)} holds embeddings of width 16, expected 1024 (char-CNN-RNN, "
                                    "the models' text_dim); re-download the metadata")
    cub.prepare(raw, tmp_path / "out", CUB_VIEWS, text_dim=16)  # the width it holds passes


def test_list_of_arrays_gives_the_same_prepared_data_as_one_array(tmp_path):
    """The authors' pickles hold either form; both give the same float32 array (and float64 the same
    values as numpy's own cast)."""
    raw = make_cub(tmp_path / "raw")
    prepare_layout("cub", raw, tmp_path / "as-array")
    stacked = _stored(raw)
    _emb(raw).write_bytes(py2_pickle_bytes([a.astype(np.float64) for a in stacked]))
    prepare_layout("cub", raw, tmp_path / "as-list")
    a, b = PreparedSplit(tmp_path / "as-array", "train"), PreparedSplit(tmp_path / "as-list", "train")
    assert a.embeddings.dtype == b.embeddings.dtype == np.float32
    np.testing.assert_array_equal(a.embeddings, b.embeddings)
    np.testing.assert_array_equal(b.embeddings, stacked)


# ---------------------------------------------------------------- CUB text tables
BOXES = "CUB_200_2011/bounding_boxes.txt"


def _set_box(raw: Path, line: int, text: str):
    path = raw / BOXES
    lines = path.read_text().splitlines()
    lines[line - 1] = f"{line} {text}"
    path.write_text("\n".join(lines) + "\n")


@pytest.mark.parametrize("line,box,needle", [
    (2, "10 20 x 40", "line 2: '10 20 x 40' is not four finite numbers"),
    (3, "50 60 inf 29", "line 3: '50 60 inf 29' is not four finite numbers"),
    (1, "nan 30 33 21", "line 1: 'nan 30 33 21' is not four finite numbers"),
    (4, "1e999 0 10 10", "line 4: '1e999 0 10 10' is not four finite numbers"),
    (5, "20 30 -40 50", "line 5: box (20, 30, -40, 50) has a width or height below 1"),
    (6, "5 5 60 0", "line 6: box (5, 5, 60, 0) has a width or height below 1"),
    (2, "100 20 30 40", "line 2: box (100, 20, 30, 40) of 001.Aa_Bird/Aa_Bird_0002_12 lies outside its 100x80 image"),
    (5, "-50 30 40 50", "line 5: box (-50, 30, 40, 50) of 003.Cc_Bird/Cc_Bird_0005_15 lies outside its 80x120 image"),
])
def test_bad_bounding_box_names_file_and_line(tmp_path, line, box, needle):
    raw = make_cub(tmp_path / "raw")
    _set_box(raw, line, box)
    with pytest.raises(UserError) as err:
        prepare_layout("cub", raw, tmp_path / "out")
    message = one_line(err)
    assert message.startswith(f"{raw / BOXES} {needle}; the file is damaged, re-extract bounding_boxes.txt"), message
    assert sorted(p.name for p in tmp_path.iterdir()) == ["raw"]


def test_bad_attribute_ids_name_file_and_line(tmp_path):
    raw = make_cub(tmp_path / "raw")
    keys = [k for s in ("train", "test") for k in _py2(raw / s / "filenames.pickle")]
    rows = [f"{k} {i % 2}" for i, k in enumerate(keys)]
    rows[2] = f"{keys[2]} 7"
    (raw / cub.ATTRIBUTE_FILE).write_text("# colour: 0=red 1=blue\n" + "\n".join(rows) + "\n")
    with pytest.raises(UserError) as err:
        prepare_layout("cub", raw, tmp_path / "out")
    assert one_line(err) == (f"{raw / cub.ATTRIBUTE_FILE} line 4: ids '7' are not all attribute value ids listed "
                             "in the header; regenerate the synthetic dataset")
    rows[2] = f"{keys[2]} one"
    (raw / cub.ATTRIBUTE_FILE).write_text("# colour: 0=red 1=blue\n" + "\n".join(rows) + "\n")
    with pytest.raises(UserError, match="line 4: ids 'one' are not all attribute value ids"):
        prepare_layout("cub", raw, tmp_path / "out")


# ---------------------------------------------------------------- CIFAR-10 batches, SVHN labels, .t7
def _batch(seed=0, **fields):
    rng = np.random.default_rng(seed)
    batch = {"data": rng.integers(0, 256, (6, 3072), dtype=np.uint8),
             "labels": [int(v) for v in rng.integers(0, 10, 6)]}
    batch.update(fields)
    return {k: v for k, v in batch.items() if v is not None}


@pytest.mark.parametrize("batch,needle", [
    ([1, 2, 3], "is not a CIFAR-10 batch (no data/labels)"),
    (_batch(labels=None), "is not a CIFAR-10 batch (no data/labels)"),
    (_batch(data=np.zeros((6, 3072), np.float32)), "holds data float32 (6, 3072) and labels int64 (6,), expected"),
    (_batch(data=np.zeros((6, 3000), np.uint8)), "holds data uint8 (6, 3000)"),
    (_batch(data=np.zeros((6, 32, 32, 3), np.uint8)), "holds data uint8 (6, 32, 32, 3)"),
    (_batch(labels=[str(i) for i in range(6)]), "holds data uint8 (6, 3072) and labels <U1 (6,)"),
    (_batch(labels=[0.0, 1.0, 2.0, 3.0, 4.0, 5.5]), "holds data uint8 (6, 3072) and labels float64 (6,)"),
    (_batch(labels=[[0]] * 6), "holds data uint8 (6, 3072) and labels int64 (6, 1)"),
    (_batch(labels=[0, 1, 2]), "holds data uint8 (6, 3072) and labels int64 (3,)"),
    (_batch(labels=[0, 1, [2, 3], 3, 4, 5]), "holds data or labels that are not arrays"),
    (_batch(labels=[0, 1, 2, 3, 4, 10]), "has labels outside 0..9"),
])
def test_bad_cifar_batch_is_one_line(tmp_path, batch, needle):
    raw = tmp_path / "raw"
    write_cifar(raw)
    path = raw / cifar10.FOLDER / "test_batch"
    path.write_bytes(pickle.dumps(batch, protocol=2))
    with pytest.raises(UserError) as err:
        prepare({"name": "cifar10", "layout": "cifar10"}, raw, tmp_path / "out")
    message = one_line(err)
    assert message.startswith(f"{path} {needle}") and "cifar-10-python.tar.gz" in message, message
    assert sorted(p.name for p in tmp_path.iterdir()) == ["raw"]


def test_valid_cifar_batch_still_decodes_bytes_keys_and_numpy_labels(tmp_path):
    raw = tmp_path / "raw"
    write_cifar(raw)
    batch = _batch(3)
    labels = np.array(batch["labels"], dtype=np.int32)
    (raw / cifar10.FOLDER / "test_batch").write_bytes(pickle.dumps({b"data": batch["data"], b"labels": labels}))
    prepare({"name": "cifar10", "layout": "cifar10"}, raw, tmp_path / "out")
    test = PreparedSplit(tmp_path / "out", "test")
    assert test.class_ids.dtype == np.int64 and test.class_ids.tolist() == labels.tolist()
    assert np.array_equal(test.image("native32", 0).transpose(2, 0, 1).reshape(-1), batch["data"][0])


@pytest.mark.parametrize("y", [np.array([[1.0], [np.nan]]), np.array([[1.0], [2.5]])])
def test_svhn_labels_must_be_whole_numbers(tmp_path, y):
    raw = tmp_path / "raw"
    write_svhn(raw)
    scipy.io.savemat(raw / svhn.FILES["test"], {"X": np.zeros((32, 32, 3, 2), np.uint8), "y": y})
    with pytest.raises(UserError) as err:
        prepare({"name": "svhn", "layout": "svhn"}, raw, tmp_path / "out")
    assert one_line(err).startswith(f"{raw / svhn.FILES['test']}: labels must be the integers 1..10")


def test_t7_nan_embedding_is_refused(tmp_path):
    emb = np.random.default_rng(0).standard_normal((3, 1024)).astype(np.float32)
    emb[2, 7] = np.nan
    path = tmp_path / "c.t7"
    path.write_bytes(caption_file_bytes(["a", "b", "c"], emb))
    with pytest.raises(UserError) as err:
        read_caption_embeddings(path, "download it again")
    assert one_line(err) == f"{path}: fea_txt[3] holds NaN or infinite values (as float32); download it again"
