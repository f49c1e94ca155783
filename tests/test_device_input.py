"""The device input path: uint8 crops resized and normalised on the batch's device give the
same bits as the CPU path (PIL bilinear resize, to_tensor), item for item."""

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import default_collate

from stackgan.data import cub, synthetic
from stackgan.data.device_resize import resize_bilinear, signed_range, unit_range
from stackgan.data.labelled import LabelledImages, load_images, pixel_mean, write_prepared
from stackgan.data.loader import ImageOnlyDataset, TextImageDataset
from stackgan.data.prepared import PreparedSplit

VIEW = "short80"
# (input side, output sides): the paper's downscales, odd ratios, identity and upscales
SIZES = [(64, [32, 16]), (256, [128, 64]), (128, [64]), (76, [38, 64]), (75, [31]), (300, [47]),
         (20, [20, 8]), (16, [40, 33])]


def pil_resize(image: np.ndarray, h: int, w: int) -> np.ndarray:
    return np.asarray(Image.fromarray(image).resize((w, h), Image.BILINEAR))


def random_images(rng, n, h, w):
    """Noise, pure black/white (extremes of the fixed-point sums) and flat images."""
    noise = rng.integers(0, 256, (n, h, w, 3), dtype=np.uint8)
    binary = rng.choice(np.array([0, 255], np.uint8), (n, h, w, 3))
    flat = np.broadcast_to(rng.integers(0, 256, (n, 1, 1, 3), dtype=np.uint8), (n, h, w, 3))
    return np.concatenate([noise, binary, flat])


def check_resize_like_pil(device):
    rng = np.random.default_rng(0)
    for side, outs in SIZES:
        images = random_images(rng, 2, side, side + 3)  # non-square too: each axis on its own
        batch = torch.from_numpy(images).permute(0, 3, 1, 2).to(device)
        for out in outs:
            for h, w in ((out, out), (out, side + 3), (side, out)):
                got = resize_bilinear(batch, (h, w)).permute(0, 2, 3, 1).cpu().numpy()
                want = np.stack([pil_resize(im, h, w) for im in images])
                assert np.array_equal(got, want), (side, h, w)


def test_resize_is_pil_bilinear_bit_for_bit():
    check_resize_like_pil("cpu")


def test_resize_takes_any_layout_and_only_uint8():
    images = torch.randint(0, 256, (3, 3, 40, 40), dtype=torch.uint8)
    cl = images.contiguous(memory_format=torch.channels_last)
    assert torch.equal(resize_bilinear(cl, 20), resize_bilinear(images, 20))
    assert resize_bilinear(images[0], 13).shape == (3, 13, 13)
    with pytest.raises(TypeError, match="uint8"):
        resize_bilinear(images.float(), 20)


def test_normalisation_tables_are_the_cpu_arithmetic():
    x = torch.arange(256, dtype=torch.uint8).reshape(4, 8, 8)
    assert torch.equal(unit_range(x), x.float().div(255))
    assert torch.equal(signed_range(x), x.float().div(255).sub(0.5).div(0.5))
    assert unit_range(x).dtype == torch.float32 and unit_range(x).shape == x.shape


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    base = tmp_path_factory.mktemp("device_input")
    raw = synthetic.generate(base / "raw", num_images=24, seed=0)
    cub.prepare(raw, base / "prepared", {VIEW: {"mode": "short", "size": 80, "resample": "bilinear"}})
    return base / "prepared"


def datasets(split, on_device):
    yield TextImageDataset(split, VIEW, [16, 32, 64], seed=3, input_on_device=on_device)
    yield TextImageDataset(split, VIEW, [64], seed=4, wrong_rule="v1tf", input_on_device=on_device)
    yield TextImageDataset(split, VIEW, [19, 76], num_embeddings=4, flip=False, seed=5,
                           input_on_device=on_device)
    yield ImageOnlyDataset(split, VIEW, [32, 64], seed=6, input_on_device=on_device)


def collated(data, epoch, indices):
    data.set_epoch(epoch)
    return default_collate([data[i] for i in indices])


def assert_same_batch(got, want, memory_format=torch.contiguous_format):
    assert got.keys() == want.keys()
    for k, v in want.items():
        if isinstance(v, list):
            assert len(got[k]) == len(v), k
            for a, b in zip(got[k], v):
                assert a.dtype == torch.float32 and torch.equal(a.cpu(), b), k
                assert a.is_contiguous(memory_format=memory_format), k
        else:
            assert torch.equal(got[k].cpu(), v), k


def check_datasets_like_cpu(split, device):
    for cpu, dev in zip(datasets(split, False), datasets(split, True)):
        for epoch, indices in ((0, [0, 5, 7, 11]), (2, [17, 1, 9])):
            want = collated(cpu, epoch, indices)
            raw = collated(dev, epoch, indices)
            size = max(dev.imsizes)
            for k in ("imgs", "wrong_imgs"):
                if k in raw:
                    assert raw[k].dtype == torch.uint8 and raw[k].shape == (len(indices), 3, size, size)
            moved = {k: v.to(device) for k, v in raw.items()}
            for fmt in (torch.contiguous_format, torch.channels_last):
                assert_same_batch(dev.finish_on_device(dict(moved), fmt), want, fmt)


def test_device_input_items_equal_the_cpu_path(root):
    check_datasets_like_cpu(PreparedSplit(root, "train"), "cpu")


def test_finish_is_the_identity_without_device_input(root):
    split = PreparedSplit(root, "train")
    for data in datasets(split, False):
        batch = collated(data, 1, [2, 3])
        assert data.finish_on_device(batch, torch.channels_last) is batch


@pytest.fixture(scope="module")
def cifar(tmp_path_factory):
    """A CIFAR-like prepared split: 30 random 32 px images, labels 0..9."""
    out = tmp_path_factory.mktemp("device_cifar") / "out"
    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, (30, 32, 32, 3), dtype=np.uint8)
    write_prepared(out, "cifar10", {"train": (images, np.arange(30) % 10)}, sources=[])
    return PreparedSplit(out, "train")


def check_labelled_like_cpu(split, device):
    mean = pixel_mean(load_images(split, "native32"))
    for kwargs in ({"mean": mean}, {"grey": True}, {}):
        cpu = LabelledImages(split, "native32", **kwargs)
        dev = LabelledImages(split, "native32", input_on_device=True, **kwargs)
        want = default_collate([cpu[i] for i in range(len(cpu))])
        raw = default_collate([dev[i] for i in range(len(dev))])
        assert raw["x"].dtype == torch.uint8
        moved = {k: v.to(device) for k, v in raw.items()}
        for fmt in (torch.contiguous_format, torch.channels_last):
            got = dev.finish_on_device(dict(moved), fmt)
            assert got["x"].device.type == torch.device(device).type
            assert got["x"].is_contiguous(memory_format=fmt)
            assert torch.equal(got["x"].cpu(), want["x"]) and torch.equal(got["y"].cpu(), want["y"])
        plain = default_collate([cpu[0], cpu[1]])
        assert cpu.finish_on_device(plain, torch.channels_last) is plain


def test_labelled_device_input_equals_the_cpu_path(cifar):
    check_labelled_like_cpu(cifar, "cpu")


def test_labelled_cpu_items_keep_the_reference_arithmetic(cifar):
    """The CPU items, now through the shared table, are still x / 255 - mean as float ops."""
    images = load_images(cifar, "native32")
    mean = pixel_mean(images)
    data = LabelledImages(cifar, "native32", mean=mean)
    for i in (0, 7):
        want = torch.from_numpy(images[i]).permute(2, 0, 1).float().div(255) - torch.from_numpy(mean)
        assert torch.equal(data[i]["x"], want)


@pytest.mark.gpu
def test_cuda_device_input_equals_the_cpu_path(root, cifar):
    check_resize_like_pil("cuda")
    x = torch.arange(256, dtype=torch.uint8)
    assert torch.equal(signed_range(x.cuda()).cpu(), x.float().div(255).sub(0.5).div(0.5))
    check_datasets_like_cpu(PreparedSplit(root, "train"), "cuda")
    check_labelled_like_cpu(cifar, "cuda")
