"""Complete, atomically written training state: a killed run resumes where it stopped.

A checkpoint holds the method's networks, EMA and optimisers, the step, the config hash it was
written under, and the RNG states. Data order and per-step noise are pure functions of
(seed, step), so step + seed fix them; the RNG states are kept so that nothing outside that
scheme (a library drawing from the global generator) can make a resumed run diverge.

Checkpoints and models travel (a DVC remote, a colleague's `runs/`), so they are read with
`untrusted.load_torch`: only tensors and plain containers, which is all that is written here.
"""

import random
from pathlib import Path

import numpy as np
import torch

from stackgan.atomic import torch_save
from stackgan.errors import UserError
from stackgan.untrusted import load_torch

STATE_FILE = "state.pt"
STATE_KEYS = ("step", "config_hash", "method", "rng")
MODEL_KEYS = ("family", "config", "config_hash", "trained_on", "step", "generator")


def rng_state():
    # numpy's state holds an ndarray, which a weights-only load refuses: its key words go as a tensor.
    name, keys, pos, has_gauss, cached = np.random.get_state()
    state = {"torch": torch.get_rng_state(),
             "numpy": (name, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, cached),
             "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state):
    name, keys, pos, has_gauss, cached = state["numpy"]
    torch.set_rng_state(state["torch"])
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save(directory, method, step, cfg_hash, extra=None):
    payload = {"step": step, "config_hash": cfg_hash, "method": method.state_dict(), "rng": rng_state(),
               **(extra or {})}
    torch_save(payload, Path(directory) / STATE_FILE)


def load(directory, cfg_hash):
    """The saved state if one exists for this exact config, else None (and why, for the log)."""
    path = Path(directory) / STATE_FILE
    if not path.exists():
        return None, "no checkpoint"
    remedy = f"delete {Path(directory)} to start this run fresh"
    state = load_torch(path, remedy)
    if not isinstance(state, dict) or any(k not in state for k in STATE_KEYS) or type(state["step"]) is not int:
        raise UserError(f"{path} is not a checkpoint written by `stackgan train`; {remedy}")
    if state["config_hash"] != cfg_hash:
        return None, f"checkpoint {path} was written under another config; starting fresh"
    return state, f"resuming from {path} at step {state['step']}"


def load_model(path, remedy):
    """A model.pt written by `stackgan train` (train.save_model), checked for its entries."""
    payload = load_torch(path, remedy)
    if not isinstance(payload, dict) or any(k not in payload for k in MODEL_KEYS) \
            or not all(isinstance(payload[k], dict) for k in ("config", "trained_on", "generator")):
        raise UserError(f"{path} is not a model.pt written by `stackgan train`; {remedy}")
    return payload
