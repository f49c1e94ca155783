"""Labelled image datasets (CIFAR-10, MNIST, SVHN, and the synthetic set seen by class): the
prepared format written from decoded arrays, and read back as (image, label) for SGAN.

Writing: the native readers (cifar10.py, mnist.py, svhn.py) decode their archives into uint8
(N, H, W, 3) arrays and int64 labels and call `write_prepared`, which stores one view named
`native<H>` per split in the format of stackgan/data/prepared.py (no embeddings or captions),
in a temporary folder renamed into place only when complete.

Reading: `LabelledImages` yields {"x": float (C, H, W), "y": int64} in SGAN's image space
(spec sgan-reference.md §3.4): x/255 minus the per-pixel training mean for CIFAR-like data,
raw [0, 1] single-channel for MNIST. Class ids are remapped to 0..K-1 in the order of the
sorted training class ids (the synthetic split holds 15 of 20 ids, not contiguous).
"""

from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from stackgan.data.device_resize import unit_range
from stackgan.data.shards import ShardWriter
from stackgan.data.staging import check_limit, check_output, commit, spread_selection
from stackgan.errors import UserError


def native_view(size: int) -> str:
    return f"native{size}"


def select(images, labels, limit):
    """Keep `limit` items spread over classes (the CI profile's subset), in file order."""
    if limit is None:
        return images, labels
    check_limit(limit)
    keep = spread_selection(labels, limit)
    return images[keep], labels[keep]


def check_count(split, count, expected_counts, limit, source):
    expected = (expected_counts or {}).get(split)
    if limit is None and expected is not None and count != expected:
        raise UserError(f"{source} holds {count} {split} images, expected {expected}; the download is "
                        "incomplete or another version, re-download it")


def _write_split(folder: Path, split: str, images: np.ndarray, labels: np.ndarray, view: str):
    folder.mkdir(parents=True)
    (folder / "keys.txt").write_text("".join(f"{split}_{i:05d}\n" for i in range(len(labels))))
    np.save(folder / "class_ids.npy", labels.astype(np.int64))
    with ShardWriter(folder, view) as writer:
        for image in images:
            writer.append(image)


def write_prepared(out_dir, dataset: str, splits: dict, sources: list, limit=None) -> dict:
    """splits: {name: (uint8 (N, H, W, 3), int (N,))}; sources: raw files hashed into the manifest.

    Returns the manifest written to out_dir/manifest.json.
    """
    out_dir = Path(out_dir)
    check_output(out_dir)
    sizes = {images.shape[1:3] for images, _ in splits.values()}
    if len(sizes) != 1 or len(set(next(iter(sizes)))) != 1:
        raise ValueError(f"all splits must hold square images of one size, got {sizes}")
    size = next(iter(sizes))[0]
    view = native_view(size)

    def write(tmp):
        for name, (images, labels) in splits.items():
            _write_split(tmp / name, name, images, np.asarray(labels), view)
        return {
            "dataset": dataset,
            "limit": limit,
            "views": {view: {"mode": "native", "size": size}},
            "splits": {name: {"count": int(len(labels)), "num_classes": int(len(np.unique(labels))),
                              "captions": False}
                       for name, (_, labels) in splits.items()},
        }

    return commit(out_dir, write, {Path(p).name: p for p in sources})


def load_images(split, view: str) -> np.ndarray:
    """Every image of a prepared split's view as one uint8 (N, H, W, 3) array (fixed size only)."""
    shard = split.shard(view)
    if len(shard) == 0:
        raise UserError(f"{split.dir}: view '{view}' holds no images; re-run `stackgan prepare`")
    if len(np.unique(shard.index[:, 1:], axis=0)) != 1:
        raise UserError(f"{split.dir}: view '{view}' holds images of several sizes; SGAN needs a "
                        "fixed-size view such as native32 or sq32")
    return np.stack([shard[i] for i in range(len(shard))])


def pixel_mean(images: np.ndarray) -> np.ndarray:
    """Per-pixel mean of x/255 over the images: float32 (3, H, W), what the reference subtracts."""
    total = np.zeros(images.shape[1:], dtype=np.float64)
    for start in range(0, len(images), 4096):
        total += images[start:start + 4096].sum(axis=0, dtype=np.float64)
    return (total / (255.0 * len(images))).transpose(2, 0, 1).astype(np.float32)


def class_order(split) -> np.ndarray:
    """The split's distinct class ids, sorted: label k stands for class id class_order[k]."""
    return np.unique(np.asarray(split.class_ids))


def contiguous_labels(class_ids, classes, where) -> np.ndarray:
    classes = np.asarray(classes)
    pos = np.searchsorted(classes, class_ids)
    pos = np.clip(pos, 0, len(classes) - 1)
    bad = classes[pos] != class_ids
    if bad.any():
        raise UserError(f"{where}: class id {int(np.asarray(class_ids)[bad][0])} is not among the "
                        f"{len(classes)} training classes; SGAN conditions on training classes only")
    return pos.astype(np.int64)


class LabelledImages(Dataset):
    """(image, label) items in SGAN's image space; no augmentation (the reference uses none).

    grey: keep one channel (MNIST, stored as three equal channels); mean: (3, H, W) in [0, 1]
    subtracted from x/255 (None: raw [0, 1]); classes: class ids in label order (default: the
    split's own, sorted); input_on_device: items carry the uint8 image and `finish_on_device`
    maps the batch to model space on its device, to the same bits.
    """

    def __init__(self, split, view: str, grey=False, mean=None, classes=None, input_on_device=False):
        self.input_on_device = input_on_device
        images = load_images(split, view)
        self.images = torch.from_numpy(images).permute(0, 3, 1, 2)  # uint8 NCHW
        if grey:
            self.images = self.images[:, :1].contiguous()
        self.mean = None if mean is None else torch.as_tensor(np.asarray(mean), dtype=torch.float32)
        if self.mean is not None and self.mean.shape != self.images.shape[1:]:
            raise UserError(f"{split.dir}: mean image {tuple(self.mean.shape)} does not fit images "
                            f"{tuple(self.images.shape[1:])}; retrain the encoder on this prepared dataset")
        self._device_mean = self.mean  # the mean on the images' device, moved there once
        self.classes = class_order(split) if classes is None else np.asarray(classes)
        self.labels = torch.from_numpy(contiguous_labels(np.asarray(split.class_ids), self.classes, split.dir))

    def set_epoch(self, epoch: int):
        """Items do not depend on the epoch (no augmentation during GAN training)."""

    def __len__(self) -> int:
        return len(self.labels)

    def to_model_space(self, images_uint8: torch.Tensor) -> torch.Tensor:
        """x / 255 minus the mean, on the images' device, the same bits on every device."""
        x = unit_range(images_uint8)
        if self.mean is None:
            return x
        if self._device_mean.device != x.device:
            self._device_mean = self.mean.to(x.device)
        return x - self._device_mean

    def __getitem__(self, index: int) -> dict:
        image = self.images[index]
        return {"x": image if self.input_on_device else self.to_model_space(image), "y": self.labels[index]}

    def finish_on_device(self, batch: dict, memory_format=torch.contiguous_format) -> dict:
        """A collated batch (on any device) with "x" in model space, as the CPU path makes it, in
        memory_format; the batch itself when input_on_device is False."""
        if not self.input_on_device:
            return batch
        return {**batch, "x": self.to_model_space(batch["x"]).contiguous(memory_format=memory_format)}
