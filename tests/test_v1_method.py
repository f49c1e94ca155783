"""StackGAN-v1 training method: Stage-I then Stage-II through the real engine on a tiny
synthetic dataset, the frozen Stage-I, the LR schedule, the D-then-G order, resume, the
sampling interface, and params.yaml's v1 experiments."""

import contextlib
import copy
import io
import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from stackgan import config as C
from stackgan.cli import main as cli_main
from stackgan.data import cub, synthetic
from stackgan.data.prepared import PreparedSplit
from stackgan.errors import UserError
from stackgan.losses import v1 as L
from stackgan.methods import build_method, load_generator, parameter_counts
from stackgan.methods.v1 import STAGE1_KEYS, V1Method
from stackgan.train import train
from test_v1_models import stage1_d_by_hand, stage1_g_by_hand, stage2_d_by_hand, stage2_g_trainable_by_hand

PARAMS_FILE = Path(__file__).resolve().parents[1] / "params.yaml"
PARAMS = C.load_params(PARAMS_FILE)
VIEWS = {"sq38": {"mode": "square", "size": 38, "resample": "bicubic"},
         "sq76": {"mode": "square", "size": 76, "resample": "bicubic"}}
BATCH = 8
ITERS_PER_EPOCH = 90 // BATCH  # 120 synthetic images -> 90 train (15 of 20 classes)
S1_STEPS = 2 * ITERS_PER_EPOCH + 1  # reaches epoch 2: two halvings with lr_decay_epochs 1
TINY = {"gf_dim": 4, "df_dim": 4, "ef_dim": 8, "z_dim": 16, "r_num": 1,
        "train": {"batch_size": BATCH, "workers": 0, "checkpoint_every": 1000, "grid_every": 1000, "log_every": 5}}


def make_cfg(name, root, **overrides):
    cfg = C.deep_merge(C.experiment_config(PARAMS, name, "embedded"), C.deep_merge(TINY, overrides))
    cfg["data"]["prepared_dir"] = str(root / "prepared")
    run = root / "runs" / name  # Stage-II finds its parent as a sibling run folder
    cfg["paths"] = {"run": str(run), "checkpoint": str(run / "checkpoint"), "model": str(run / "model.pt"),
                    "grids": str(run / "grids"), "live": str(run / "live"), "snapshots": str(run / "snapshots"),
                    "samples": str(run / "samples"),
                    "metrics": str(root / "metrics" / f"{name}.json")}
    return cfg


def quiet(fn, *args, **kwargs):
    with contextlib.redirect_stderr(io.StringIO()), contextlib.redirect_stdout(io.StringIO()):
        return fn(*args, **kwargs)


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    root = tmp_path_factory.mktemp("v1method")
    raw = synthetic.generate(root / "raw", num_images=120, seed=3)
    cub.prepare(raw, root / "prepared", VIEWS)
    return root


@pytest.fixture(scope="module")
def stage1(root):
    cfg = make_cfg("synthetic-v1-s1", root, optim={"lr_decay_epochs": 1}, train={"max_steps": S1_STEPS})
    assert quiet(train, cfg, device_pref="cpu") == S1_STEPS
    return cfg


@pytest.fixture(scope="module")
def stage2(root, stage1):
    cfg = make_cfg("synthetic-v1", root, train={"max_steps": 3})
    assert quiet(train, cfg, device_pref="cpu") == 3
    return cfg


def load(path):
    return torch.load(path, map_location="cpu", weights_only=False)


def batch_and_noise(method, root, n=BATCH):
    ds = method.make_dataset(PreparedSplit(root / "prepared", "train"))
    batch = torch.utils.data.default_collate([ds[i] for i in range(n)])
    return batch, method.draw_noise(torch.Generator().manual_seed(5), n)


def test_stage1_lr_halves_every_decay_epochs(stage1):
    state = load(Path(stage1["paths"]["checkpoint"]) / "state.pt")
    assert state["step"] == S1_STEPS
    for name in ("G1", "D1"):  # epoch 2 at the last step: 2e-4 halved twice
        assert state["method"]["optims"][name]["param_groups"][0]["lr"] == pytest.approx(5e-5)


def test_on_epoch_schedule():
    m = V1Method.__new__(V1Method)  # only the schedule's inputs
    m.c = SimpleNamespace(optim=SimpleNamespace(lr_decay_epochs=100))
    p = torch.nn.Parameter(torch.zeros(1))
    m.optims = {"G2": torch.optim.Adam([p], lr=1.0), "D2": torch.optim.Adam([p], lr=1.0)}
    m.base_lr = {"G2": 2e-4, "D2": 1e-4}
    for epoch, factor in [(0, 1), (99, 1), (100, 0.5), (199, 0.5), (200, 0.25), (599, 1 / 32)]:
        m.on_epoch(epoch)
        assert m.optims["G2"].param_groups[0]["lr"] == pytest.approx(2e-4 * factor)
        assert m.optims["D2"].param_groups[0]["lr"] == pytest.approx(1e-4 * factor)


def test_stage2_keeps_stage1_frozen_and_records_parent(stage1, stage2):
    parent, child = load(stage1["paths"]["model"]), load(stage2["paths"]["model"])
    assert child["parent"] == {"name": "synthetic-v1-s1", "config_hash": parent["config_hash"], "step": S1_STEPS}
    assert child["trained_on"]["trained_from"] == {"parent": child["parent"]}  # part of the Stage-II run hash
    assert "parent_model" not in child["config"]  # the resolved config is saved as resolved
    g1 = load_generator(parent, "cpu").net
    g2 = load_generator(child, "cpu").net
    for (name, p1), (_, p2) in zip(g1.named_parameters(), g2.stage1.named_parameters()):
        assert torch.equal(p1, p2), name
    # the reference leaves Stage-I in train(): its BN statistics moved during Stage-II
    assert not torch.equal(g1.fc[1].running_mean, g2.stage1.fc[1].running_mean)


def test_stage2_optimizer_holds_only_stage2_parameters(stage1, root):
    m = build_method(make_cfg("synthetic-v1", root), torch.device("cpu"))
    g2 = m.nets["G2"]
    frozen = {id(p) for p in g2.stage1.parameters()}
    in_g_opt = {id(p) for group in m.optims["G2"].param_groups for p in group["params"]}
    assert in_g_opt == {id(p) for p in g2.parameters()} - frozen
    assert {id(p) for p in m.optims["D2"].param_groups[0]["params"]} == {id(p) for p in m.nets["D2"].parameters()}
    before = [p.clone() for p in g2.stage1.parameters()]
    batch, noise = batch_and_noise(m, root)
    logs = m.train_step(batch, noise, 0)
    assert {"loss_D", "loss_G", "G_kl", "D_uncond_real"} <= set(logs)
    assert all(torch.equal(a, b) for a, b in zip(before, g2.stage1.parameters()))


def test_one_iteration_updates_d_before_g(stage1, root):
    cfg = make_cfg("synthetic-v1-s1", root)
    m = build_method(cfg, torch.device("cpu"))
    replay = copy.deepcopy(m)
    batch, noise = batch_and_noise(m, root)
    logs = m.train_step(batch, noise, 0)

    G, D = replay.nets["G1"], replay.nets["D1"]
    (fake,), mu, logvar = G(noise["z"], batch["emb"], eps=noise["eps"])
    d_loss, _ = L.discriminator_loss(D, batch["imgs"][0], fake, mu, batch["wrong_imgs"][0])
    assert logs["loss_D"] == pytest.approx(d_loss.item(), abs=1e-6)
    stale_g_loss = L.generator_loss(copy.deepcopy(D), fake, mu, logvar, 2.0)[0].item()
    replay.optims["D1"].zero_grad()
    d_loss.backward()
    replay.optims["D1"].step()
    g_loss = L.generator_loss(D, fake, mu, logvar, 2.0)[0].item()
    assert logs["loss_G"] == pytest.approx(g_loss, abs=1e-6)  # G is judged by the updated D
    assert abs(g_loss - stale_g_loss) > 1e-4


def test_resume_replays_the_same_steps(root):
    cfg = make_cfg("synthetic-v1-s1", root, train={"max_steps": 6})
    cfg["paths"] = {k: v.replace("synthetic-v1-s1", "resume-a") for k, v in cfg["paths"].items()}
    quiet(train, cfg, device_pref="cpu")
    split = copy.deepcopy(cfg)
    split["paths"] = {k: v.replace("resume-a", "resume-b") for k, v in cfg["paths"].items()}
    quiet(train, split, device_pref="cpu", stop_after=4)
    quiet(train, split, device_pref="cpu")
    a, b = load(cfg["paths"]["model"])["generator"], load(split["paths"]["model"])["generator"]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_eval_generator_matches_the_sampling_interface(stage2):
    g = load_generator(load(stage2["paths"]["model"]), "cpu")
    gen = torch.Generator().manual_seed(0)
    z, emb, eps = torch.randn(4, 16, generator=gen), torch.randn(4, 1024, generator=gen), torch.randn(4, 8, generator=gen)
    with torch.no_grad():
        images, mu, logvar = g(z, emb, eps=eps)
        again = g(z, emb, eps=eps)[0]
        first_two = g(z[:2], emb[:2], eps=eps[:2])[0]
    assert [tuple(x.shape) for x in images] == [(4, 3, 32, 32), (4, 3, 64, 64)]
    assert mu.shape == logvar.shape == (4, 8)
    assert all(torch.equal(a, b) for a, b in zip(images, again))
    # Stage-I's CA noise is derived per sample from eps, so a sample does not depend on its batch
    assert all(torch.allclose(a[:2], b, atol=1e-6) for a, b in zip(images, first_two))


def test_missing_or_mismatched_parent_is_a_user_error(stage1, root):
    orphan = make_cfg("synthetic-v1", root, parent="no-such-run")
    with pytest.raises(UserError, match="run `stackgan train no-such-run` first"):
        build_method(orphan, torch.device("cpu"))
    with pytest.raises(UserError, match="gf_dim 4 .here 8."):
        build_method(make_cfg("synthetic-v1", root, gf_dim=8), torch.device("cpu"))


def test_describe_counts_for_cub_v1_match_hand_derivation():
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert cli_main(["--params", str(PARAMS_FILE), "describe", "cub-v1", "--json"]) == 0
    counts = json.loads(out.getvalue())["parameters"]
    assert counts == {"G2": stage2_g_trainable_by_hand(128, 4), "D2": stage2_d_by_hand(64)}
    s1 = parameter_counts(C.experiment_config(PARAMS, "cub-v1-s1-64", "embedded"))
    assert s1 == {"G1": stage1_g_by_hand(128), "D1": stage1_d_by_hand(64)}
    coco = parameter_counts(C.experiment_config(PARAMS, "coco-v1", "embedded"))
    assert coco == {"G2": 37_130_480, "D2": 159_889_538}  # spec §3a analytic counts


V1_EXPERIMENTS = sorted(k for k, v in PARAMS["experiments"].items() if (v or {}).get("model") == "v1")


@pytest.mark.parametrize("name", V1_EXPERIMENTS)
def test_every_v1_experiment_resolves_and_chains(name):
    cfg = C.experiment_config(PARAMS, name, "paper")
    counts = parameter_counts(cfg)
    assert set(counts) == ({"G1", "D1"} if cfg["stage"] == 1 else {"G2", "D2"})
    views = cfg["data"].get("views")
    if views is not None:  # datasets whose views params.yaml lists
        assert cfg["view"] in views and views[cfg["view"]]["size"] >= cfg["out_size"]
    if cfg["stage"] == 2:
        parent = C.experiment_config(PARAMS, cfg["parent"], "paper")
        assert parent["family"] == "v1" and parent["stage"] == 1 and parent["data"]["name"] == cfg["data"]["name"]
        assert {k: parent[k] for k in STAGE1_KEYS} == {k: cfg[k] for k in STAGE1_KEYS}
        assert parent["out_size"] == cfg["stage1_size"]
