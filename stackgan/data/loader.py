"""Training and evaluation datasets over a PreparedSplit, following the reference pipelines.

Per item (StackGAN-v2 datasets.py, spec §2): random crop of max(imsizes) from the stored view,
horizontal flip with p=0.5, the smaller sizes are PIL-bilinear resizes of that same crop,
pixels normalised to [-1, 1]; one random caption embedding (or the mean of k distinct ones,
StackGAN-v1 TF NUM_EMBEDDING=4); a "wrong" (mismatched) image with its own crop and flip.
With input_on_device the item stops at the uint8 crop and the resize and normalisation run on
the batch's device (finish_on_device, device_resize.py), to the same bits.

Every random choice comes from numpy's Generator seeded by (seed, epoch, index)
(seeding.item_rng), so an item is a pure function of those three numbers: a resumed run or
another DDP rank gets exactly the same item, whatever worker processes or order fetched it.
"""

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from stackgan import seeding
from stackgan.data.device_resize import resize_bilinear, signed_range
from stackgan.data.prepared import PreparedSplit
from stackgan.errors import UserError

WRONG_RULES = ("v2", "v1tf")


def to_tensor(image: np.ndarray) -> torch.Tensor:
    """HxWx3 uint8 -> 3xHxW float32 in [-1, 1], same arithmetic as ToTensor + Normalize(0.5, 0.5)."""
    x = torch.from_numpy(np.array(image, dtype=np.uint8)).permute(2, 0, 1).float().div(255)  # copy: views are read-only
    return x.sub(0.5).div(0.5)


def check_crop_fits(split: PreparedSplit, view: str, imsizes: list[int]):
    shard = split.shard(view)
    smallest = int(shard.index[:, 1:].min()) if len(shard) else 0
    if len(shard) and smallest < max(imsizes):
        raise UserError(f"view '{view}' of {split.dir} has images with a side of {smallest} px, "
                        f"smaller than the crop size {max(imsizes)}; prepare a larger view")


def crop_flip(image: np.ndarray, rng, size: int, flip: bool) -> np.ndarray:
    """Random size x size crop (draws: top, left, [flip]), flipped horizontally with p=0.5."""
    top = int(rng.integers(image.shape[0] - size + 1))
    left = int(rng.integers(image.shape[1] - size + 1))
    crop = image[top:top + size, left:left + size]
    if flip and rng.random() < 0.5:
        crop = crop[:, ::-1]
    return np.ascontiguousarray(crop)


def resize_to_tensors(crop: np.ndarray, imsizes: list[int]) -> list[torch.Tensor]:
    """The crop at each of imsizes (PIL-bilinear resizes of the crop itself), in [-1, 1]."""
    crop_pil = Image.fromarray(crop)
    out = []
    for s in imsizes:
        resized = crop_pil if s == crop.shape[0] else crop_pil.resize((s, s), Image.BILINEAR)
        out.append(to_tensor(np.asarray(resized)))
    return out


def crop_flip_resize(image: np.ndarray, rng, imsizes: list[int], flip: bool) -> list[torch.Tensor]:
    """Random crop of max(imsizes) (draws: top, left, [flip]), the smaller sizes PIL-bilinear
    resizes of that same crop, each as a tensor in [-1, 1]."""
    return resize_to_tensors(crop_flip(image, rng, max(imsizes), flip), imsizes)


class EpochDataset(Dataset):
    """Items of one prepared split and view, cropped to `imsizes`; the engine sets the epoch
    so that each item is a pure function of (seed, epoch, index).

    input_on_device: items carry the uint8 crop (3xSxS, S = max(imsizes)) instead of the float
    images, so that workers and the host-to-device copy move a quarter of the bytes or less;
    `finish_on_device` then resizes and normalises the batch on its device, to the same bits.
    """

    def __init__(self, split: PreparedSplit, view: str, imsizes: list[int], flip=True, seed=0,
                 input_on_device=False):
        self.split = split
        self.input_on_device = input_on_device
        self.view = view
        self.imsizes = [int(s) for s in imsizes]
        self.flip = flip
        self.seed = seed
        self.epoch = 0
        check_crop_fits(split, view, self.imsizes)

    def set_epoch(self, epoch: int):
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.split)

    def _images(self, rng, index):
        """The item's images (draws: top, left, [flip]): the list of imsizes in [-1, 1], or the
        uint8 crop when input_on_device."""
        crop = crop_flip(self.split.image(self.view, index), rng, max(self.imsizes), self.flip)
        if self.input_on_device:
            return torch.from_numpy(crop).permute(2, 0, 1).contiguous()
        return resize_to_tensors(crop, self.imsizes)

    def finish_on_device(self, batch: dict, memory_format=torch.contiguous_format) -> dict:
        """A collated batch (on any device) as the CPU path would have made it: "imgs" and
        "wrong_imgs" become lists, one per imsize, of float32 Nx3xSxS in [-1, 1] in
        memory_format. The batch itself when input_on_device is False."""
        if not self.input_on_device:
            return batch
        size = max(self.imsizes)

        def finish(crops):
            return [signed_range(crops if s == size else resize_bilinear(crops, s)).contiguous(
                memory_format=memory_format) for s in self.imsizes]

        return {k: finish(v) if k in ("imgs", "wrong_imgs") else v for k, v in batch.items()}


class TextImageDataset(EpochDataset):
    def __init__(self, split: PreparedSplit, view: str, imsizes: list[int], flip=True,
                 num_embeddings=1, wrong_rule="v2", seed=0, input_on_device=False):
        if split.embeddings is None:
            raise UserError(f"{split.dir}: no embeddings.npy; this dataset has no captions to condition on")
        if wrong_rule not in WRONG_RULES:
            raise UserError(f"wrong_rule must be one of {WRONG_RULES}, got {wrong_rule!r}")
        captions_per_image = split.embeddings.shape[1]
        if not 1 <= num_embeddings <= captions_per_image:
            raise UserError(f"num_embeddings={num_embeddings}: must be 1..{captions_per_image} "
                            "(the captions stored per image)")
        super().__init__(split, view, imsizes, flip, seed, input_on_device)
        self.num_embeddings = num_embeddings
        self.wrong_rule = wrong_rule

    def _embedding(self, rng, index):
        embeddings = self.split.embeddings[index]
        if self.num_embeddings == 1:
            caption = int(rng.integers(len(embeddings)))
            return np.array(embeddings[caption], dtype=np.float32), caption
        chosen = rng.choice(len(embeddings), size=self.num_embeddings, replace=False)
        return np.asarray(embeddings[np.sort(chosen)], dtype=np.float32).mean(axis=0), -1

    def _wrong_index(self, rng, index):
        n, classes = len(self), self.split.class_ids
        wrong = int(rng.integers(n))
        if classes[wrong] == classes[index]:
            if self.wrong_rule == "v2":  # a single redraw: a same-class wrong image stays possible
                wrong = int(rng.integers(n))
            else:  # StackGAN-v1 TF: shift by randint(100, 200) (numpy: 100..199)
                wrong = (wrong + int(rng.integers(100, 200))) % n
        return wrong

    def __getitem__(self, index: int) -> dict:
        """{"imgs": [3xSxS in [-1, 1] for S in imsizes] (input_on_device: the uint8 crop),
        "wrong_imgs": same for the wrong image, "emb": (D,) float32, "class_id", "index",
        "caption_index" (-1 when k > 1 captions were averaged), "wrong_index"}."""
        # Draw order (part of the format; changing it changes every run's data): caption(s), wrong
        # index, real crop top, left, [flip], wrong crop top, left, [flip] ([..] when flip=True).
        rng = seeding.item_rng(self.seed, self.epoch, index)
        embedding, caption = self._embedding(rng, index)
        wrong = self._wrong_index(rng, index)
        return {
            "imgs": self._images(rng, index),
            "wrong_imgs": self._images(rng, wrong),
            "emb": torch.from_numpy(embedding),
            "class_id": int(self.split.class_ids[index]),
            "index": index,
            "caption_index": caption,
            "wrong_index": wrong,
        }


class ImageOnlyDataset(EpochDataset):
    """Unconditional training items (LSUN, ImageNet): the same crop, flip and resize as
    TextImageDataset, drawn from numpy's Generator seeded by (seed, epoch, index)."""

    def __getitem__(self, index: int) -> dict:
        """{"imgs": [3xSxS in [-1, 1] for S in imsizes] (input_on_device: the uint8 crop),
        "index"}; draws: top, left, [flip]."""
        rng = seeding.item_rng(self.seed, self.epoch, index)
        return {"imgs": self._images(rng, index), "index": index}
