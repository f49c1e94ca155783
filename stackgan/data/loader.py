"""Training and evaluation datasets over a PreparedSplit, following the reference pipelines.

Per item (StackGAN-v2 datasets.py, spec §2): random crop of max(imsizes) from the stored view,
horizontal flip with p=0.5, the smaller sizes are PIL-bilinear resizes of that same crop,
pixels normalised to [-1, 1]; one random caption embedding (or the mean of k distinct ones,
StackGAN-v1 TF NUM_EMBEDDING=4); a "wrong" (mismatched) image with its own crop and flip.

Every random choice comes from numpy's Generator seeded by (seed, epoch, index)
(seeding.item_rng), so an item is a pure function of those three numbers: a resumed run or
another DDP rank gets exactly the same item, whatever worker processes or order fetched it.
"""

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from stackgan import seeding
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


def crop_flip_resize(image: np.ndarray, rng, imsizes: list[int], flip: bool) -> list[torch.Tensor]:
    """Random crop of max(imsizes) (draws: top, left, [flip]), the smaller sizes PIL-bilinear
    resizes of that same crop, each as a tensor in [-1, 1]."""
    size = max(imsizes)
    top = int(rng.integers(image.shape[0] - size + 1))
    left = int(rng.integers(image.shape[1] - size + 1))
    crop = image[top:top + size, left:left + size]
    if flip and rng.random() < 0.5:
        crop = crop[:, ::-1]
    crop_pil = Image.fromarray(np.ascontiguousarray(crop))
    out = []
    for s in imsizes:
        resized = crop_pil if s == size else crop_pil.resize((s, s), Image.BILINEAR)
        out.append(to_tensor(np.asarray(resized)))
    return out


class EpochDataset(Dataset):
    """Items of one prepared split and view, cropped to `imsizes`; the engine sets the epoch
    so that each item is a pure function of (seed, epoch, index)."""

    def __init__(self, split: PreparedSplit, view: str, imsizes: list[int], flip=True, seed=0):
        self.split = split
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


class TextImageDataset(EpochDataset):
    def __init__(self, split: PreparedSplit, view: str, imsizes: list[int], flip=True,
                 num_embeddings=1, wrong_rule="v2", seed=0):
        if split.embeddings is None:
            raise UserError(f"{split.dir}: no embeddings.npy; this dataset has no captions to condition on")
        if wrong_rule not in WRONG_RULES:
            raise UserError(f"wrong_rule must be one of {WRONG_RULES}, got {wrong_rule!r}")
        captions_per_image = split.embeddings.shape[1]
        if not 1 <= num_embeddings <= captions_per_image:
            raise UserError(f"num_embeddings={num_embeddings}: must be 1..{captions_per_image} "
                            "(the captions stored per image)")
        super().__init__(split, view, imsizes, flip, seed)
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

    def _images(self, rng, index) -> list[torch.Tensor]:
        return crop_flip_resize(self.split.image(self.view, index), rng, self.imsizes, self.flip)

    def __getitem__(self, index: int) -> dict:
        """{"imgs": [3xSxS in [-1, 1] for S in imsizes], "wrong_imgs": same for the
        wrong image, "emb": (D,) float32, "class_id", "index", "caption_index" (-1 when k > 1
        captions were averaged), "wrong_index"}."""
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
        """{"imgs": [3xSxS in [-1, 1] for S in imsizes], "index"}; draws: top, left, [flip]."""
        rng = seeding.item_rng(self.seed, self.epoch, index)
        return {"imgs": crop_flip_resize(self.split.image(self.view, index), rng, self.imsizes, self.flip),
                "index": index}
