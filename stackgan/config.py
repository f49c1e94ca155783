"""params.yaml -> one resolved, self-contained config per experiment.

An experiment's config is its model family's defaults (the reference code's cfg values),
overlaid with the experiment's own entries, then with the active profile's overrides. The
profile also fixes where everything is written, so profiles never share output paths.
"""

import copy
import difflib
import hashlib
import json
from pathlib import Path

import yaml

from stackgan.errors import UserError

DEFAULT_PARAMS = Path("params.yaml")
PROFILES = ("embedded", "ci", "paper")


def load_params(path=DEFAULT_PARAMS):
    path = Path(path)
    if not path.exists():
        raise UserError(f"{path} not found; run from the repository root or pass --params FILE")
    try:
        params = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise UserError(f"{path} is not valid YAML{where}: {getattr(e, 'problem', e)}; fix that line") from None
    for key in ("profile", "profiles", "datasets", "models", "experiments"):
        if not isinstance(params, dict) or key not in params:
            raise UserError(f"{path} has no top-level '{key}' section; restore it from the repository's params.yaml")
    return params


def deep_merge(base, override):
    out = copy.deepcopy(base)
    for k, v in (override or {}).items():
        out[k] = deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else copy.deepcopy(v)
    return out


def _unknown(kind, name, known):
    close = difflib.get_close_matches(name, known, n=3)
    hint = f"did you mean {', '.join(close)}?" if close else f"known: {', '.join(sorted(known))}"
    return UserError(f"unknown {kind} '{name}'; {hint}")


def resolve_profile(params, profile=None):
    profile = profile or params["profile"]
    if profile not in params["profiles"]:
        raise _unknown("profile", profile, list(params["profiles"]))
    return profile


def dataset_config(params, name, profile=None):
    if name not in params["datasets"]:
        raise _unknown("dataset", name, list(params["datasets"]))
    profile = resolve_profile(params, profile)
    cfg = copy.deepcopy(params["datasets"][name])
    cfg["name"] = name
    cfg["limit"] = params["profiles"][profile].get("limit")
    cfg["raw_dir"] = f"data/raw/{name}"
    cfg["prepared_dir"] = f"data/prepared/{profile}/{name}"
    return cfg


def experiment_config(params, name, profile=None):
    experiments = params["experiments"]
    if name not in experiments:
        raise _unknown("experiment", name, list(experiments))
    profile = resolve_profile(params, profile)
    entry = experiments[name] or {}
    family = entry.get("model")
    if family not in params["models"]:
        raise UserError(f"experiment '{name}' names model '{family}'; params.yaml models are {', '.join(params['models'])}")
    prof = params["profiles"][profile]
    cfg = deep_merge(params["models"][family], {k: v for k, v in entry.items() if k != "model"})
    cfg = deep_merge(cfg, (prof.get("overrides") or {}).get(family))
    cfg.update(name=name, family=family, profile=profile)
    cfg["data"] = dataset_config(params, entry.get("dataset", ""), profile)
    run_dir = f"runs/{profile}/{name}"
    cfg["paths"] = {
        "run": run_dir,
        "checkpoint": f"{run_dir}/checkpoint",
        "model": f"{run_dir}/model.pt",
        "grids": f"{run_dir}/grids",
        "live": f"{run_dir}/live",
        "samples": f"{run_dir}/samples",
        "sample_grid": f"{run_dir}/sample_grid.png",
        "metrics": f"results/metrics/{profile}/{name}.json",
    }
    return cfg


def config_hash(cfg):
    """Hash of everything that changes the training trajectory; a checkpoint written under another
    hash is not resumed. The run length is left out so a finished run can be extended."""
    relevant = {k: v for k, v in cfg.items() if k not in ("eval", "paths", "profile")}
    relevant["train"] = {k: v for k, v in cfg.get("train", {}).items() 
                       if k not in ("checkpoint_every", "grid_every", "workers", "max_steps", "max_epoch")}
    return hashlib.sha256(json.dumps(relevant, sort_keys=True).encode()).hexdigest()[:16]
