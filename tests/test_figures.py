"""The paper's figures (stackgan/figures/) on tiny trained models of a scratch ci project: the t-SNE
grid places each sample once, a training image's nearest neighbour is itself, interpolation ends
are the two captions' own images, Stage-I and Stage-II come from the same noise, CA and z each
vary the image, every PNG is written with its index, and bad inputs stop with one line."""

import contextlib
import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from stackgan.cli import main as cli_main
from stackgan.config import experiment_config, load_params
from stackgan.data import cub, synthetic
from stackgan.errors import UserError
from stackgan.figures import neighbours, stage, stages, tsne
from stackgan.metrics.synthetic_classifier import train_synthetic_classifier
from stackgan.methods import family
from stackgan.sample import load_model
from stackgan.train import train

REPO = Path(__file__).resolve().parents[1]
TINY = {"gf_dim": 4, "df_dim": 4, "ef_dim": 8, "z_dim": 16}
STEPS = {"max_steps": 4, "batch_size": 8, "checkpoint_every": 100, "grid_every": 100, "log_every": 2}


def quiet(fn, *args, **kwargs):
    with contextlib.redirect_stderr(io.StringIO()), contextlib.redirect_stdout(io.StringIO()):
        return fn(*args, **kwargs)


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    """A ci project (unpinned: this process keeps its settings) with a tiny synthetic-v2, a Stage-I
    and a Stage-II synthetic-v1 (its Stage-I BN frozen, so it is its parent's generator), and a
    briefly trained synthetic classifier (the t-SNE features)."""
    root = tmp_path_factory.mktemp("figures")
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    views = {k: params["datasets"]["synthetic"]["views"][k] for k in ("short76", "sq38", "sq76")}
    raw = synthetic.generate(root / "raw", num_images=120, seed=3)
    cub.prepare(raw, root / "data/prepared/ci/synthetic", views)
    params["profile"] = "ci"
    params["profiles"]["ci"]["cpu"] = {"pinned": False}
    params["profiles"]["ci"]["overrides"] = {f: {"train": STEPS} for f in ("v1", "v2")}
    params["figures"]["profiles"]["ci"]["tsne"] = {"num_samples": 30, "grid": 6}
    for name in ("synthetic-v2", "synthetic-v1-s1", "synthetic-v1"):
        params["experiments"][name].update(TINY)
    params["experiments"]["synthetic-v1"]["freeze_stage1_bn"] = True
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    with contextlib.chdir(root):
        ds = {"prepared_dir": "data/prepared/ci/synthetic"}
        quiet(train_synthetic_classifier, ds, {**params["classifiers"]["synthetic"], "steps": 5},
              "runs/ci/classifiers/synthetic")
        for name in ("synthetic-v2", "synthetic-v1-s1", "synthetic-v1"):
            quiet(train, experiment_config(load_params(), name), device_pref="cpu")
    return root


@pytest.fixture(scope="module")
def v2_index(project):
    with contextlib.chdir(project):
        return quiet(stage.run_figures, load_params(), "synthetic-v2", device="cpu")


@pytest.fixture
def inside(project, monkeypatch):
    monkeypatch.chdir(project)
    return project


def context(name):
    params = load_params()
    cfg = experiment_config(params, name)
    payload, g = load_model(cfg, torch.device("cpu"))
    return stage.Context(cfg, params, payload, g, family(payload["family"]), stage.figure_settings(params, "ci"),
                         torch.device("cpu"))


def test_every_figure_of_v1_is_written_and_indexed(inside):
    index = quiet(stage.run_figures, load_params(), "synthetic-v1", device="cpu")
    out = inside / "results/figures/ci/synthetic-v1"
    assert json.loads((out / "index.json").read_text()) == index
    assert set(index["figures"]) == {"tsne", "stages", "diversity", "neighbours", "interpolation"}
    assert "baselines" in index["skipped"]  # none configured for synthetic-v1
    for entry in index["figures"].values():
        png = np.asarray(Image.open(out / entry["file"]).convert("RGB"))
        assert png.std() > 10, entry["file"]  # not blank
        assert entry["shows"].endswith(".")
    t = index["figures"]["tsne"]["params"]
    assert t["extractor"] == "synthetic-clf" and t["feature_dim"] == 128 and len(t["weights_sha256"]) == 64


def test_tsne_grid_holds_each_sample_once(inside):
    entry = tsne.draw(context("synthetic-v2"), inside / "t.png")
    cells = entry["grid_samples"]
    assert len(cells) == 36
    placed = [c for c in cells if c >= 0]
    assert sorted(placed) == list(range(30))  # 30 samples, each in one cell
    points = np.random.default_rng(0).normal(size=(50, 2))
    assert sorted(tsne.snap(points, 5)) == [-1] * 25 + list(range(25))  # more samples than cells: each cell once


def test_stage1_row_is_the_parent_generator_on_the_same_noise(inside):
    ctx = context("synthetic-v1")
    parent = context("synthetic-v1-s1")
    captions, emb = ctx.method.figure_captions(ctx.cfg, 3)
    z, eps = stages.noise(ctx, 3, 10)
    low, high = ctx.method.generate(ctx.cfg, ctx.generator, z, emb, eps)
    (alone,) = parent.method.generate(parent.cfg, parent.generator, z, emb, eps)
    assert np.array_equal(low, alone) and low.shape[1] * 2 == high.shape[1]
    other = ctx.method.generate(ctx.cfg, ctx.generator, torch.randn(3, 16), emb, eps)[0]
    assert not np.array_equal(low, other)


def test_ca_and_z_each_change_the_image(inside):
    ctx = context("synthetic-v2")
    _, emb = ctx.method.figure_captions(ctx.cfg, 1)
    e, z, eps = emb.expand(2, -1), torch.randn(2, 16), torch.randn(2, 8)
    fixed_z = ctx.method.generate(ctx.cfg, ctx.generator, z[:1].expand(2, -1), e, eps)[-1]
    fixed_eps = ctx.method.generate(ctx.cfg, ctx.generator, z, e, eps[:1].expand(2, -1))[-1]
    assert not np.array_equal(fixed_z[0], fixed_z[1]) and not np.array_equal(fixed_eps[0], fixed_eps[1])


def test_interpolation_ends_are_the_captions_own_images(inside, v2_index):
    ctx = context("synthetic-v2")
    entry = v2_index["figures"]["interpolation"]
    a, b = entry["params"]["pairs"][0]
    captions, emb = ctx.method.figure_captions(ctx.cfg, 2)
    assert captions == [a, b]
    own = ctx.method.generate(ctx.cfg, ctx.generator, torch.zeros(2, 16), emb, torch.zeros(2, 8))[-1]
    t = torch.linspace(0, 1, 5)[:, None]
    walk = ctx.method.generate(ctx.cfg, ctx.generator, torch.zeros(5, 16), (1 - t) * emb[0] + t * emb[1],
                               torch.zeros(5, 8))[-1]
    assert np.array_equal(walk[0], own[0]) and np.array_equal(walk[-1], own[1])
    assert not np.array_equal(walk[0], walk[-1])


def test_nearest_training_image_of_a_training_image_is_itself(inside):
    ctx = context("synthetic-v2")
    features, layer = neighbours.extractor(ctx)
    assert layer.startswith("D64 trunk")
    pool = neighbours.training_images(ctx.cfg, 64)
    feats = neighbours.batched(features, pool, 32)
    idx, dist = neighbours.retrieve(feats[[7, 40]], feats, 5)
    assert idx[:, 0].tolist() == [7, 40] and dist[:, 0].tolist() == [0.0, 0.0]
    assert (dist[:, 1:] > 0).all()


def test_baselines_share_captions_across_experiments(v2_index):
    index = v2_index
    entry = index["figures"]["baselines"]["params"]
    assert entry["experiments"] == ["synthetic-v2", "synthetic-v1"] and len(entry["captions"]) == 4
    assert "stages" in index["figures"]  # v2: every branch per caption


def test_missing_or_hostile_checkpoint_is_one_line(inside, capsys):
    state = inside / "runs/ci/synthetic-v1/checkpoint/state.pt"
    saved = state.read_bytes()
    try:
        state.unlink()
        assert cli_main(["figures", "synthetic-v1", "--device", "cpu"]) == 2
        err = capsys.readouterr().err.strip()
        assert "state.pt not found" in err and len(err.splitlines()) == 1
        class Payload:  # a pickle that would run code on load
            def __reduce__(self):
                return (print, ("executed",))

        torch.save({"step": 1, "x": Payload()}, state)
        assert cli_main(["figures", "synthetic-v1", "--device", "cpu"]) == 2
        err = capsys.readouterr()
        assert "is refused" in err.err and "executed" not in err.out and len(err.err.strip().splitlines()) == 1
        torch.save({"step": 4, "method": {"nets": {"D2": {"bad": torch.zeros(1)}}}}, state)
        assert cli_main(["figures", "synthetic-v1", "--device", "cpu"]) == 2
        assert "does not hold this experiment's discriminator" in capsys.readouterr().err
    finally:
        state.write_bytes(saved)


def test_sgan_neighbours_use_d0_and_caption_figures_are_skipped():
    """SGAN (class labels): the t-SNE map, neighbours and baselines apply; D0's trunk features of
    a training image find that image first."""
    cfg = experiment_config(load_params(REPO / "params.yaml"), "synthetic-sgan", "ci")
    method = family("sgan")
    assert set(method.figure_skips(cfg)) == {"stages", "diversity", "interpolation"}
    torch.manual_seed(0)
    nets = method.build_networks(cfg)
    state = {"method": {"nets": {k: v.state_dict() for k, v in nets.items()}}}
    features, layer = method.discriminator_features(cfg, state, torch.device("cpu"))
    images = np.random.default_rng(0).integers(0, 256, (12, 32, 32, 3), dtype=np.uint8)
    feats = features(images)
    assert layer.startswith("D0 trunk") and feats.shape == (12, 48 * 6 * 6)  # width 0.25 of 192 channels, 6x6
    idx, dist = neighbours.retrieve(feats[[3]], feats, 2)
    assert idx[0, 0] == 3 and dist[0, 0] == 0 and dist[0, 1] > 0


def test_a_misspelt_figure_setting_is_an_error():
    params = load_params(REPO / "params.yaml")
    params["figures"]["profiles"]["ci"]["tsne"]["num_smaples"] = 3
    with pytest.raises(UserError, match="figures.profiles.ci.tsne.num_smaples .*did you mean num_samples"):
        stage.figure_settings(params, "ci")
    assert stage.figure_settings(load_params(REPO / "params.yaml"), "paper")["tsne"] == {
        "num_samples": 30000, "grid": 50, "thumb": 32, "perplexity": 30.0}  # the paper's Fig. 5
