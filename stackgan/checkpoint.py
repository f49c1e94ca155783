"""Complete, atomically written training state: a killed run resumes where it stopped.

A checkpoint holds the method's networks, EMA and optimisers, the step, the config hash it was
written under, and the RNG states. Data order and per-step noise are pure functions of
(seed, step), so step + seed fix them; the RNG states are kept so that nothing outside that
scheme (a library drawing from the global generator) can make a resumed run diverge.
"""

import random
from pathlib import Path

import numpy as np
import torch

from stackgan.atomic import torch_save

STATE_FILE = "state.pt"


def rng_state():
    state = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state):
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
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
    state = torch.load(path, map_location="cpu", weights_only=False)
    if state.get("config_hash") != cfg_hash:
        return None, f"checkpoint {path} was written under another config; starting fresh"
    return state, f"resuming from {path} at step {state['step']}"
