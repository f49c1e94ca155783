"""Resolved experiment configs for tests: params.yaml's, with test-sized overrides merged in
(nested mappings merged key by key), so a test config has every setting a family's typed
config requires."""

from pathlib import Path

from stackgan import config as C

PARAMS_FILE = Path(__file__).resolve().parents[1] / "params.yaml"


def resolved(experiment, profile="embedded", params_file=PARAMS_FILE, **overrides):
    return C.deep_merge(C.experiment_config(C.load_params(params_file), experiment, profile), overrides)
