"""`stackgan figures EXPERIMENT`: the StackGAN++ paper's figures for one trained experiment,
written to results/figures/<profile>/<experiment>/ as <figure>.png with index.json (what each
shows, its parameters, and the figures skipped and why).

Each figure module has `draw(ctx, path) -> {"shows": one sentence, "params": {...}}` and raises
Skip when it does not apply to this experiment; the family's figure_skips() names the figures
its model cannot draw (stackgan/methods/base.py). Nothing here asks which family it holds.
"""

import copy
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from stackgan import checkpoint, config as C
from stackgan.atomic import write_json
from stackgan.devices import resolve_device
from stackgan.errors import UserError
from stackgan.hashing import sha256_file
from stackgan.methods import family
from stackgan.sample import load_model
from stackgan.untrusted import load_torch

INDEX_FILE = "index.json"


class Skip(Exception):
    """The figure does not apply to this experiment; the message says why."""


def figure_settings(params, profile):
    """params.yaml figures.defaults overlaid with figures.profiles.<profile>."""
    section = params.get("figures") or {}
    if "defaults" not in section:
        raise UserError("params.yaml has no figures.defaults section; restore it from the repository's params.yaml")
    override = (section.get("profiles") or {}).get(profile) or {}
    C._check_mapping(override, section["defaults"], f"figures.profiles.{profile}", "figures")  # a typo is an error
    return C.deep_merge(section["defaults"], override)


@dataclass
class Context:
    """What every figure reads: the experiment, its trained generator and the figure settings."""
    cfg: dict
    params: dict
    payload: dict
    generator: object
    method: type
    settings: dict
    device: object
    _state: dict | None = None

    @property
    def name(self):
        return self.cfg["name"]

    def samples(self, n, cfg=None, payload=None, generator=None):
        """The first n evaluation samples (what `stackgan sample` writes first): (uint8 NHWC, items)."""
        cfg = copy.deepcopy(cfg or self.cfg)
        cfg["eval"]["num_samples"] = n
        payload, generator = payload or self.payload, generator or self.generator
        images, items = [], []
        for final, chunk, _ in family(payload["family"]).sample_batches(cfg, payload, generator,
                                                                        self.settings["batch_size"]):
            images.append(final)
            items += chunk
        return np.concatenate(images)[:n], items[:n]

    def training_state(self):
        """The checkpoint state.pt of the run's last step (the discriminators model.pt lacks)."""
        if self._state is None:
            path = Path(self.cfg["paths"]["checkpoint"]) / checkpoint.STATE_FILE
            remedy = f"re-run `stackgan train {self.name}` to write it again"
            if not path.is_file():
                raise UserError(f"{path} not found (the nearest-neighbour figure reads the run's discriminator); "
                                f"{remedy}")
            state = load_torch(path, remedy)
            nets = state.get("method", {}).get("nets") if isinstance(state, dict) else None
            if not isinstance(nets, dict) or type(state.get("step")) is not int:
                raise UserError(f"{path} is not a checkpoint written by `stackgan train`; {remedy}")
            if state["step"] != self.payload["step"]:
                raise UserError(f"{path} is at step {state['step']} but model.pt at step {self.payload['step']}; "
                                f"{remedy}")
            self._state = {**state, "sha256": sha256_file(path)}
        return self._state


def _modules():
    """{figure: its module}, in the paper's order (Figs. 5, 10, 11, 12, 13, 14-15)."""
    from stackgan.figures import baselines, diversity, interpolation, neighbours, stages, tsne

    return {"tsne": tsne, "stages": stages, "diversity": diversity, "neighbours": neighbours,
            "interpolation": interpolation, "baselines": baselines}


def run_figures(params, name, profile=None, device="auto", num_samples=None):
    """Draw every figure that applies; returns the index written beside them."""
    profile = C.resolve_profile(params, profile)
    cfg = C.experiment_config(params, name, profile)
    settings = figure_settings(params, profile)
    if num_samples is not None:
        settings["tsne"]["num_samples"] = num_samples
    device = resolve_device(device)
    payload, generator = load_model(cfg, device)
    method = family(payload["family"])
    ctx = Context(cfg, params, payload, generator, method, settings, device)
    out = Path(f"results/figures/{profile}/{name}")
    skips = dict(method.figure_skips(cfg))
    if "neighbours" not in skips:
        ctx.training_state()  # a missing or bad checkpoint stops the stage before any figure is drawn
    figures, skipped = {}, {}
    for fig, module in _modules().items():
        path = out / f"{fig}.png"
        try:
            if fig in skips:
                raise Skip(skips[fig])
            start = time.perf_counter()
            entry = module.draw(ctx, path)
        except Skip as why:
            skipped[fig] = str(why)
            path.unlink(missing_ok=True)  # a figure of an earlier run that no longer applies
            continue
        figures[fig] = {"file": path.name, "paper": module.PAPER, **entry}
        # Timings go to the log, not the index: the index is committed and must not change between runs.
        print(f"figures: {name} {fig}: {time.perf_counter() - start:.1f} s", file=sys.stderr)
    index = {"experiment": name, "profile": profile, "model_step": payload["step"],
             "model_sha256": sha256_file(cfg["paths"]["model"]), "seed": settings["seed"],
             "figures": figures, "skipped": skipped}
    write_json(out / INDEX_FILE, index)
    return index
