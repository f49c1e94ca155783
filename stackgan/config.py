"""params.yaml -> one resolved, self-contained config per experiment.

An experiment's config is its model family's defaults (the reference code's cfg values),
overlaid with the experiment's own entries, then with the active profile's overrides. The
profile also fixes where everything is written, so profiles never share output paths.

Every layer is validated before it is merged: a key its family's defaults do not have, a value
of another type than the default's, or a size, step count or batch that is not positive stops
the command with one line, so a typo cannot silently leave the reference value in force.
"""

import copy
import difflib
import json
from dataclasses import asdict, dataclass
from pathlib import Path

import yaml

from stackgan.errors import UserError
from stackgan.hashing import sha256_json

DEFAULT_PARAMS = Path("params.yaml")
PROFILES = ("embedded", "ci", "paper")

# Keys an experiment entry has besides its family's settings, with an example of their type.
ENTRY_KEYS = {"model": "v2", "dataset": "cub"}
# Settings whose default is null: the type a value must have when one is given.
NULLABLE = {"max_steps": 1, "eval_every": 1, "num_samples": 1, "parent": "", "encoder": "", "limit": 1}
POSITIVE = {"batch_size", "max_epoch", "max_steps", "checkpoint_every", "grid_every", "log_every",
            "eval_every", "eval_samples",
            "gf_dim", "df_dim", "z_dim", "ef_dim", "text_dim", "out_size", "stage1_size", "branch_sizes",
            "num_classes", "dcgan_z_dim", "num_embeddings", "num_samples", "snapshot_interval",
            "lr_decay_epochs", "width", "lr_g", "lr_d", "lr", "steps", "limit", "threads"}
NON_NEGATIVE = {"workers", "seed", "independent_steps", "joint_steps", "r_num", "discriminators"}
WHY_POSITIVE = {"max_steps": "null trains for train.max_epoch epochs", "eval_every": "null turns it off"}
# A profile's keys; `overrides` is checked per family (check_profile).
PROFILE_KEYS = {"limit": None, "cpu": {"pinned": True, "threads": 1, "convolutions": "im2col"}, "overrides": None}


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


def _did_you_mean(name, known, n, otherwise):
    close = difflib.get_close_matches(str(name), [str(k) for k in known], n=n)
    return f"did you mean {', '.join(close)}?" if close else f"{otherwise} {', '.join(sorted(map(str, known)))}"


def _unknown(kind, name, known):
    return UserError(f"unknown {kind} '{name}'; {_did_you_mean(name, known, 3, 'known:')}")


# -- validation: each layer against an example of every key it may hold (the family's defaults)

def _kind(example):
    """What a value must be to stand where `example` stands, as (test, words)."""
    if isinstance(example, bool):
        return (lambda v: isinstance(v, bool)), "true or false"
    if isinstance(example, int):
        return (lambda v: isinstance(v, int) and not isinstance(v, bool)), "a whole number"
    if isinstance(example, float):
        return (lambda v: isinstance(v, (int, float)) and not isinstance(v, bool)), "a number"
    if isinstance(example, str):
        return (lambda v: isinstance(v, str)), "a string"
    if isinstance(example, list):
        return (lambda v: isinstance(v, list)), "a list"
    return (lambda v: isinstance(v, dict)), "a mapping of settings"


def _show(value):
    return json.dumps(value, default=str)  # as YAML writes it: true, null, [1, 2]


def _check_mapping(layer, schema, where, owner):
    if not isinstance(layer, dict):
        raise UserError(f"params.yaml {where} is {_show(layer)}, not a mapping of settings; "
                        "write it as key: value entries")
    for key, value in layer.items():
        path = f"{where}.{key}"
        if key not in schema:
            raise UserError(f"params.yaml {path} is not among the {owner} settings; "
                            f"{_did_you_mean(key, schema, 1, 'it takes')}")
        _check_value(value, schema[key], path, str(key), owner)


def _check_value(value, example, path, key, owner):
    if isinstance(example, dict):
        return _check_mapping(value, example, path, owner)
    if value is None and (example is None or key in NULLABLE):
        return
    example = NULLABLE.get(key) if example is None else example
    if example is None:
        return  # a null default with no declared type: any value
    default = "" if key in ENTRY_KEYS else f" (the default is {_show(example)})"
    fits, words = _kind(example)
    if not fits(value):
        raise UserError(f"params.yaml {path} is {_show(value)}, not {words}; write {words}{default}")
    items = value if isinstance(value, list) else [value]
    if isinstance(example, list) and example:
        fits, words = _kind(example[0])
        for item in items:
            if not fits(item):
                raise UserError(f"params.yaml {path} holds {_show(item)}; every item must be {words}{default}")
    for item in items:
        if key in POSITIVE and item <= 0:
            why = f" ({WHY_POSITIVE[key]})" if key in WHY_POSITIVE else ""
            raise UserError(f"params.yaml {path} is {_show(value)}; it must be greater than 0{why}")
        if key in NON_NEGATIVE and item < 0:
            raise UserError(f"params.yaml {path} is {_show(value)}; it must be 0 or more")


def _family_schema(params, family):
    defaults = params["models"][family]
    if not isinstance(defaults, dict):
        raise UserError(f"params.yaml models.{family} is not a mapping of settings; restore it from the repository")
    return defaults


def _encoder_schema(params):
    """encoders.defaults and every key a per-dataset encoder entry sets (its `arch`)."""
    section = params.get("encoders") or {}
    every = {k: v for entry in section.values() if isinstance(entry, dict) for k, v in entry.items()}
    return {**every, **(section.get("defaults") or {})}


def check_profile(params, profile):
    """The profile's own keys and each family's overrides, against that family's defaults."""
    where = f"profiles.{profile}"
    prof = params["profiles"][profile] or {}
    _check_mapping(prof, PROFILE_KEYS, where, "profile")
    overrides = prof.get("overrides") or {}
    if not isinstance(overrides, dict):
        raise UserError(f"params.yaml {where}.overrides is {_show(overrides)}, not a mapping; "
                        "write family: {settings} entries")
    for family, layer in overrides.items():
        if family == "encoder":
            _check_mapping(layer, _encoder_schema(params), f"{where}.overrides.encoder", "encoder")
        elif family in params["models"]:
            _check_mapping(layer, _family_schema(params, family), f"{where}.overrides.{family}", family)
        else:
            close = difflib.get_close_matches(str(family), list(params["models"]) + ["encoder"], n=1)
            families = ", ".join([*params["models"], "encoder"])
            hint = f"did you mean {close[0]}?" if close else f"overrides are per family: {families}"
            raise UserError(f"params.yaml {where}.overrides.{family} names no model family; {hint}")


def _check_experiment(params, name):
    """The experiment entry and its family's defaults; returns the family."""
    entry = params["experiments"][name] or {}
    if not isinstance(entry, dict):
        raise UserError(f"params.yaml experiments.{name} is {_show(entry)}, not a mapping; "
                        "give it model: and dataset: entries")
    family = entry.get("model")
    if not isinstance(family, str) or family not in params["models"]:
        raise UserError(f"experiment '{name}' names model '{family}'; "
                        f"params.yaml models are {', '.join(params['models'])}")
    schema = _family_schema(params, family)
    _check_mapping(params["models"][family], schema, f"models.{family}", family)
    _check_mapping(entry, {**schema, **ENTRY_KEYS}, f"experiments.{name}", family)
    return family


def _check_run_length(cfg):
    t = cfg["train"]
    if "joint_steps" in t and t["independent_steps"] + t["joint_steps"] == 0:
        raise UserError(f"experiment '{cfg['name']}' has train.independent_steps + train.joint_steps = 0; "
                        "give at least one SGAN phase a positive number of steps")


# -- resolution

def resolve_profile(params, profile=None):
    profile = profile or params["profile"]
    if profile not in params["profiles"]:
        raise _unknown("profile", profile, list(params["profiles"]))
    return profile


def dataset_config(params, name, profile=None):
    profile = resolve_profile(params, profile)
    check_profile(params, profile)
    return _dataset_config(params, name, profile)


def _dataset_config(params, name, profile):
    if name not in params["datasets"]:
        raise _unknown("dataset", name, list(params["datasets"]))
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
    family = _check_experiment(params, name)
    check_profile(params, profile)
    entry = experiments[name]
    prof = params["profiles"][profile] or {}
    cfg = deep_merge(params["models"][family], {k: v for k, v in entry.items() if k != "model"})
    cfg = deep_merge(cfg, (prof.get("overrides") or {}).get(family))
    cfg.update(name=name, family=family, profile=profile)
    _check_run_length(cfg)
    cfg["data"] = _dataset_config(params, entry.get("dataset", ""), profile)
    run_dir = f"runs/{profile}/{name}"
    cfg["paths"] = {
        "run": run_dir,
        "checkpoint": f"{run_dir}/checkpoint",
        "model": f"{run_dir}/model.pt",
        "grids": f"{run_dir}/grids",
        "live": f"{run_dir}/live",
        "snapshots": f"{run_dir}/snapshots",
        "samples": f"{run_dir}/samples",
        "sample_grid": f"{run_dir}/sample_grid.png",
        "metrics": f"results/metrics/{profile}/{name}.json",
        "curves": {part: f"results/curves/{profile}/{part}/{name}" for part in ("losses", "scores")},
        "curves_record": f"results/curves/{profile}/{name}.json",
        "curves_plot": f"results/curves/{profile}/{name}.png",
    }
    return cfg


def trajectory_config(cfg):
    """The part of a resolved config that changes the training trajectory: not where outputs go,
    how they are scored, or how long the run is (so a finished run can be extended)."""
    relevant = {k: v for k, v in cfg.items() if k not in ("eval", "paths", "profile")}
    relevant["train"] = {k: v for k, v in cfg.get("train", {}).items()
                         if k not in ("checkpoint_every", "grid_every", "eval_every", "eval_samples", "workers", "max_steps",
                                      "max_epoch")}
    return relevant


def config_hash(cfg):
    """Hash of the config alone (`stackgan show`); a run's checkpoints are keyed by run_hash."""
    return sha256_json(trajectory_config(cfg), 16)


@dataclass(frozen=True)
class RunInputs:
    """What a training run starts from besides its config; model.pt records it as `trained_on`."""
    data_fingerprint: str  # the prepared data's manifest of files
    code_fingerprint: str  # the training code (stackgan/train.py's training_code_fingerprint)
    reproducibility: dict  # the CPU/GPU kernel contract (stackgan/reproducibility.py)
    trained_from: dict  # the family's trained inputs: a Stage-II's parent, SGAN's encoder


def run_hash(cfg, inputs: RunInputs):
    """Hash of everything a checkpoint was trained from: one written under another hash is not resumed."""
    return sha256_json({"config": trajectory_config(cfg), **asdict(inputs)}, 16)
