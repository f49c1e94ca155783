"""params.yaml is validated before any work starts: unknown keys (with a did-you-mean), values of
the wrong type, and sizes, steps and batches that are not positive stop the command with one line."""

import copy
from pathlib import Path

import pytest
import yaml

from stackgan import config as C
from stackgan.cli import main as cli_main
from stackgan.errors import UserError

REPO = Path(__file__).resolve().parents[1]
PARAMS = C.load_params(REPO / "params.yaml")


def refused(edit, experiment="cub-v2", profile="paper"):
    """The one-line error experiment_config gives for params.yaml changed by `edit`."""
    params = copy.deepcopy(PARAMS)
    edit(params)
    with pytest.raises(UserError) as err:
        C.experiment_config(params, experiment, profile)
    message = str(err.value)
    assert "\n" not in message and "; " in message
    return message


def test_committed_params_resolve_for_every_experiment_and_profile():
    for profile in PARAMS["profiles"]:
        for name in PARAMS["experiments"]:
            cfg = C.experiment_config(PARAMS, name, profile)
            assert cfg["name"] == name and cfg["profile"] == profile
        for dataset in PARAMS["datasets"]:
            C.dataset_config(PARAMS, dataset, profile)


def test_validation_adds_nothing_to_the_config():
    # config_hash decides whether checkpoints resume: the resolved config must stay as it was.
    cfg = C.experiment_config(PARAMS, "synthetic-v2", "embedded")
    assert set(cfg) == set(PARAMS["models"]["v2"]) | {"dataset", "name", "family", "profile", "data", "paths"}


@pytest.mark.parametrize("edit, expected", [
    (lambda p: p["experiments"]["cub-v2"].update(train={"max_step": 100}),
     "params.yaml experiments.cub-v2.train.max_step is not among the v2 settings; did you mean max_steps?"),
    (lambda p: p["experiments"]["cub-v2"].update(gf_dimm=32),
     "params.yaml experiments.cub-v2.gf_dimm is not among the v2 settings; did you mean gf_dim?"),
    (lambda p: p["experiments"]["cub-v2"].update(data_sampling={"flipp": False}),
     "params.yaml experiments.cub-v2.data_sampling.flipp is not among the v2 settings; did you mean flip?"),
    (lambda p: p["profiles"]["paper"]["overrides"].update(v2={"optim": {"lr_gg": 1e-4}}),
     "params.yaml profiles.paper.overrides.v2.optim.lr_gg is not among the v2 settings; did you mean lr_g?"),
    (lambda p: p["profiles"]["paper"]["overrides"].update(v22={}),
     "params.yaml profiles.paper.overrides.v22 names no model family; did you mean v2?"),
    (lambda p: p["profiles"]["paper"].update(limitt=10),
     "params.yaml profiles.paper.limitt is not among the profile settings; did you mean limit?"),
    (lambda p: p["models"]["v2"]["train"].update(log_every=0),
     "params.yaml models.v2.train.log_every is 0; it must be greater than 0"),
])
def test_unknown_keys_are_named_with_a_suggestion(edit, expected):
    assert refused(edit) == expected


def test_unknown_key_without_a_close_match_lists_the_known_ones():
    line = refused(lambda p: p["experiments"]["cub-v2"].update(train={"zzz": 1}))
    assert line.startswith("params.yaml experiments.cub-v2.train.zzz is not among the v2 settings; it takes ")
    assert "batch_size" in line and "max_steps" in line


def test_a_key_of_another_family_is_refused():
    # v1 reads `conditional` (absent = true); SGAN has no such setting.
    C.experiment_config(PARAMS, "lsun-bedroom-v1-s1", "paper")
    line = refused(lambda p: p["experiments"]["cifar10-sgan"].update(conditional=False), "cifar10-sgan")
    assert line.startswith("params.yaml experiments.cifar10-sgan.conditional is not among the sgan settings")


@pytest.mark.parametrize("value", [0, -5])
def test_max_steps_must_be_positive(value):
    # 0 used to mean "no limit" and a negative value an empty run that exited 0 with no model.
    line = refused(lambda p: p["experiments"]["cub-v2"].update(train={"max_steps": value}))
    assert line == (f"params.yaml experiments.cub-v2.train.max_steps is {value}; it must be greater than 0 "
                    "(null trains for train.max_epoch epochs)")


def test_max_steps_null_trains_by_epochs():
    from stackgan.train import total_steps

    params = copy.deepcopy(PARAMS)
    params["experiments"]["cub-v2"]["train"] = {"max_steps": None, "max_epoch": 3}
    cfg = C.experiment_config(params, "cub-v2", "paper")
    assert total_steps(cfg, 100) == 3 * (100 // 24)
    cfg["train"]["max_steps"] = 7
    assert total_steps(cfg, 100) == 7


@pytest.mark.parametrize("edit, expected", [
    (lambda p: p["experiments"]["cub-v2"].update(train={"batch_size": 0}),
     "params.yaml experiments.cub-v2.train.batch_size is 0; it must be greater than 0"),
    (lambda p: p["experiments"]["cub-v2"].update(train={"workers": -1}),
     "params.yaml experiments.cub-v2.train.workers is -1; it must be 0 or more"),
    (lambda p: p["experiments"]["cub-v2"].update(branch_sizes=[64, 0, 256]),
     "params.yaml experiments.cub-v2.branch_sizes is [64, 0, 256]; it must be greater than 0"),
    (lambda p: p["profiles"]["paper"]["overrides"].update(v2={"train": {"checkpoint_every": 0}}),
     "params.yaml profiles.paper.overrides.v2.train.checkpoint_every is 0; it must be greater than 0"),
    (lambda p: p["profiles"]["paper"].update(limit=0),
     "params.yaml profiles.paper.limit is 0; it must be greater than 0"),
])
def test_non_positive_sizes_are_refused(edit, expected):
    assert refused(edit) == expected


def test_an_sgan_run_needs_a_phase():
    line = refused(lambda p: p["experiments"]["synthetic-sgan"]["train"].update(independent_steps=0, joint_steps=0),
                   "synthetic-sgan")
    assert line.startswith("experiment 'synthetic-sgan' has train.independent_steps + train.joint_steps = 0; ")


@pytest.mark.parametrize("edit, expected", [
    (lambda p: p["experiments"]["cub-v2"].update(train={"batch_size": "24"}),
     'params.yaml experiments.cub-v2.train.batch_size is "24", not a whole number; write a whole number '
     "(the default is 24)"),
    (lambda p: p["experiments"]["cub-v2"].update(train={"batch_size": True}),
     "params.yaml experiments.cub-v2.train.batch_size is true, not a whole number; write a whole number "
     "(the default is 24)"),
    (lambda p: p["experiments"]["cub-v2"].update(train={"batch_size": 2.5}),
     "params.yaml experiments.cub-v2.train.batch_size is 2.5, not a whole number; write a whole number "
     "(the default is 24)"),
    (lambda p: p["experiments"]["cub-v2"].update(ema={"decay": "high"}),
     'params.yaml experiments.cub-v2.ema.decay is "high", not a number; write a number (the default is 0.999)'),
    (lambda p: p["experiments"]["cub-v2"].update(conditional="yes"),
     'params.yaml experiments.cub-v2.conditional is "yes", not true or false; write true or false '
     "(the default is true)"),
    (lambda p: p["experiments"]["cub-v2"].update(train=5),
     "params.yaml experiments.cub-v2.train is 5, not a mapping of settings; write it as key: value entries"),
    (lambda p: p["experiments"]["cub-v2"].update(emit=[True, "no", True]),
     'params.yaml experiments.cub-v2.emit holds "no"; every item must be true or false '
     "(the default is [true, true, true])"),
    (lambda p: p["experiments"]["cub-v2"].update(dataset=["cub"]),
     'params.yaml experiments.cub-v2.dataset is ["cub"], not a string; write a string'),
    (lambda p: p["experiments"].update({"cub-v2": [1]}),
     "params.yaml experiments.cub-v2 is [1], not a mapping; give it model: and dataset: entries"),
    (lambda p: p["profiles"]["paper"].update(overrides=[1]),
     "params.yaml profiles.paper.overrides is [1], not a mapping; write family: {settings} entries"),
])
def test_wrong_types_are_refused(edit, expected):
    assert refused(edit) == expected


def test_a_float_setting_takes_a_whole_number():
    params = copy.deepcopy(PARAMS)
    params["experiments"]["cub-v2"]["optim"] = {"lr_g": 1}
    assert C.experiment_config(params, "cub-v2", "paper")["optim"]["lr_g"] == 1


def test_dataset_commands_check_the_profile_too():
    params = copy.deepcopy(PARAMS)
    params["profiles"]["paper"]["overrides"]["encoder"] = {"step": 10}
    with pytest.raises(UserError, match=r"^params.yaml profiles.paper.overrides.encoder.step is not among the "
                                        r"encoder settings; did you mean steps\?$"):
        C.dataset_config(params, "cifar10", "paper")


def test_cli_prints_one_line_and_exits_2(tmp_path, monkeypatch, capsys):
    params = copy.deepcopy(PARAMS)
    params["experiments"]["synthetic-v2"]["train"]["max_steps"] = 0
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    monkeypatch.chdir(tmp_path)
    assert cli_main(["--profile", "paper", "train", "synthetic-v2"]) == 2
    err = capsys.readouterr().err
    assert err == ("stackgan: error: params.yaml experiments.synthetic-v2.train.max_steps is 0; it must be greater "
                   "than 0 (null trains for train.max_epoch epochs)\n")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["params.yaml"]  # nothing was started
