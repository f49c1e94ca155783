"""Native readers (CIFAR-10 pickles, MNIST IDX, SVHN .mat) -> prepared format -> LabelledImages,
on tiny fixtures written in the exact native formats."""

import gzip
import json
import pickle
import struct
import tarfile

import numpy as np
import pytest
import torch

from stackgan.data import cifar10, mnist, svhn
from stackgan.data.labelled import LabelledImages, class_order, load_images, pixel_mean
from stackgan.data.prepared import PreparedSplit
from stackgan.errors import UserError

PER_BATCH = 6  # images per CIFAR batch in the fixture


def cifar_batch(seed, n=PER_BATCH, bytes_keys=False):
    rng = np.random.default_rng(seed)
    data = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
    labels = [int(v) for v in rng.integers(0, 10, n)]
    key = (lambda s: s.encode()) if bytes_keys else (lambda s: s)
    return {key("data"): data, key("labels"): labels, key("batch_label"): "fixture"}


def write_cifar(raw, archive=False, bytes_keys=False):
    folder = raw / cifar10.FOLDER
    folder.mkdir(parents=True)
    batches = {}
    for i, name in enumerate(cifar10.BATCHES["train"] + cifar10.BATCHES["test"]):
        batches[name] = cifar_batch(i, bytes_keys=bytes_keys)
        (folder / name).write_bytes(pickle.dumps(batches[name], protocol=2))
    if archive:
        with tarfile.open(raw / cifar10.ARCHIVE, "w:gz") as tar:
            tar.add(folder, arcname=cifar10.FOLDER)
        for f in folder.iterdir():
            f.unlink()
        folder.rmdir()
    return batches


@pytest.mark.parametrize("archive,bytes_keys", [(False, False), (True, True)])
def test_cifar10_prepare_end_to_end(tmp_path, archive, bytes_keys):
    batches = write_cifar(tmp_path / "raw", archive=archive, bytes_keys=bytes_keys)
    manifest = cifar10.prepare(tmp_path / "raw", tmp_path / "out",
                               expected_counts={"train": 5 * PER_BATCH, "test": PER_BATCH})
    assert manifest["splits"]["train"]["count"] == 5 * PER_BATCH
    assert manifest["views"] == {"native32": {"mode": "native", "size": 32}}
    assert "train/images_native32.u8" in manifest["files"] and manifest["sources"]
    train, test = PreparedSplit(tmp_path / "out", "train"), PreparedSplit(tmp_path / "out", "test")
    assert train.embeddings is None and train.captions is None
    first = batches["data_batch_1"]
    raw_first = first[b"data" if bytes_keys else "data"][0]
    img = train.image("native32", 0)
    # channel-planar row: R plane, then G, then B; pixel (0, 1) of G is byte 1024 + 1
    assert img.shape == (32, 32, 3) and img[0, 1, 1] == raw_first[1024 + 1] and img[31, 31, 2] == raw_first[3071]
    second_batch_first = batches["data_batch_2"][b"data" if bytes_keys else "data"][0]
    assert np.array_equal(train.image("native32", PER_BATCH).transpose(2, 0, 1).reshape(-1), second_batch_first)
    labels = first[b"labels" if bytes_keys else "labels"]
    assert train.class_ids[:PER_BATCH].tolist() == labels
    assert len(test) == PER_BATCH and test.class_ids.dtype == np.int64
    assert json.loads((tmp_path / "out" / "manifest.json").read_text())["dataset"] == "cifar10"


def test_cifar10_bad_inputs(tmp_path):
    raw = tmp_path / "raw"
    with pytest.raises(UserError, match="cifar-10-python.tar.gz"):
        cifar10.prepare(raw, tmp_path / "out")
    write_cifar(raw)
    with pytest.raises(UserError, match="expected 50000"):
        cifar10.prepare(raw, tmp_path / "out", expected_counts={"train": 50000})
    batch = raw / cifar10.FOLDER / "data_batch_3"
    batch.write_bytes(batch.read_bytes()[:500])  # truncated
    with pytest.raises(UserError, match="data_batch_3.*truncated"):
        cifar10.prepare(raw, tmp_path / "out")
    batch.write_bytes(pickle.dumps({"data": np.zeros((2, 100), np.uint8), "labels": [0, 1]}))
    with pytest.raises(UserError, match="data_batch_3.*3072"):
        cifar10.prepare(raw, tmp_path / "out")
    batch.unlink()
    with pytest.raises(UserError, match="data_batch_3 is missing"):
        cifar10.prepare(raw, tmp_path / "out")
    assert not (tmp_path / "out").exists()
    assert not list(tmp_path.glob(".out.*"))  # nothing half-written left behind
    (tmp_path / "raw2").mkdir()
    (tmp_path / "raw2" / cifar10.ARCHIVE).write_bytes(b"\x1f\x8b\x08\x00broken")
    with pytest.raises(UserError, match="corrupt or truncated"):
        cifar10.prepare(tmp_path / "raw2", tmp_path / "out")


def idx_bytes(array, magic):
    return struct.pack(f">I{array.ndim}I", magic, *array.shape) + array.astype(np.uint8).tobytes()


def write_mnist(raw, n_train=12, n_test=5):
    raw.mkdir(parents=True)
    rng = np.random.default_rng(0)
    arrays = {}
    for split, n in (("train", n_train), ("test", n_test)):
        images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        labels = np.arange(n) % 10
        image_name, label_name = mnist.FILES[split]
        (raw / f"{image_name}.gz").write_bytes(gzip.compress(idx_bytes(images, 0x803)))
        (raw / f"{label_name}.gz").write_bytes(gzip.compress(idx_bytes(labels, 0x801)))
        arrays[split] = (images, labels)
    return arrays


def test_mnist_prepare_end_to_end_with_limit(tmp_path):
    arrays = write_mnist(tmp_path / "raw")
    mnist.prepare(tmp_path / "raw", tmp_path / "full", expected_counts={"train": 12, "test": 5})
    full = PreparedSplit(tmp_path / "full", "train")
    assert full.image("native28", 3).shape == (28, 28, 3)
    assert np.array_equal(full.image("native28", 3)[..., 0], arrays["train"][0][3])
    assert np.array_equal(full.image("native28", 3)[..., 2], arrays["train"][0][3])
    manifest = mnist.prepare(tmp_path / "raw", tmp_path / "small", limit=10,
                             expected_counts={"train": 60000, "test": 10000})  # limit: no count check
    small = PreparedSplit(tmp_path / "small", "train")
    # 12 labels 0..9,0,1 -> 10 spread over classes: one of each digit, in file order
    assert sorted(small.class_ids.tolist()) == list(range(10)) and manifest["limit"] == 10
    assert manifest["splits"]["test"]["count"] == 5


def test_mnist_bad_inputs(tmp_path):
    raw = tmp_path / "raw"
    write_mnist(raw)
    images = raw / "train-images-idx3-ubyte.gz"
    good = images.read_bytes()
    images.write_bytes(good[: len(good) // 2])  # truncated gzip stream
    with pytest.raises(UserError, match="train-images-idx3-ubyte.gz.*truncated"):
        mnist.prepare(raw, tmp_path / "out")
    images.write_bytes(gzip.compress(idx_bytes(np.zeros((12, 28, 28)), 0x801)))  # wrong magic
    with pytest.raises(UserError, match="magic number 2051"):
        mnist.prepare(raw, tmp_path / "out")
    images.write_bytes(gzip.compress(idx_bytes(np.zeros((12, 28, 28)), 0x803)[:-10]))  # short data
    with pytest.raises(UserError, match="header announces"):
        mnist.prepare(raw, tmp_path / "out")
    images.write_bytes(gzip.compress(idx_bytes(np.zeros((11, 28, 28)), 0x803)))
    with pytest.raises(UserError, match="11 images but .* 12 labels"):
        mnist.prepare(raw, tmp_path / "out")
    (raw / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(UserError, match="t10k-labels-idx1-ubyte.gz not found"):
        mnist.prepare(raw, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def write_svhn(raw, n_train=7, n_test=4):
    import scipy.io

    raw.mkdir(parents=True)
    rng = np.random.default_rng(1)
    out = {}
    for split, n in (("train", n_train), ("test", n_test)):
        x = rng.integers(0, 256, (32, 32, 3, n), dtype=np.uint8)
        y = (np.arange(n) % 10 + 1).reshape(-1, 1).astype(np.uint8)  # 1..10, 10 = digit 0
        scipy.io.savemat(raw / svhn.FILES[split], {"X": x, "y": y})
        out[split] = (x, y)
    return out


def test_svhn_prepare_end_to_end(tmp_path):
    arrays = write_svhn(tmp_path / "raw", n_train=12)
    svhn.prepare(tmp_path / "raw", tmp_path / "out", expected_counts={"train": 12, "test": 4})
    train = PreparedSplit(tmp_path / "out", "train")
    assert train.class_ids.tolist() == [1, 2, 3, 4, 5, 6, 7, 8, 9, 0, 1, 2]  # 10 -> digit 0
    x = arrays["train"][0]
    assert np.array_equal(train.image("native32", 5), x[..., 5])


def test_svhn_bad_inputs(tmp_path):
    import scipy.io

    raw = tmp_path / "raw"
    write_svhn(raw)
    with pytest.raises(UserError, match="expected 73257"):
        svhn.prepare(raw, tmp_path / "out", expected_counts={"train": 73257})
    mat = raw / "test_32x32.mat"
    mat.write_bytes(mat.read_bytes()[:300])
    with pytest.raises(UserError, match="test_32x32.mat cannot be read"):
        svhn.prepare(raw, tmp_path / "out")
    scipy.io.savemat(mat, {"X": np.zeros((32, 32, 3, 2), np.uint8), "y": np.array([[0], [11]])})
    with pytest.raises(UserError, match="1..10"):
        svhn.prepare(raw, tmp_path / "out")
    scipy.io.savemat(mat, {"images": np.zeros(3)})
    with pytest.raises(UserError, match="no X/y"):
        svhn.prepare(raw, tmp_path / "out")
    mat.unlink()
    with pytest.raises(UserError, match="test_32x32.mat not found"):
        svhn.prepare(raw, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_labelled_images_cifar_space_and_mean(tmp_path):
    write_cifar(tmp_path / "raw")
    cifar10.prepare(tmp_path / "raw", tmp_path / "out")
    split = PreparedSplit(tmp_path / "out", "train")
    images = load_images(split, "native32")
    mean = pixel_mean(images)
    assert mean.shape == (3, 32, 32)
    assert np.isclose(mean[1, 4, 7], images[:, 4, 7, 1].mean() / 255, atol=1e-6)
    data = LabelledImages(split, "native32", mean=mean)
    item = data[2]
    want = torch.from_numpy(images[2]).permute(2, 0, 1).float() / 255 - torch.from_numpy(mean)
    assert torch.allclose(item["x"], want) and item["y"].dtype == torch.int64
    stacked = torch.stack([data[i]["x"] for i in range(len(data))])
    assert stacked.mean(0).abs().max() < 1e-5  # mean-subtracted over the training split


def test_labelled_images_mnist_grey_and_remapped_classes(tmp_path):
    write_mnist(tmp_path / "raw")
    mnist.prepare(tmp_path / "raw", tmp_path / "out")
    split = PreparedSplit(tmp_path / "out", "train")
    data = LabelledImages(split, "native28", grey=True)
    assert data[0]["x"].shape == (1, 28, 28) and 0 <= data[0]["x"].min() and data[0]["x"].max() <= 1
    # remapping: a split holding class ids {3, 7, 12} becomes labels 0, 1, 2
    split.class_ids = np.array([12, 3, 7, 3, 12, 7, 7, 3, 12, 3, 7, 12])
    data = LabelledImages(split, "native28", grey=True)
    assert class_order(split).tolist() == [3, 7, 12]
    assert data.labels.tolist() == [2, 0, 1, 0, 2, 1, 1, 0, 2, 0, 1, 2]
    with pytest.raises(UserError, match="class id 12 is not among"):
        LabelledImages(split, "native28", grey=True, classes=[3, 7])
