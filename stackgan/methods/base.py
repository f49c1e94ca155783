"""What a model family provides to the stages. Stage modules (train, sample, evaluate, cli) use
only this protocol and the registry in stackgan/methods/__init__.py; everything that differs
between families (networks, data items, noise, steps, sampling, grids, the scored resolution)
lives behind it.

A family is a class: its static methods work from a resolved config (a dict: what params.yaml
resolves to, hashed and saved in model.pt) or a model.pt payload, and build the typed `Config`
from it at this boundary; an instance holds one training run's networks and optimisers.
"""

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import ClassVar, Protocol

import numpy as np
import torch

from stackgan.settings import RunConfig


class Method(Protocol):
    family: ClassVar[str]
    Config: ClassVar[type[RunConfig]]  # the family's typed config, built from a resolved config dict
    c: RunConfig  # this run's, built by __init__
    nets: dict[str, torch.nn.Module]  # every network, all checkpointed
    optims: dict[str, torch.optim.Optimizer]

    # -- from a config or a model.pt payload, no training state
    @staticmethod
    def build_networks(cfg) -> dict[str, torch.nn.Module]:
        """The freshly initialised networks (also used on the meta device to count parameters)."""

    @staticmethod
    def load_generator(payload, device) -> torch.nn.Module:
        """The eval-mode generator saved in a model.pt."""

    @staticmethod
    def output_resolution(cfg) -> int:
        """Side of the images the experiment's samples are scored at."""

    @staticmethod
    def default_steps(cfg, n_items) -> int:
        """The run's length when train.max_steps is null (epochs over n_items, or SGAN's phases)."""

    @staticmethod
    def sample_batches(cfg, payload, generator, batch_size) -> Iterator[tuple[np.ndarray, list, list | None]]:
        """The evaluation samples in order: (uint8 NHWC images, one item dict per image, per-branch
        uint8 images for the sample grid or None). Sample i depends on the evaluation seed and i only."""

    # -- the paper's figures (stackgan/figures/), from a config, a model.pt's generator or a checkpoint
    @staticmethod
    def figure_skips(cfg) -> dict[str, str]:
        """{figure: why it does not apply} for the figures this family cannot draw (tsne, stages,
        diversity, neighbours, interpolation, baselines: stackgan/figures/); the hooks below are
        called only for the figures not listed."""

    @staticmethod
    def discriminator_features(cfg, state, device) -> tuple[Callable, str]:
        """(features(uint8 NHWC images) -> (N, F) CPU tensor, the layer in words): Fig. 12's
        features from the last conv layer of the D judging the largest images, its weights
        from a checkpoint state.pt (stackgan/checkpoint.py)."""

    # Text-to-image families only (SGAN skips the figures that call them):
    @staticmethod
    def branch_names(cfg) -> list[str]:
        """One label per image the generator returns (Stage-I first, final resolution last)."""

    @staticmethod
    def noise_dims(cfg) -> tuple[int, int | None]:
        """(z width, CA noise width or None when unconditional)."""

    @staticmethod
    def figure_captions(cfg, n) -> tuple[list, torch.Tensor]:
        """(captions, (n, text_dim) embeddings) of n test images spread over the split."""

    @staticmethod
    def generate(cfg, generator, z, emb=None, eps=None) -> list[np.ndarray]:
        """Per-branch uint8 NHWC images for explicit noise: z (N, z width), emb (N, text_dim),
        eps (N, CA width) fed to every CA of the generator (eps = 0: each CA gives its mean)."""

    # -- one training run
    def __init__(self, cfg, device, grad_sync=None): ...

    def make_dataset(self, split):
        """The training Dataset; an item is a pure function of (seed, epoch, index)."""

    def draw_noise(self, gen: torch.Generator, global_batch: int) -> dict[str, torch.Tensor]:
        """Every random input of one step, for the whole global batch (ranks take slices)."""

    def on_epoch(self, epoch: int):
        """Schedules (learning rate) at the start of an epoch."""

    def example_batch(self, batch_size: int, device) -> dict:
        """A batch of zeros as train_step takes it: the keys, shapes and dtypes that make_dataset's
        items collate to (finished on the device), without reading data. Counting FLOPs on the meta
        device (stackgan/cost.py) and benchmarks use it."""

    def train_step(self, batch, noise, step) -> dict[str, torch.Tensor]:
        """One iteration's losses (0-d tensors, or numbers such as a learning rate), read by the
        engine on log steps only: no device synchronisation per step."""

    def progress_grid(self, prepared_dir: Path) -> Callable[[Path], None]:
        """A writer of the training progress grid: the same rows (captions, classes, noise) at every call."""

    def eval_generator(self) -> torch.nn.Module:
        """The generator that model.pt saves, in eval mode."""

    def export_extra(self) -> dict:
        """Entries model.pt needs beside the generator's state (e.g. a Stage-II's parent)."""

    def trained_from(self) -> dict:
        """The trained artefacts this run starts from besides its config and data (a Stage-II's
        parent model, SGAN's encoder), JSON-able: part of the run's hash, so a checkpoint is not
        resumed on top of a changed one."""

    def state_dict(self) -> dict: ...

    def load_state_dict(self, state: dict): ...


def training_state(method) -> dict:
    """Every network's and optimiser's state: the part of state_dict() all families share."""
    return {"nets": {k: v.state_dict() for k, v in method.nets.items()},
            "optims": {k: v.state_dict() for k, v in method.optims.items()}}


def load_training_state(method, state: dict):
    for k, v in state["nets"].items():
        method.nets[k].load_state_dict(v)
    for k, v in state["optims"].items():
        method.optims[k].load_state_dict(v)
