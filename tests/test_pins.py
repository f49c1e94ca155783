"""Pins: what a tiny model of each family computes, written down in tests/pins/<family>.json.

For each family, the steps of a tiny run as the engine iterates them (one; SGAN's sgan variant:
the independent step, then the first joint one): every logged loss, then each network's first
trainable parameter (a slice and its sum of magnitudes). Then the sample stage on that model:
pixels of the first and last sample, every sample's pixel sum, and samples.json's items. Every
metric is computed from sample()'s output, so a changed seed scheme, constant or draw order must
show up here. A change meant to alter these numbers regenerates them on purpose:
`python tests/regen_pins.py` rewrites the files and prints what moved.
"""

import contextlib
import io
import json
import math
import random
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from stackgan import seeding
from stackgan.config import dataset_config, experiment_config, load_params
from stackgan.data.prepared import PreparedSplit
from stackgan.encoder import encoder_config, train_encoder
from stackgan.fetch import fetch
from stackgan.methods import build_method
from stackgan.prepare import prepare
from stackgan.sample import sample
from stackgan.train import train

REPO = Path(__file__).resolve().parents[1]
PIN_DIR = Path(__file__).resolve().parent / "pins"
PROFILE = "embedded"  # no profile overrides: the entries below are the whole configuration
BATCH = 8
TOLERANCE = {"rel_tol": 1e-5, "abs_tol": 1e-5}  # float rounding only; any seed or draw change is far above
TINY = {"gf_dim": 4, "df_dim": 4, "ef_dim": 8, "z_dim": 16,
        "train": {"batch_size": BATCH, "workers": 0}, "eval": {"num_samples": 12}}
SGAN_TINY = {"width": 0.125, "train": {"batch_size": BATCH, "workers": 0, "independent_steps": 1},
             "eval": {"num_samples": 12}}
# family -> (the experiment it shrinks, its overrides); every step of the run is pinned. 12
# samples: the text-conditional families show test image 0's ten captions and image 1's first two.
FAMILIES = {
    "v1-stage1": ("synthetic-v1-s1", {**TINY, "train": {**TINY["train"], "max_steps": 1}}),
    "v1-stage2": ("synthetic-v1", {**TINY, "parent": "pin-v1-stage1", "train": {**TINY["train"], "max_steps": 1}}),
    "v2": ("synthetic-v2", {**TINY, "z_dim": 8, "r_num": 1, "branch_sizes": [16, 32], "emit": [True, True],
                            "discriminators": [0, 1], "train": {**TINY["train"], "max_steps": 1}}),
    # the independent phase, then the first joint step (new D variants, fresh optimisers)
    "sgan": ("synthetic-sgan", {**SGAN_TINY, "train": {**SGAN_TINY["train"], "joint_steps": 1}}),
    "dcgan": ("synthetic-sgan", {**SGAN_TINY, "variant": "dcgan", "train": {**SGAN_TINY["train"], "joint_steps": 0}}),
}
BATCH_NORMS = (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d)
AFTER = {"v1-stage2": "v1-stage1"}  # Stage-II starts from its parent's model.pt


def merged(base, over):
    out = dict(base)
    for k, v in over.items():
        out[k] = merged(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def tiny_params():
    """The repository's params.yaml with a 120-image synthetic set, a 2-step encoder and one
    shrunk experiment per family, named pin-<family>."""
    params = load_params(REPO / "params.yaml")
    params["datasets"]["synthetic"]["num_images"] = 120
    params["encoders"]["synthetic"].update(steps=2, batch_size=8, width=0.125)
    params["experiments"] = {f"pin-{family}": merged(params["experiments"][name], over)
                             for family, (name, over) in FAMILIES.items()}
    return params


def quiet(fn, *args):
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        return fn(*args)


@contextlib.contextmanager
def isolated():
    """Fixed kernels (one thread, no oneDNN or NNPACK: an in-process CLI call elsewhere in the
    suite may have pinned others), and the global generators restored afterwards."""
    threads, onednn = torch.get_num_threads(), torch.backends.mkldnn.enabled
    np_state, py_state = np.random.get_state(), random.getstate()
    torch.set_num_threads(1)
    torch.backends.mkldnn.enabled = False
    try:
        with torch.random.fork_rng(devices=[]), torch.backends.nnpack.flags(enabled=False):
            yield
    finally:
        torch.set_num_threads(threads)
        torch.backends.mkldnn.enabled = onednn
        np.random.set_state(np_state)
        random.setstate(py_state)


def parameter_pin(net):
    """The first trainable parameter: its name, first 8 values and sum of magnitudes."""
    name, p = next(((n, p) for n, p in net.named_parameters() if p.requires_grad), (None, None))
    if p is None:
        return None
    flat = p.detach().flatten()
    return {"name": name, "first": flat[:8].tolist(), "abs_sum": float(flat.double().abs().sum())}


def pixel_pin(path):
    flat = np.asarray(Image.open(path)).reshape(-1)
    return flat[np.linspace(0, len(flat) - 1, 16).astype(int)].tolist()


def run_length(cfg):
    t = cfg["train"]
    return t["max_steps"] or t["independent_steps"] + t["joint_steps"]


def train_step_pins(cfg):
    """(method, pins): the run's steps as the engine iterates them, on the first BATCH items."""
    seed = cfg["train"]["seed"]
    seeding.seed_globals(seed)
    method = build_method(cfg, torch.device("cpu"))
    # Running statistics as plain averages (momentum None), so one step leaves BatchNorm's
    # eval-mode statistics at the batch's: with the initial ones (variance 1) a tiny G's eval
    # output is flat grey and sample() would show almost nothing of z. Only buffers change:
    # train-mode steps normalise by the batch either way, so the step's numbers are the engine's.
    for net in method.nets.values():
        for m in net.modules():
            if isinstance(m, BATCH_NORMS):
                m.momentum = None
    data = method.make_dataset(PreparedSplit(Path(cfg["data"]["prepared_dir"]), "train"))
    batch = torch.utils.data.default_collate([data[i] for i in range(BATCH)])
    logs = []
    for step in range(run_length(cfg)):
        method.on_epoch(0)
        torch.manual_seed(seeding.step_torch_seed(seed, step, 0))
        noise = method.draw_noise(seeding.step_noise_generator(seed, step), BATCH)
        logs.append({k: float(v) for k, v in method.train_step(batch, noise, step).items()})
    nets = {k: parameter_pin(v) for k, v in method.nets.items()}
    return method, {"logs": logs, "parameters": {k: v for k, v in nets.items() if v is not None}}


def write_model(cfg, generator):
    """cfg's model.pt in the engine's own format (a run of cfg's length writes it), holding
    `generator`: the pinned method's, whose BatchNorm statistics are the batch's."""
    quiet(train, cfg, "cpu")
    path = Path(cfg["paths"]["model"])
    payload = torch.load(path, map_location="cpu", weights_only=False)
    payload["generator"] = generator.state_dict()
    torch.save(payload, path)


def sample_pins(cfg):
    out = Path(quiet(sample, cfg))
    index = json.loads((out / "samples.json").read_text())
    items = index["items"]
    # Exact per-sample sums: every pixel of every sample counts, where the slices see 32.
    sums = [int(np.asarray(Image.open(out / it["file"]), dtype=np.int64).sum()) for it in items]
    return {"count": len(items), "resolution": index["resolution"], "seed": index["seed"],
            "item_keys": sorted(items[0]), "first_item": items[0], "last_item": items[-1],
            "first_pixels": pixel_pin(out / items[0]["file"]), "last_pixels": pixel_pin(out / items[-1]["file"]),
            "pixel_sums": sums}


class Workspace:
    """A scratch project under `root` (its params, the prepared synthetic set, the SGAN encoder)
    that trains each family's method once. Paths in the configs are relative to it."""

    def __init__(self, root):
        self.root, self.params = Path(root), tiny_params()
        self.trained, self.models = {}, set()

    @contextlib.contextmanager
    def _inside(self):
        with isolated(), contextlib.chdir(self.root):
            yield

    def _cfg(self, family):
        """A freshly resolved config, as each CLI stage gets (stages may add to theirs)."""
        return experiment_config(self.params, f"pin-{family}", PROFILE)

    def _data(self):
        ds = dataset_config(self.params, "synthetic", PROFILE)
        if not Path(ds["prepared_dir"], "manifest.json").exists():
            prepare(ds, fetch(ds, Path(ds["raw_dir"])), Path(ds["prepared_dir"]))

    def _encoder(self):
        cfg = encoder_config(self.params, "synthetic", PROFILE)
        if not Path(cfg["out_dir"], "encoder.pt").exists():
            train_encoder(cfg, cfg["prepared_dir"], cfg["out_dir"], device="cpu")

    def _model(self, family):
        if family not in self.models:
            self.train_step(family)
            with self._inside():
                write_model(self._cfg(family), self.trained[family][0].eval_generator())
            self.models.add(family)

    def train_step(self, family):
        if family not in self.trained:
            if family in AFTER:
                self._model(AFTER[family])
            with self._inside():
                self._data()
                if self.params["experiments"][f"pin-{family}"]["model"] == "sgan":
                    self._encoder()
                self.trained[family] = train_step_pins(self._cfg(family))
        return self.trained[family][1]

    def sample(self, family):
        self._model(family)
        with self._inside():
            return sample_pins(self._cfg(family))

    def pins(self, family):
        return {"train_step": self.train_step(family), "sample": self.sample(family)}


def differences(expected, actual, where=""):
    """Where `actual` departs from `expected`: floats beyond TOLERANCE, anything else unequal."""
    if isinstance(expected, dict) and isinstance(actual, dict):
        if expected.keys() != actual.keys():
            return [f"{where or 'top'}: keys {sorted(expected)} -> {sorted(actual)}"]
        return [d for k in expected for d in differences(expected[k], actual[k], f"{where}.{k}" if where else k)]
    if isinstance(expected, list) and isinstance(actual, list) and len(expected) == len(actual):
        return [d for i, (e, a) in enumerate(zip(expected, actual)) for d in differences(e, a, f"{where}[{i}]")]
    if isinstance(expected, float) and isinstance(actual, (int, float)):
        return [] if math.isclose(expected, actual, **TOLERANCE) else [f"{where}: {expected!r} -> {actual!r}"]
    return [] if expected == actual else [f"{where}: {expected!r} -> {actual!r}"]


def read_pins(family):
    path = PIN_DIR / f"{family}.json"
    if not path.exists():
        pytest.fail(f"{path} not found; run `python tests/regen_pins.py` to write it")
    return json.loads(path.read_text())


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    return Workspace(tmp_path_factory.mktemp("pins"))


def check(family, part, actual):
    diffs = differences(read_pins(family)[part], actual)
    assert not diffs, (f"{family} {part} moved from its pin ({len(diffs)} values):\n  " + "\n  ".join(diffs[:12])
                       + "\nif the change is meant, run `python tests/regen_pins.py` and commit the new pins")


@pytest.mark.parametrize("family", FAMILIES)
def test_train_step_matches_pin(workspace, family):
    check(family, "train_step", workspace.train_step(family))


@pytest.mark.parametrize("family", FAMILIES)
def test_sample_matches_pin(workspace, family):
    check(family, "sample", workspace.sample(family))
