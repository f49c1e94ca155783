"""Typed configs at the method boundary: a resolved config (stackgan/config.py, a JSON-able dict
that is hashed and saved in model.pt) built into frozen dataclasses, so a family reads
`c.optim.lr_g` and a missing or unknown setting stops the command before any work.

Defaults are not here: every value comes from params.yaml (its `models.<family>` entry is the
one defaults table). A family declares its config as a subclass of RunConfig.
"""

import dataclasses
import typing

from stackgan.errors import UserError


def build(cls, mapping, where):
    """`cls` (a dataclass) from `mapping`, nested dataclasses included; `where` names the mapping
    in errors (e.g. "models.v2 + experiments.cub-v2")."""
    if not isinstance(mapping, dict):
        raise UserError(f"{where} must be a mapping, not {type(mapping).__name__}; fix it in params.yaml")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    missing = [n for n in names if n not in mapping]
    unknown = [k for k in mapping if k not in names]
    if missing or unknown:
        parts = ([f"has no {', '.join(missing)}"] if missing else []) + \
                ([f"has unknown {', '.join(map(str, unknown))}"] if unknown else [])
        raise UserError(f"{where} {' and '.join(parts)} (a {cls.__name__}); give every setting of the family's "
                        "defaults in params.yaml `models`")
    values = {}
    for name in names:
        kind, value = hints[name], mapping[name]
        values[name] = build(kind, value, f"{where}.{name}") if dataclasses.is_dataclass(kind) else value
    return cls(**values)


@dataclasses.dataclass(frozen=True)
class TrainSettings:
    """What the engine (stackgan/train.py) reads of `train`; families add their own settings."""
    batch_size: int
    max_steps: int | None  # None: the family's own run length (epochs, or SGAN's two phases)
    seed: int
    workers: int
    checkpoint_every: int
    grid_every: int
    log_every: int
    eval_every: int | None  # a generator snapshot every this many steps, scored by `stackgan curves`; None: off
    eval_samples: int  # the samples each snapshot is scored on (the protocols' small variant)
    amp: bool  # GPU switches; off is the faithful fp32 run with per-rank BatchNorm statistics
    channels_last: bool
    sync_bn: bool
    compile: bool  # speed switches (stackgan/speed.py); off/loop is the reference's eager fp32 path
    compile_backend: str
    tf32: bool
    adam: str
    input_on_device: bool


@dataclasses.dataclass(frozen=True)
class EpochTrainSettings(TrainSettings):
    max_epoch: int


@dataclasses.dataclass(frozen=True)
class AdamSettings:
    lr_g: float
    lr_d: float
    betas: list


@dataclasses.dataclass(frozen=True)
class EvalSettings:
    seed: int
    num_samples: int | None  # None: one sample per test caption
    protocols: list


@dataclasses.dataclass(frozen=True)
class RunConfig:
    """The entries every resolved experiment config has (stackgan/config.py experiment_config)."""
    name: str
    family: str
    profile: str
    dataset: str  # the experiment's dataset, as params.yaml names it
    data: dict  # that dataset's resolved entry (validated by stackgan/config.py)
    paths: dict
    view: str
    train: TrainSettings
    eval: EvalSettings

    @classmethod
    def of(cls, cfg):
        return build(cls, cfg, f"the {cfg.get('family', '?')} config of {cfg.get('name', '?')}")
