"""Image inputs for scoring: folders, in-memory arrays and datasets, all seen as a torch Dataset
of uint8 CHW tensors (what torch-fidelity's feature extractors take), plus the one resize rule
of IS*/FID* and a content hash that keys reference-statistics caches."""

import hashlib
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import Dataset

from stackgan.errors import UserError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
RESIZE_RULE = "torch.nn.functional.interpolate(mode=bilinear, antialias=True, align_corners=False), rounded to uint8"


def resize_uint8(x: torch.Tensor, size) -> torch.Tensor:
    """Resize uint8 (N,3,H,W) or (3,H,W) images to `size` (int side or (h, w)); no-op if equal.

    Antialiased bilinear (torch's antialias follows PIL's filter support), so downsampling
    256->64 averages instead of aliasing.
    """
    size = (size, size) if isinstance(size, int) else tuple(size)
    single = x.dim() == 3
    batch = x.unsqueeze(0) if single else x
    if tuple(batch.shape[-2:]) != size:
        y = F.interpolate(batch.float(), size=size, mode="bilinear", antialias=True, align_corners=False)
        batch = y.round_().clamp_(0, 255).to(torch.uint8)
    return batch[0] if single else batch


def to_uint8_nchw(images) -> torch.Tensor:
    """A uint8 batch from a (N,3,H,W) tensor, a (N,H,W,3) array or a list of (H,W,3) arrays."""
    if isinstance(images, torch.Tensor):
        if images.dtype != torch.uint8 or images.dim() != 4 or images.shape[1] != 3:
            raise UserError(f"image tensor must be uint8 (N,3,H,W); got {images.dtype} {tuple(images.shape)}")
        return images
    arr = np.stack(images) if isinstance(images, (list, tuple)) else np.asarray(images)
    if arr.dtype != np.uint8 or arr.ndim != 4 or arr.shape[-1] != 3:
        raise UserError(f"image array must be uint8 (N,H,W,3); got {arr.dtype} {arr.shape}")
    return torch.from_numpy(np.ascontiguousarray(arr.transpose(0, 3, 1, 2)))


def list_image_files(folder) -> list[Path]:
    folder = Path(folder)
    if not folder.is_dir():
        what = "is not a folder" if folder.exists() else "not found"
        raise UserError(f"{folder} {what}; pass a folder of .png/.jpg images (e.g. a `stackgan sample` folder)")
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise UserError(f"{folder} holds no .png/.jpg images; sample or prepare images into it first")
    return files


# What PIL raises for a file it cannot identify (OSError), a broken or truncated image
# (OSError, SyntaxError, ValueError) or a decompression bomb.
_DECODE_ERRORS = (OSError, SyntaxError, ValueError, Image.DecompressionBombError)


# Modes scipy.misc.imread (the authors' reader) returns as a 2-d uint8 array.
SINGLE_CHANNEL_MODES = ("L", "1")


class FolderImages(Dataset):
    """Images of a folder in sorted file-name order (PIL decode, RGB). Every file's header is read
    up front (a non-image is named before any scoring); a broken image is named when decoded.
    `single_channel[i]`: file i is greyscale (a ruler may treat it apart, see ScoredView)."""

    def __init__(self, folder):
        self.files = list_image_files(folder)
        headers = [self._header(f) for f in self.files]
        self.sizes = [size for size, _ in headers]
        self.single_channel = [mode in SINGLE_CHANNEL_MODES for _, mode in headers]

    @staticmethod
    def _header(path):
        try:
            with Image.open(path) as im:
                return im.size, im.mode
        except _DECODE_ERRORS as err:
            raise UserError(f"{path} is not a readable image ({str(err)[:160]}); "
                            "remove it from the folder or replace it") from None

    def __len__(self):
        return len(self.files)

    def __getitem__(self, i):
        try:
            with Image.open(self.files[i]) as im:
                arr = np.asarray(im.convert("RGB"))
        except _DECODE_ERRORS as err:
            raise UserError(f"{self.files[i]} cannot be decoded ({str(err)[:160]}); "
                            "remove it from the folder or replace it") from None
        return torch.from_numpy(np.ascontiguousarray(arr.transpose(2, 0, 1)))


def require_one_size(dataset, why):
    """A folder whose images differ in size cannot be batched as it is; name the first odd one."""
    if not isinstance(dataset, FolderImages):
        return  # tensors and arrays have one size; other datasets answer for themselves
    sizes = dataset.sizes
    odd = next((i for i, size in enumerate(sizes) if size != sizes[0]), None)
    if odd is not None:
        (w0, h0), (w, h) = sizes[0], sizes[odd]
        raise UserError(f"{dataset.files[odd]} is {w}x{h} px but {dataset.files[0].name} is {w0}x{h0} px and {why}; "
                        f"score a folder of images of one size (or a protocol that resizes, e.g. is30k64_...)")


class TensorImages(Dataset):
    def __init__(self, batch: torch.Tensor):
        self.batch = batch

    def __len__(self):
        return self.batch.shape[0]

    def __getitem__(self, i):
        return self.batch[i]


class ScoredView(Dataset):
    """The first `count` items of a dataset, each resized to `size` (None = as is), then put
    through `preprocessing(x, single_channel)` (a ruler's, rulers.Preprocessing; None = none)."""

    def __init__(self, base: Dataset, count=None, size=None, preprocessing=None):
        self.base, self.size, self.preprocessing = base, size, preprocessing
        self.count = len(base) if count is None else min(count, len(base))

    def __len__(self):
        return self.count

    def __getitem__(self, i):
        if i >= self.count:
            raise IndexError(i)
        x = self.base[i]
        if not (isinstance(x, torch.Tensor) and x.dtype == torch.uint8 and x.dim() == 3 and x.shape[0] == 3):
            raise UserError("image datasets must return uint8 (3,H,W) tensors; convert the images first")
        if self.size is not None:
            x = resize_uint8(x, self.size)
        if self.preprocessing is None:
            return x
        single = isinstance(self.base, FolderImages) and self.base.single_channel[i]
        return self.preprocessing(x, single)


def as_dataset(source) -> Dataset:
    """Any supported image source as a Dataset of uint8 (3,H,W) tensors."""
    if isinstance(source, (str, Path)):
        return FolderImages(source)
    if isinstance(source, Dataset):
        return source
    return TensorImages(to_uint8_nchw(source))


def describe_source(source) -> str:
    if isinstance(source, (str, Path)):
        return f"folder {Path(source).name}"
    return type(source).__name__


def content_sha256(dataset: Dataset) -> str:
    """Hash of every image's shape and bytes, in order: identical images give identical keys."""
    h = hashlib.sha256()
    for i in range(len(dataset)):
        x = dataset[i]
        h.update(repr(tuple(x.shape)).encode())
        h.update(x.contiguous().numpy().tobytes())
    return h.hexdigest()
