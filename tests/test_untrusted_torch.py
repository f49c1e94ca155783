"""Torch files and image folders from elsewhere: nothing in them runs, and every bad one is a
one-line error that names it.

Each kind of torch file the harness reads (a model.pt given to `sample`, a Stage-II parent's
model.pt, a checkpoint on resume, encoder.pt, classifier weights, `--extractor-weights`, the
fine-tuned Inception, the ImageNet Inception a fine-tuning starts from) and the FID reference
statistics are tried with a hostile file whose unpickling would create a marker file, and with
truncated bytes. Whatever the harness itself writes must load back under those rules.
"""

import pickle
import random
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from stackgan import checkpoint
from stackgan.atomic import torch_save
from stackgan.cli import main
from stackgan.data import cub, synthetic
from stackgan.encoder import load_encoder
from stackgan.errors import UserError
from stackgan.metrics import fidelity
from stackgan.metrics.compute import compute
from stackgan.metrics.finetune import load_backbone
from stackgan.metrics.synthetic_classifier import SyntheticClassifier, save_classifier
from stackgan.untrusted import load_torch

REPO = Path(__file__).resolve().parents[1]
RUN = Path("runs/ci/synthetic-v2")


class Touch:
    """Unpickling this calls pathlib.Path.touch(marker): the marker exists only if code ran."""

    def __init__(self, marker):
        self.marker = Path(marker)

    def __reduce__(self):
        return Path.touch, (self.marker,)


def hostile(path, marker):
    """A torch file that looks like weights and, loaded the old way, creates `marker`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"weight": torch.zeros(2), "payload": Touch(marker)}, path)
    return path


def truncated(path):
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"weight": torch.arange(4096.0)}, path)
    path.write_bytes(path.read_bytes()[:1500])
    return path


def one_line_error(capsys, argv):
    rc = main(argv)
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert rc == 2 and len(lines) == 1 and lines[0].startswith("stackgan: error: "), err
    return lines[0]


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    """A scratch project (ci profile, unpinned CPU, a 2-step synthetic-v2 run) with prepared
    synthetic data and that run's model.pt and checkpoint."""
    root = tmp_path_factory.mktemp("untrusted")
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["profile"] = "ci"
    params["profiles"]["ci"]["cpu"] = {"pinned": False}
    params["profiles"]["ci"]["overrides"]["v2"] = {
        "train": {"max_steps": 2, "checkpoint_every": 1, "grid_every": 100, "log_every": 1}}
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    raw = synthetic.generate(root / "data/raw/synthetic", num_images=100, seed=3)
    cub.prepare(raw, root / "data/prepared/ci/synthetic", views=params["datasets"]["synthetic"]["views"])
    project = copy_project(root, root / "trained")
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(project)
        assert main(["--params", "params.yaml", "train", "synthetic-v2", "--device", "cpu"]) == 0
    return root


def copy_project(workdir, dst):
    dst.mkdir(exist_ok=True)
    shutil.copy(workdir / "params.yaml", dst / "params.yaml")
    (dst / "data").mkdir()
    (dst / "data/prepared").symlink_to(workdir / "data/prepared")
    return dst


@pytest.fixture
def project(workdir, tmp_path, monkeypatch):
    """A fresh project folder sharing the prepared data, as the working directory."""
    monkeypatch.chdir(copy_project(workdir, tmp_path / "project"))
    return tmp_path / "project"


def trained(workdir, name):
    return workdir / "trained" / RUN / name


# ------------------------------------------------------------------ the fixtures are hostile

def test_the_hostile_file_runs_code_when_loaded_the_old_way(tmp_path):
    marker = tmp_path / "ran"
    path = hostile(tmp_path / "w.pt", marker)
    torch.load(path, weights_only=False)
    assert marker.exists()


# ------------------------------------------------------------------ each kind of torch file

def test_hostile_model_given_to_sample(project, capsys, tmp_path):
    marker = tmp_path / "ran"
    hostile(project / RUN / "model.pt", marker)
    line = one_line_error(capsys, ["--params", "params.yaml", "sample", "synthetic-v2"])
    assert "model.pt is refused" in line and "stackgan train synthetic-v2" in line
    assert not marker.exists() and not (project / RUN / "samples").exists()


@pytest.mark.parametrize("content, message", [("truncated", "is not a readable torch file"),
                                              ("state dict", "is not a model.pt written by `stackgan train`")])
def test_corrupt_model_given_to_sample(project, capsys, content, message):
    model = project / RUN / "model.pt"
    if content == "truncated":
        truncated(model)
    else:
        model.parent.mkdir(parents=True)
        torch.save({"weight": torch.zeros(3)}, model)
    line = one_line_error(capsys, ["--params", "params.yaml", "sample", "synthetic-v2"])
    assert f"model.pt {message}" in line and "stackgan train synthetic-v2" in line


def test_hostile_stage2_parent_model(project, capsys, tmp_path):
    marker = tmp_path / "ran"
    parent = hostile(project / "runs/ci/synthetic-v1-s1/model.pt", marker)
    line = one_line_error(capsys, ["--params", "params.yaml", "train", "synthetic-v1", "--device", "cpu"])
    assert str(parent.relative_to(project)) in line and "stackgan train synthetic-v1-s1" in line
    assert not marker.exists() and not (project / "runs/ci/synthetic-v1").exists()


def test_hostile_checkpoint_on_resume_is_kept_and_named(project, capsys, tmp_path):
    marker = tmp_path / "ran"
    state = hostile(project / RUN / "checkpoint/state.pt", marker)
    before = state.read_bytes()
    line = one_line_error(capsys, ["--params", "params.yaml", "train", "synthetic-v2", "--device", "cpu"])
    assert "state.pt is refused" in line and f"delete {RUN / 'checkpoint'} to start this run fresh" in line
    assert not marker.exists()
    assert state.read_bytes() == before  # not deleted, not overwritten
    assert sorted(p.name for p in (project / RUN).iterdir()) == ["checkpoint"]  # no model.pt, no log


@pytest.mark.parametrize("content", ["truncated", "garbage", "not a checkpoint"])
def test_corrupt_checkpoint_is_one_line(project, capsys, content):
    state = project / RUN / "checkpoint/state.pt"
    state.parent.mkdir(parents=True)
    if content == "truncated":
        truncated(state)
    elif content == "garbage":
        state.write_bytes(b"\x00not a torch file" * 20)
    else:
        torch.save({"step": "7"}, state)
    line = one_line_error(capsys, ["--params", "params.yaml", "train", "synthetic-v2", "--device", "cpu"])
    assert "state.pt" in line and "to start this run fresh" in line
    assert state.exists()


def test_hostile_encoder(tmp_path):
    marker = tmp_path / "ran"
    path = hostile(tmp_path / "enc/encoder.pt", marker)
    with pytest.raises(UserError, match=r"encoder\.pt is refused.*stackgan encoder") as err:
        load_encoder(path)
    assert "\n" not in str(err.value) and not marker.exists()
    torch.save({"arch": "cifar10"}, path)
    with pytest.raises(UserError, match="is not an encoder.pt written by `stackgan encoder`"):
        load_encoder(path)


@pytest.fixture
def images(tmp_path):
    """A folder of 12 small PNGs (enough for IS's 10 splits)."""
    folder = tmp_path / "images"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(12):
        Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)).save(folder / f"{i:03d}.png")
    return folder


def score(folder, protocol, *extra, tmp_path):
    # a params path that does not exist: `score` runs outside a project, with no CPU pins
    return ["--params", str(tmp_path / "absent.yaml"), "score", str(folder), "--protocol", protocol, *extra]


@pytest.mark.parametrize("protocol", ["is10_synthetic-clf", "is10_imagenet", "is10_cub-ft"])
def test_hostile_extractor_weights_for_score(images, capsys, tmp_path, protocol):
    marker = tmp_path / "ran"
    weights = hostile(tmp_path / "weights.pth", marker)
    line = one_line_error(capsys, score(images, protocol, "--extractor-weights", str(weights), tmp_path=tmp_path))
    assert f"{weights} is refused" in line
    assert not marker.exists()


@pytest.mark.parametrize("protocol", ["is10_synthetic-clf", "is10_imagenet", "is10_cub-ft"])
def test_truncated_extractor_weights_for_score(images, capsys, tmp_path, protocol):
    weights = truncated(tmp_path / "weights.pth")
    line = one_line_error(capsys, score(images, protocol, "--extractor-weights", str(weights), tmp_path=tmp_path))
    assert f"{weights} is not a readable torch file" in line


def test_weights_that_do_not_fit_the_network_are_one_line(images, capsys, tmp_path):
    weights = tmp_path / "weights.pth"
    given = ["--extractor-weights", str(weights)]
    torch.save({"fc.weight": torch.zeros(5, 2048)}, weights)
    line = one_line_error(capsys, score(images, "is10_cub-ft", *given, tmp_path=tmp_path))
    assert f"{weights} does not fit the Inception-v3 network" in line
    torch.save({"weight": torch.zeros(3)}, weights)
    line = one_line_error(capsys, score(images, "is10_imagenet", *given, tmp_path=tmp_path))
    assert f"{weights} does not fit the inception-v3-compat network" in line


def test_hostile_located_classifier(tmp_path):
    marker = tmp_path / "ran"
    hostile(tmp_path / "classifiers/synthetic-clf.pt", marker)
    samples = torch.zeros(12, 3, 16, 16, dtype=torch.uint8)
    with pytest.raises(UserError, match=r"synthetic-clf\.pt is refused.*stackgan classifier synthetic"):
        compute(["is12_synthetic-clf"], samples, classifier_dir=tmp_path / "classifiers", device="cpu")
    assert not marker.exists()


def test_hostile_imagenet_weights_for_fine_tuning(tmp_path):
    marker = tmp_path / "ran"
    path = hostile(tmp_path / "inception.pth", marker)
    with pytest.raises(UserError, match=r"inception\.pth is refused.*ImageNet weights"):
        load_backbone(path, 5, 0, 75)
    assert not marker.exists()


# ------------------------------------------------------------------ FID reference statistics

def random_classifier(path):
    torch.manual_seed(0)
    return save_classifier(SyntheticClassifier(3, [2, 3], width=4, feat_dim=8).eval(), path)


def noise(n, seed):
    return torch.randint(0, 256, (n, 3, 16, 16), generator=torch.Generator().manual_seed(seed), dtype=torch.uint8)


FID = "fid12_synthetic-clf_test"


def test_fid_statistics_are_ours_and_a_hostile_file_is_refused(tmp_path):
    clf, cache, marker = tmp_path / "clf.pt", tmp_path / "cache", tmp_path / "ran"
    random_classifier(clf)

    def fid():
        return compute([FID], noise(12, 1), reference=noise(12, 2), weights=clf, cache_dir=cache, device="cpu")

    first = fid()
    (stats,) = cache.iterdir()
    assert stats.suffix == ".npz"
    # torch-fidelity's own cache file for the same entry is never read
    old_style = stats.with_suffix(".pt")
    hostile(old_style, marker)
    assert fid()["metrics"] == first["metrics"] and not marker.exists()

    np.savez(stats, mu=np.array([Touch(marker)], dtype=object), sigma=np.zeros((1, 1)))
    with pytest.raises(UserError, match=rf"{stats.name} is not a readable FID statistics file.*delete it") as err:
        fid()
    assert "\n" not in str(err.value) and not marker.exists()

    np.savez(stats, mu=np.zeros(3, np.float32), sigma=np.full((3, 3), np.nan))
    with pytest.raises(UserError, match="does not hold finite float32 statistics of 8-d features"):
        fid()


def test_fid_statistics_round_trip_byte_for_byte(tmp_path):
    stats = fidelity.fid_statistics(torch.randn(20, 4, generator=torch.Generator().manual_seed(0)))
    a, b = tmp_path / "a.npz", tmp_path / "b.npz"
    fidelity.save_statistics(stats, a)
    fidelity.save_statistics(stats, b)
    assert a.read_bytes() == b.read_bytes()
    back = fidelity.load_statistics(a, stats, "x")
    assert all(np.array_equal(back[k], stats[k]) and back[k].dtype == stats[k].dtype for k in stats)


# ------------------------------------------------------------------ bad image folders for score

@pytest.fixture
def clf(tmp_path):
    path = tmp_path / "clf.pt"
    random_classifier(path)
    return path


def score_error(capsys, tmp_path, folder, clf, protocol="is10_synthetic-clf", *extra):
    return one_line_error(capsys, score(folder, protocol, "--extractor-weights", str(clf), *extra, tmp_path=tmp_path))


def test_score_refuses_missing_file_and_empty_folders(capsys, tmp_path, images, clf):
    assert "not found" in score_error(capsys, tmp_path, tmp_path / "nowhere", clf)
    assert "is not a folder" in score_error(capsys, tmp_path, images / "000.png", clf)
    (tmp_path / "empty").mkdir()
    assert "holds no .png/.jpg images" in score_error(capsys, tmp_path, tmp_path / "empty", clf)
    line = one_line_error(capsys, score(images, "is10_synthetic-clf", "--extractor-weights",
                                        str(tmp_path / "absent.pt"), tmp_path=tmp_path))
    assert f"weights file {tmp_path / 'absent.pt'} not found" in line


def test_score_names_a_non_image(capsys, tmp_path, images, clf):
    (images / "005.png").write_text("not an image")
    assert f"{images / '005.png'} is not a readable image" in score_error(capsys, tmp_path, images, clf)


def test_score_names_a_truncated_image(capsys, tmp_path, images, clf):
    data = (images / "007.png").read_bytes()
    (images / "007.png").write_bytes(data[: len(data) // 2])
    assert f"{images / '007.png'} cannot be decoded" in score_error(capsys, tmp_path, images, clf)


def test_score_names_the_first_image_of_another_size(capsys, tmp_path, images, clf):
    Image.new("RGB", (20, 16)).save(images / "004.png")
    Image.new("RGB", (24, 24)).save(images / "009.png")
    line = score_error(capsys, tmp_path, images, clf)
    assert f"{images / '004.png'} is 20x16 px but 000.png is 16x16 px" in line


def test_score_names_a_bad_reference_image(capsys, tmp_path, images, clf):
    ref = tmp_path / "ref"
    shutil.copytree(images, ref)
    (ref / "003.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    line = score_error(capsys, tmp_path, images, clf, "fid12_synthetic-clf_test", "--reference", str(ref))
    assert f"{ref / '003.png'}" in line


def test_is_with_fewer_images_than_splits_is_an_error(capsys, tmp_path, images, clf):
    for f in sorted(images.iterdir())[5:]:
        f.unlink()
    line = score_error(capsys, tmp_path, images, clf)
    assert "needs at least 10 images" in line and "got 5" in line


# ------------------------------------------------------------------ what we write loads back

def test_trained_model_and_checkpoint_load_weights_only(workdir):
    payload = checkpoint.load_model(trained(workdir, "model.pt"), "x")
    assert payload["step"] == 2 and payload["family"] == "v2"
    from stackgan.methods import load_generator

    assert load_generator(payload, "cpu") is not None
    state = load_torch(trained(workdir, "checkpoint/state.pt"), "x")
    assert state["step"] == 2 and isinstance(state["rng"]["numpy"][1], torch.Tensor)


def test_rng_state_round_trips_through_a_checkpoint_file(tmp_path):
    torch.manual_seed(1)
    np.random.seed(2)
    random.seed(3)
    np.random.standard_normal()  # leaves a cached Gaussian in numpy's state
    torch_save(checkpoint.rng_state(), tmp_path / "rng.pt")
    draws = (torch.rand(3), np.random.standard_normal(3), random.random())
    checkpoint.set_rng_state(load_torch(tmp_path / "rng.pt", "x"))
    again = (torch.rand(3), np.random.standard_normal(3), random.random())
    assert torch.equal(draws[0], again[0]) and np.array_equal(draws[1], again[1]) and draws[2] == again[2]


def test_embedding_width_other_than_the_models_is_refused_before_sampling(workdir, project, capsys):
    from stackgan.methods.v2 import V2Config, build_generator

    payload = checkpoint.load_model(trained(workdir, "model.pt"), "x")
    payload["config"]["text_dim"] = 1000  # the prepared synthetic embeddings are 1024 wide
    payload["generator"] = build_generator(V2Config.of(payload["config"])).state_dict()
    torch_save(payload, project / RUN / "model.pt")
    line = one_line_error(capsys, ["--params", "params.yaml", "sample", "synthetic-v2"])
    assert "1024-wide caption embeddings but the model takes text_dim 1000" in line
    assert sorted(p.name for p in (project / RUN).iterdir()) == ["model.pt"]


def test_a_bare_pickle_is_refused_too(tmp_path):
    # torch.load reads a file that is not a zip archive as its legacy pickle format
    path = tmp_path / "x.pt"
    path.write_bytes(pickle.dumps(Touch(tmp_path / "ran"), protocol=2))
    with pytest.raises(UserError, match="x.pt is refused"):
        load_torch(path, "x")
    assert not (tmp_path / "ran").exists()


@pytest.mark.parametrize("content", ["{not json", "[1, 2]", '{"items": [3]}'])
def test_corrupt_samples_index_is_one_line(tmp_path, images, clf, content):
    from stackgan.metrics.compute import evaluate_samples
    from stackgan.samples_index import read_samples

    (images / "samples.json").write_text(content)
    with pytest.raises(UserError, match=r"samples\.json is not .*re-run `stackgan sample`"):
        read_samples(images)
    with pytest.raises(UserError, match=r"samples\.json is not .*re-run `stackgan sample`"):
        evaluate_samples(images, ["is10_synthetic-clf"], weights=clf, device="cpu")
