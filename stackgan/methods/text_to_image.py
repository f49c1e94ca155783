"""What the text-to-image families (StackGAN-v1, StackGAN-v2) share: evaluation sampling from
the test captions and the progress grid of every branch. Their generators have one interface,
g(z, emb=None, eps=None) -> (images per branch, mu, logvar).

Evaluation follows the reference (StackGAN-v2 condGANTrainer.evaluate): the test split in file
order, one z per test image shared by all of its captions, one image per caption. Sample i's
noise depends only on the evaluation seed and its test-image index, so the set of images does
not depend on batch size or the number of GPUs. Unconditional runs draw eval.num_samples images.
"""

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from stackgan import seeding
from stackgan.atomic import atomic_path
from stackgan.data.device_resize import signed_range
from stackgan.data.prepared import PreparedSplit
from stackgan.errors import UserError
from stackgan.grids import compose, to_uint8
from stackgan.settings import EpochTrainSettings, RunConfig

GRID_ROWS = 8


@dataclass(frozen=True)
class DataSampling:
    flip: bool
    num_embeddings: int  # captions averaged per item (v1 TF code: 4)
    wrong_rule: str  # how the mismatched image is drawn (stackgan/data/loader.py)


@dataclass(frozen=True)
class TextToImageConfig(RunConfig):
    """The settings v1 and v2 share (their `models.*` entries in params.yaml)."""
    conditional: bool  # false: images only (Table 3's LSUN / ImageNet runs)
    gf_dim: int
    df_dim: int
    z_dim: int
    ef_dim: int  # the CA output (condition) width
    text_dim: int  # the caption embedding width
    r_num: int
    data_sampling: DataSampling
    train: EpochTrainSettings


def image_features(trunk, device):
    """features(uint8 NHWC images) -> (N, F) CPU tensor: `trunk` (a D's conv layers) on images
    normalised as the training inputs are (Fig. 12's retrieval features)."""
    @torch.no_grad()
    def features(images):
        x = signed_range(torch.from_numpy(np.ascontiguousarray(images)).to(device)).permute(0, 3, 1, 2)
        return trunk(x).flatten(1).cpu()

    return features


def item_noise(seed, indices, dim):
    """(len(indices), dim) N(0, 1) rows, row k a pure function of (seed, indices[k])."""
    return torch.stack([torch.randn(dim, generator=seeding.eval_item_generator(seed, i)) for i in indices])


def eval_pairs(split, num_samples):
    """(image index, caption index) for one sample per test caption, in file order, capped."""
    n_caps = split.embeddings.shape[1]
    pairs = [(i, c) for i in range(len(split)) for c in range(n_caps)]
    return pairs[:num_samples] if num_samples else pairs


def check_embeddings(c, split, text_dim):
    """The test split has caption embeddings of the width the model was trained on (`text_dim`)."""
    where = f"{c.data['prepared_dir']}/test"
    if split.embeddings is None:
        raise UserError(f"{where} has no embeddings.npy; a text-conditional model needs "
                        f"caption embeddings (re-run `stackgan prepare {c.data['name']}`)")
    width = split.embeddings.shape[-1]
    if width != text_dim:
        raise UserError(f"{where} holds {width}-wide caption embeddings but the model takes text_dim {text_dim}; "
                        f"sample with the dataset the model was trained on (re-run `stackgan prepare "
                        f"{c.data['name']}` if its embeddings changed)")


def check_text_width(c, split):
    """Training caption embeddings as wide as the networks' text input, before any step is taken
    (else the mismatch surfaces as a shape error inside the first matrix product)."""
    if not c.conditional or split.embeddings is None:
        return
    width = split.embeddings.shape[-1]
    if width != c.text_dim:
        raise UserError(f"{split.dir / 'embeddings.npy'} holds {width}-wide caption embeddings but {c.name} "
                        f"has text_dim {c.text_dim}; set text_dim: {width} for it in params.yaml or prepare "
                        f"the dataset with {c.text_dim}-wide embeddings")


def caption_batches(c, g, split, batch_size):
    seed = c.eval.seed
    pairs = eval_pairs(split, c.eval.num_samples)
    device = next(g.parameters()).device
    for start in range(0, len(pairs), batch_size):
        chunk = pairs[start:start + batch_size]
        z = item_noise(seed, [i for i, _ in chunk], c.z_dim).to(device)
        emb = torch.from_numpy(np.stack([split.embeddings[i, c] for i, c in chunk])).to(device)
        # CA's eps is drawn per (image, caption) from the same deterministic scheme as z.
        eps = item_noise(seed + 1, [i * 100 + k for i, k in chunk], c.ef_dim).to(device)
        images, _, _ = g(z, emb, eps=eps)
        items = [{"key": split.keys[i], "image_index": i, "caption_index": k, "class_id": int(split.class_ids[i]),
                  "caption": split.captions[i][k] if split.captions else None,
                  "attributes": split.attributes[i].tolist() if split.attributes is not None else None}
                 for i, k in chunk]
        yield to_uint8(images[-1]), items, [to_uint8(x) for x in images]


def noise_batches(c, g, batch_size):
    n = c.eval.num_samples
    device = next(g.parameters()).device
    for start in range(0, n, batch_size):
        idx = list(range(start, min(n, start + batch_size)))
        images, _, _ = g(item_noise(c.eval.seed, idx, c.z_dim).to(device))
        items = [{"index": i, "caption": None, "key": f"sample{i}", "class_id": None, "attributes": None} for i in idx]
        yield to_uint8(images[-1]), items, [to_uint8(x) for x in images]


def grid_rows(c, prepared_dir, rows=GRID_ROWS):
    """Captions (and embeddings) of test images spread over the split: the same rows in every
    grid. Unconditional datasets (a single train split) show fixed noise rows."""
    prepared_dir = Path(prepared_dir)
    split = PreparedSplit(prepared_dir, "test" if (prepared_dir / "test").is_dir() else "train")
    n = min(rows, len(split))
    idx = np.linspace(0, len(split) - 1, n).astype(int)
    batch = {"captions": [split.captions[i][0] if split.captions else split.keys[i] for i in idx]}
    if c.conditional and split.embeddings is not None:
        batch["emb"] = torch.from_numpy(np.ascontiguousarray(split.embeddings[idx, 0]))
    batch["z"] = torch.randn(n, c.z_dim, generator=seeding.torch_generator(c.eval.seed))
    return batch


class TextToImageMethod:
    """The protocol methods v1 and v2 share (stackgan/methods/base.py). A family sets `Config`
    (its TextToImageConfig subclass), `networks(c)` (all networks, freshly initialised) and
    `sampling_generator(c)` (the module model.pt's generator state loads into)."""
    Config = TextToImageConfig

    @classmethod
    def build_networks(cls, cfg):
        return cls.networks(cls.Config.of(cfg))

    @classmethod
    def load_generator(cls, payload, device):
        g = cls.sampling_generator(cls.Config.of(payload["config"]))
        g.load_state_dict(payload["generator"])
        return g.to(device).eval()

    @classmethod
    def sample_batches(cls, cfg, payload, generator, batch_size):
        c = cls.Config.of(cfg)
        if not c.conditional:
            return noise_batches(c, generator, batch_size)
        split = PreparedSplit(Path(c.data["prepared_dir"]), "test")
        check_embeddings(c, split, payload["config"].get("text_dim"))
        return caption_batches(c, generator, split, batch_size)

    # -- the paper's figures (stackgan/figures/)
    @classmethod
    def figure_skips(cls, cfg):
        c = cls.Config.of(cfg)
        if c.conditional:
            return {}
        why = "an unconditional model reads no caption: there is no CA draw or sentence embedding to vary"
        return {"diversity": why, "interpolation": why}

    @classmethod
    def noise_dims(cls, cfg):
        c = cls.Config.of(cfg)
        return c.z_dim, (c.ef_dim if c.conditional else None)

    @classmethod
    def figure_captions(cls, cfg, n):
        """The first caption of n test images spread over the split, and their embeddings."""
        c = cls.Config.of(cfg)
        split = PreparedSplit(Path(c.data["prepared_dir"]), "test")
        check_embeddings(c, split, c.text_dim)
        idx = np.linspace(0, len(split) - 1, min(n, len(split))).astype(int)
        captions = [split.captions[i][0] if split.captions else split.keys[i] for i in idx]
        return captions, torch.from_numpy(np.ascontiguousarray(split.embeddings[idx, 0]))

    @staticmethod
    @torch.no_grad()
    def generate(cfg, generator, z, emb=None, eps=None):
        device = next(generator.parameters()).device
        images, _, _ = generator(z.to(device), None if emb is None else emb.to(device),
                                 eps=None if eps is None else eps.to(device))
        return [to_uint8(x) for x in images]

    @classmethod
    def default_steps(cls, cfg, n_items):
        c = cls.Config.of(cfg)
        return c.train.max_epoch * (n_items // c.train.batch_size)

    def example_batch(self, batch_size, device):
        """Zeros shaped like a collated TextImageDataset batch (ImageOnlyDataset when unconditional):
        the real (and wrong) images at each of the family's image_sizes(), float32; the caption
        embedding; the items' int64 indices."""
        c = self.c
        sizes = self.image_sizes()

        def images():
            return [torch.zeros(batch_size, 3, s, s, device=device) for s in sizes]

        def indices():
            return torch.zeros(batch_size, dtype=torch.int64, device=device)

        if not c.conditional:
            return {"imgs": images(), "index": indices()}
        return {"imgs": images(), "wrong_imgs": images(), "emb": torch.zeros(batch_size, c.text_dim, device=device),
                "class_id": indices(), "index": indices(), "caption_index": indices(), "wrong_index": indices()}

    def progress_grid(self, prepared_dir):
        """One row per fixed caption (or noise), every branch side by side, caption at right."""
        rows = grid_rows(self.c, prepared_dir)

        @torch.no_grad()
        def write(path):
            g = self.eval_generator()
            device = next(g.parameters()).device
            emb = rows.get("emb")
            images, _, _ = g(rows["z"].to(device), emb.to(device) if emb is not None else None)
            with atomic_path(path) as tmp:
                compose([to_uint8(x) for x in images], rows.get("captions")).save(tmp, format="PNG")

        return write
