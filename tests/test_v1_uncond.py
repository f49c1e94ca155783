"""Unconditional StackGAN-v1 (Table 3's LSUN / ImageNet rows): network shapes and parameter
counts derived by hand from the conditional ones, the plain real/fake losses against hand values,
a training iteration of each stage without embeddings, the sampling interface, and the four
experiments in params.yaml."""

import contextlib
import io
import json
import math
from pathlib import Path

import pytest
import torch
import torch.nn as nn

from stackgan import config as C
from stackgan.cli import main as cli_main
from stackgan.data import cub, synthetic
from stackgan.data.prepared import PreparedSplit
from stackgan.errors import UserError
from stackgan.losses import v1 as L
from stackgan.methods import build_method, load_generator, parameter_counts
from stackgan.methods.v1 import STAGE1_KEYS, V1Generator
from stackgan.models.v1 import Stage1D, Stage1G, Stage2D, Stage2G
from stackgan.config import RunInputs
from stackgan.train import save_model, train
from test_v1_models import (bn, ca, conv3, count, logit_head, stage1_d_by_hand, stage1_g_by_hand, stage2_d_by_hand,
                            stage2_g_trainable_by_hand, trainable_parameters)

PARAMS_FILE = Path(__file__).resolve().parents[1] / "params.yaml"
PARAMS = C.load_params(PARAMS_FILE)
# What a hand-saved model.pt records it was trained on (these tests save models without training).
INPUTS = RunInputs(data_fingerprint="d", code_fingerprint="c", reproducibility={}, trained_from={})
UNCOND_V1 = ["lsun-bedroom-v1", "lsun-church-v1", "imagenet-dog-v1", "imagenet-cat-v1"]
GF, DF, Z = 4, 2, 16  # tiny widths for forward tests
TINY = {"gf_dim": GF, "df_dim": DF, "z_dim": Z, "r_num": 1, "stage1_size": 32,  # embedded sizes: 32 -> 64
        "train": {"batch_size": 4, "workers": 0}}


# --- hand arithmetic, relative to the conditional networks (CUB widths) -----------------------
def uncond_stage1_g(gf, z_dim=100, c_dim=128):
    # no CA (its Linear(1024 -> 2*c_dim) is gone) and the FC reads z (100) instead of cat(z, c) (228):
    # c_dim * 8gf * 16 fewer weights
    return stage1_g_by_hand(gf) - ca(c_dim) - c_dim * (8 * gf) * 16


def uncond_stage2_g_trainable(gf, r_num, c_dim=128):
    # no Stage-II CA; the joint 3x3 conv reads 4gf image channels instead of 4gf + c_dim
    return stage2_g_trainable_by_hand(gf, r_num) - ca(c_dim) - conv3(c_dim, 4 * gf)


def uncond_stage1_d(df, c_dim=128):
    # the cond head (joint 3x3 conv over 8df + c_dim channels, BN, logit conv) is replaced by the
    # uncond logit conv, which has the same size as the cond one
    return stage1_d_by_hand(df) - conv3(8 * df + c_dim, 8 * df) - bn(8 * df)


def uncond_stage2_d(df, c_dim=128):
    # the cond head goes, the uncond logit conv stays
    return stage2_d_by_hand(df) - conv3(8 * df + c_dim, 8 * df) - bn(8 * df) - logit_head(8 * df)


def test_hand_counts_are_the_expected_numbers():
    # GF=128: 8gf = 1024; CA = 1024*256 + 256 = 262,400; FC: 128*1024*16 = 2,097,152
    assert stage1_g_by_hand(128) - uncond_stage1_g(128) == 262_400 + 2_097_152
    # Stage-II: CA 262,400 + 9*128*512 = 589,824
    assert stage2_g_trainable_by_hand(128, 4) - uncond_stage2_g_trainable(128, 4) == 262_400 + 589_824
    # DF=64: conv3(640, 512) = 2,949,120, BN(512) = 1,024; logit head 16*512 + 1 = 8,193
    assert stage1_d_by_hand(64) - uncond_stage1_d(64) == 2_949_120 + 1_024
    assert stage2_d_by_hand(64) - uncond_stage2_d(64) == 2_949_120 + 1_024 + 8_193


def test_unconditional_parameter_counts_match_hand_derivation():
    with torch.device("meta"):
        g1, d1 = Stage1G(128, conditional=False), Stage1D(64, conditional=False)
        g2 = Stage2G(Stage1G(128, conditional=False), 128, 4, conditional=False)
        d2 = Stage2D(64, conditional=False)
    assert count(g1) == uncond_stage1_g(128)
    assert count(g2, trainable_only=True) == uncond_stage2_g_trainable(128, 4)
    assert count(g2) == uncond_stage2_g_trainable(128, 4) + uncond_stage1_g(128)
    assert count(d1) == uncond_stage1_d(64)
    assert count(d2) == uncond_stage2_d(64)
    assert g1.condition is None and g2.condition is None
    assert d1.uncond_logits is not None and not hasattr(d1, "cond_logits")


def test_unconditional_shapes_at_reference_width():
    with torch.device("meta"):
        g2 = Stage2G(Stage1G(128, conditional=False), 128, 4, conditional=False)
        images, mu, logvar = g2(torch.zeros(2, 100))
        probs2 = Stage2D(64, conditional=False)(images[1])
        probs1 = Stage1D(64, conditional=False)(images[0])
    assert [tuple(i.shape) for i in images] == [(2, 3, 64, 64), (2, 3, 256, 256)]
    assert mu is None and logvar is None
    assert [tuple(p.shape) for p in probs1] == [(2,)] and [tuple(p.shape) for p in probs2] == [(2,)]


def tiny_stage2(seed=0):
    torch.manual_seed(seed)
    return Stage2G(Stage1G(GF, z_dim=Z, out_size=32, conditional=False), GF, 1, out_size=64, conditional=False)


def test_stage2_reads_only_the_stage1_image():
    g = tiny_stage2()
    z = torch.randn(3, Z, generator=torch.Generator().manual_seed(1))
    (low, high), mu, logvar = g(z)
    assert low.shape == (3, 3, 32, 32) and high.shape == (3, 3, 64, 64) and not low.requires_grad
    assert mu is None and logvar is None
    # no text, no z re-injection: Stage-II's image is its own layers applied to the Stage-I image
    by_layers = g.image(g.ups(g.res(g.joint(g.encoder(low)))))
    torch.testing.assert_close(high, by_layers)
    assert g.joint[0].in_channels == 4 * GF
    # an embedding, if passed, is ignored
    assert torch.equal(g(z, torch.randn(3, 1024))[0][1], high)


def test_stage1_g_is_z_only():
    torch.manual_seed(0)
    g = Stage1G(GF, z_dim=Z, out_size=32, conditional=False)
    (img,), mu, logvar = g(torch.randn(2, Z))
    assert img.shape == (2, 3, 32, 32) and mu is None and logvar is None
    assert g.fc[0].in_features == Z


def test_conditioning_must_agree_between_stages():
    with pytest.raises(UserError, match="same `conditional`"):
        Stage2G(Stage1G(GF, out_size=32), GF, 1, out_size=64, conditional=False)
    with pytest.raises(UserError, match="same `conditional`"):
        Stage2G(Stage1G(GF, out_size=32, conditional=False), GF, 1, out_size=64)


# --- losses against hand values ---------------------------------------------------------------
class MeanD(nn.Module):
    """Stand-in D with one head: the probability is the mean of the image (constant images)."""

    def forward(self, x, c=None):
        return [x.flatten(1).mean(1)]


def test_unconditional_losses_against_hand_values():
    real = torch.full((4, 3, 8, 8), 0.8)
    fake = torch.full((4, 3, 8, 8), 0.3, requires_grad=True)
    d_total, d_parts = L.unconditional_discriminator_loss(MeanD(), real, fake)
    # -log(0.8) = 0.2231436, -log(1 - 0.3) = 0.3566749
    assert d_parts == pytest.approx({"real": 0.2231436, "fake": 0.3566749}, abs=1e-6)
    assert d_total.item() == pytest.approx(0.5798185, abs=1e-6)
    assert not d_total.requires_grad  # the fakes are detached: D's step never reaches G
    g_total, g_parts = L.unconditional_generator_loss(MeanD(), fake)
    assert g_parts == {"adv": pytest.approx(-math.log(0.3), abs=1e-6)}  # 1.2039728, no KL term
    g_total.backward()
    # d(-log mean)/dx = -1 / (0.3 * 192) per pixel of each image, averaged over the batch of 4
    torch.testing.assert_close(fake.grad, torch.full_like(fake, -1 / (0.3 * 192 * 4)))


# --- the method: one training iteration per stage, no embeddings ------------------------------
def tiny_cfg(name, root, **extra):
    cfg = C.deep_merge(C.experiment_config(PARAMS, name, "paper"), C.deep_merge(TINY, extra))
    run = root / "runs" / name  # Stage-II finds its parent as a sibling run folder
    cfg["paths"] = {"run": str(run), "model": str(run / "model.pt")}
    return cfg


def image_batch(n, size, seed):
    g = torch.Generator().manual_seed(seed)
    return {"imgs": [torch.rand(n, 3, size, size, generator=g) * 2 - 1], "index": torch.arange(n)}


def test_train_step_each_stage_without_embeddings(tmp_path):
    s1_cfg = tiny_cfg("lsun-bedroom-v1-s1", tmp_path, out_size=32)
    m1 = build_method(s1_cfg, torch.device("cpu"))
    noise = m1.draw_noise(torch.Generator().manual_seed(0), 4)
    assert set(noise) == {"z"} and noise["z"].shape == (4, Z)
    logs = m1.train_step(image_batch(4, 32, 1), noise, 0)
    assert {"loss_D", "loss_G", "D_real", "D_fake", "G_adv"} <= set(logs) and "G_kl" not in logs
    assert float(logs["loss_D"]) == pytest.approx(float(logs["D_real"] + logs["D_fake"]), abs=1e-6)
    assert all(math.isfinite(v) for v in logs.values())
    save_model(s1_cfg, m1, 1, "parenthash", INPUTS)

    s2_cfg = tiny_cfg("lsun-bedroom-v1", tmp_path, out_size=64)
    m2 = build_method(s2_cfg, torch.device("cpu"))
    assert m2.parent == {"name": "lsun-bedroom-v1-s1", "config_hash": "parenthash", "step": 1}
    g2 = m2.nets["G2"]
    for (k, p1), p2 in zip(m1.nets["G1"].named_parameters(), g2.stage1.parameters()):
        assert torch.equal(p1, p2), k
    frozen = [p.clone() for p in g2.stage1.parameters()]
    trainable = [p.clone() for p in trainable_parameters(g2)]
    noise = m2.draw_noise(torch.Generator().manual_seed(0), 4)
    assert set(noise) == {"z"}
    logs = m2.train_step(image_batch(4, 64, 2), noise, 0)
    assert set(logs) == {"loss_D", "loss_G", "lr", "D_real", "D_fake", "G_adv"}
    assert all(torch.equal(a, b) for a, b in zip(frozen, g2.stage1.parameters()))
    assert any(not torch.equal(a, b) for a, b in zip(trainable, trainable_parameters(g2)))

    g = m2.eval_generator()  # the sampling interface: g(z, emb=None, eps=None)
    z = torch.randn(2, Z)
    with torch.no_grad():
        images, mu, logvar = g(z, None, eps=None)
        again, _, _ = g(z)
    assert [tuple(x.shape) for x in images] == [(2, 3, 32, 32), (2, 3, 64, 64)] and mu is None and logvar is None
    assert all(torch.equal(a, b) for a, b in zip(images, again))
    assert isinstance(g, V1Generator)


def test_conditional_parent_is_refused(tmp_path):
    s1_cfg = tiny_cfg("lsun-bedroom-v1-s1", tmp_path, out_size=32, conditional=True)
    save_model(s1_cfg, build_method(s1_cfg, torch.device("cpu")), 1, "h", INPUTS)
    with pytest.raises(UserError, match="conditional True .here False."):
        build_method(tiny_cfg("lsun-bedroom-v1", tmp_path, out_size=64), torch.device("cpu"))


# --- params.yaml ------------------------------------------------------------------------------
def test_describe_lsun_bedroom_v1():
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert cli_main(["--params", str(PARAMS_FILE), "describe", "lsun-bedroom-v1", "--json"]) == 0
    described = json.loads(out.getvalue())
    assert described["parameters"] == {"G2": uncond_stage2_g_trainable(128, 4), "D2": uncond_stage2_d(64)}
    cfg = described["config"]
    assert cfg["conditional"] is False and cfg["stage"] == 2 and cfg["out_size"] == 256 and cfg["view"] == "sq304"


@pytest.mark.parametrize("name", UNCOND_V1)
def test_table3_experiments_and_their_parents(name):
    cfg = C.experiment_config(PARAMS, name, "paper")
    parent = C.experiment_config(PARAMS, cfg["parent"], "paper")
    assert cfg["parent"] == f"{name}-s1" and parent["stage"] == 1 and cfg["stage"] == 2
    for c in (cfg, parent):
        assert c["conditional"] is False and c["data"]["name"] == cfg["data"]["name"]
        assert c["gf_dim"] == 128 and c["df_dim"] == 64 and c["train"]["batch_size"] == 64
        assert c["eval"] == {"seed": 100, "num_samples": 30000, "protocols": ["is30k_imagenet", "fid30k_train"]}
    assert {k: parent[k] for k in STAGE1_KEYS} == {k: cfg[k] for k in STAGE1_KEYS}
    assert (parent["view"], parent["out_size"]) == ("sq76", 64) and (cfg["view"], cfg["out_size"]) == ("sq304", 256)
    assert cfg["r_num"] == 4 and parent["out_size"] == cfg["stage1_size"]
    # as long as the authors' v2 run on the set, five halvings over a stage where epochs allow
    v2 = C.experiment_config(PARAMS, name.replace("-v1", "-v2"), "paper")
    for c in (cfg, parent):
        assert c["train"]["max_epoch"] == v2["train"]["max_epoch"]
        assert c["optim"]["lr_decay_epochs"] == math.ceil(c["train"]["max_epoch"] / 6)
    assert parameter_counts(parent) == {"G1": uncond_stage1_g(128), "D1": uncond_stage1_d(64)}


# --- both stages through the real engine on images only -----------------------------------------
def test_engine_trains_both_stages_from_images_only(tmp_path):
    raw = synthetic.generate(tmp_path / "raw", num_images=60, seed=3)
    cub.prepare(raw, tmp_path / "prepared", {"sq38": {"mode": "square", "size": 38, "resample": "bicubic"},
                                             "sq76": {"mode": "square", "size": 76, "resample": "bicubic"}})
    steps = {"max_steps": 2, "checkpoint_every": 1000, "grid_every": 1000, "log_every": 1}
    models = {}
    for name, extra in [("lsun-bedroom-v1-s1", {"out_size": 32, "view": "sq38"}),
                        ("lsun-bedroom-v1", {"out_size": 64, "view": "sq76"})]:
        cfg = tiny_cfg(name, tmp_path, train=steps, **extra)
        run = Path(cfg["paths"]["run"])
        cfg["paths"].update(checkpoint=str(run / "checkpoint"), grids=str(run / "grids"), live=str(run / "live"),
                            snapshots=str(run / "snapshots"))
        cfg["data"]["prepared_dir"] = str(tmp_path / "prepared")
        item = build_method(cfg, torch.device("cpu")).make_dataset(PreparedSplit(tmp_path / "prepared", "train"))[0]
        size = extra["out_size"]
        assert set(item) == {"imgs", "index"} and [tuple(x.shape) for x in item["imgs"]] == [(3, size, size)]
        with contextlib.redirect_stderr(io.StringIO()), contextlib.redirect_stdout(io.StringIO()):
            assert train(cfg, device_pref="cpu") == 2
        models[name] = torch.load(cfg["paths"]["model"], map_location="cpu", weights_only=False)
    child = models["lsun-bedroom-v1"]
    assert child["parent"]["name"] == "lsun-bedroom-v1-s1" and child["config"]["conditional"] is False
    g = load_generator(child, "cpu")
    with torch.no_grad():
        images, mu, logvar = g(torch.randn(2, Z))
    assert [tuple(x.shape) for x in images] == [(2, 3, 32, 32), (2, 3, 64, 64)] and mu is None and logvar is None
