"""SGAN training method: loss switches per experiment, joint end-to-end gradient, entropy
training of Q and the D trunk, adaptive G steps, phases, sampling, and the encoder stage.

Fixtures: a tiny CIFAR-10 in its native pickle format whose class fixes the image colour (so a
few encoder steps learn it), prepared by stackgan.data.cifar10, and an encoder trained on it.
Networks run at width 1/8 (the architecture's layers, fewer channels) to stay fast on a CPU.
"""

import pickle

import numpy as np
import pytest
import torch

from stackgan import seeding, speed
from stackgan.config import experiment_config, load_params
from stackgan.data import cifar10
from stackgan.data.prepared import PreparedSplit
from stackgan.encoder import encoder_config, load_encoder, train_encoder
from stackgan.errors import UserError
from stackgan.losses.sgan import adaptive_g_steps
from stackgan.methods import build_method, load_generator, output_resolution, parameter_counts
from stackgan.methods.sgan import SGANMethod, label_attributes

PER_CLASS = 6  # images per class per CIFAR batch
BATCH = 10
CIFAR_EXPERIMENTS = ["cifar10-dcgan-adv", "cifar10-dcgan-adv-ent", "cifar10-dcgan-adv-cond",
                     "cifar10-dcgan-adv-cond-ent", "cifar10-sgan-nojoint", "cifar10-sgan"]


def coloured_batch(rng, per_class):
    """10 classes; class k's image is a fixed colour plus noise, channel-planar rows like CIFAR."""
    palette = np.stack([np.linspace(20, 235, 10), np.roll(np.linspace(20, 235, 10), 3),
                        np.roll(np.linspace(20, 235, 10), 6)], 1)
    labels = np.repeat(np.arange(10), per_class)
    rng.shuffle(labels)
    pix = palette[labels][:, :, None] + rng.uniform(-20, 20, (len(labels), 3, 1024))
    return {"data": pix.clip(0, 255).astype(np.uint8).reshape(len(labels), 3072), "labels": labels.tolist()}


@pytest.fixture(scope="module")
def cifar_root(tmp_path_factory):
    """(prepared dir, encoder.pt path) of the tiny coloured CIFAR-10."""
    root = tmp_path_factory.mktemp("sgan")
    folder = root / "raw" / cifar10.FOLDER
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name in cifar10.BATCHES["train"] + cifar10.BATCHES["test"]:
        (folder / name).write_bytes(pickle.dumps(coloured_batch(rng, PER_CLASS // 2 + 1), protocol=2))
    cifar10.prepare(root / "raw", root / "prepared")
    cfg = encoder_config(load_params(), "cifar10", "ci")
    cfg.update(steps=40, batch_size=BATCH, width=0.125, lr=3e-3)
    report = train_encoder(cfg, root / "prepared", root / "enc", device="cpu")
    return root, report


def sgan_cfg(cifar_root, name="cifar10-sgan", **train):
    root, _ = cifar_root
    cfg = experiment_config(load_params(), name, "ci")
    cfg["data"]["prepared_dir"] = str(root / "prepared")
    cfg["encoder"] = str(root / "enc" / "encoder.pt")
    cfg["width"] = 0.125
    cfg["adaptive_g_steps"] = False
    cfg["train"].update(batch_size=BATCH, **train)
    return cfg


def method_and_batch(cfg, seed=0):
    torch.manual_seed(seed)
    m = build_method(cfg, torch.device("cpu"))
    data = m.make_dataset(PreparedSplit(cfg["data"]["prepared_dir"], "train"))
    batch = {"x": torch.stack([data[i]["x"] for i in range(BATCH)]),
             "y": torch.stack([data[i]["y"] for i in range(BATCH)])}
    return m, batch


def run_step(m, batch, step, seed=0):
    """One engine iteration on one process: the engine's per-step seeding and noise."""
    torch.manual_seed(seeding.step_torch_seed(seed, step, 0))
    return m.train_step(batch, m.draw_noise(seeding.step_noise_generator(seed, step), BATCH), step)


def test_encoder_stage_report_and_payload(cifar_root):
    root, report = cifar_root
    assert report["heldout"] == "test split" and report["heldout_count"] == 10 * (PER_CLASS // 2 + 1)
    assert report["heldout_accuracy"] > 0.5  # colours are easy; chance is 0.1
    assert len(report["weights_sha256"]) == 64
    encoder, payload = load_encoder(root / "enc" / "encoder.pt")
    assert payload["class_ids"] == list(range(10)) and payload["image_mean"].shape == (3, 32, 32)
    assert not any(p.requires_grad for p in encoder.parameters()) and not encoder.training
    with pytest.raises(UserError, match="stackgan encoder"):
        load_encoder(root / "nowhere" / "encoder.pt")


@pytest.mark.parametrize("name", CIFAR_EXPERIMENTS)
def test_each_loss_term_follows_experiment_switches(cifar_root, name):
    cfg = sgan_cfg(cifar_root, name, independent_steps=1)
    m, batch = method_and_batch(cfg)
    logs = run_step(m, batch, 0)
    loss = cfg["loss"]
    if cfg["variant"] == "dcgan":
        gens, ds = ["G"], ["D0"]
        assert (m.nets["G"].label_code is not None) == loss["use_cond"]  # labels only with L_cond
    else:
        gens, ds = ["G1", "G0"], ["D1", "D0"]
    for g in gens:
        assert f"{g}/adv" in logs
        assert (f"{g}/cond" in logs) == loss["use_cond"]
        assert (f"{g}/ent" in logs) == loss["use_ent"]
    for d in ds:
        assert (f"{d}/ent" in logs) == loss["use_ent"]
        assert (f"{d}/class" in logs) == (loss["class_weight"] > 0)
    expected = {"cifar10-dcgan-adv": (False, False), "cifar10-dcgan-adv-ent": (False, True),
                "cifar10-dcgan-adv-cond": (True, False)}.get(name, (True, True))
    assert (loss["use_cond"], loss["use_ent"]) == expected
    if name == "cifar10-sgan":  # step 1 is past independent_steps: the joint phase
        assert m.phase == "independent"
        run_step(m, batch, 1)
        assert m.phase == "joint"
        assert sum(isinstance(x, torch.nn.Dropout) and x.p == 0.3 for x in m.nets["D0"].modules()) == 2
    assert cfg["train"]["joint_steps"] == (100000 if name == "cifar10-sgan" else 0)


def _g1_state(cfg):
    m, batch = method_and_batch(cfg)
    run_step(m, batch, 0)
    g1 = [p.detach().clone() for p in m.nets["G1"].parameters()]
    grads = [p.grad.clone() for p in m.nets["G1"].parameters()]
    g0 = [p.detach().clone() for p in m.nets["G0"].parameters()]
    return g1, grads, g0


def test_joint_step_sends_g0_loss_into_g1(cifar_root):
    def cfg(end_to_end, weight, independent_steps=0):
        c = sgan_cfg(cifar_root, independent_steps=independent_steps)
        c["joint_end_to_end"] = end_to_end
        c["loss"]["joint_g0_weight"] = weight
        return c

    e2e, e2e_grads, e2e_g0 = _g1_state(cfg(True, 0.01))
    plain, plain_grads, plain_g0 = _g1_state(cfg(False, 0.01))
    zero, zero_grads, _ = _g1_state(cfg(True, 0.0))
    assert any(not torch.equal(a, b) for a, b in zip(e2e_grads, plain_grads))
    assert any(not torch.equal(a, b) for a, b in zip(e2e, plain))
    assert all(torch.equal(a, b) for a, b in zip(zero_grads, plain_grads))  # 0 * L_G0 adds nothing
    assert all(torch.equal(a, b) for a, b in zip(zero, plain))
    assert all(torch.equal(a, b) for a, b in zip(e2e_g0, plain_g0))  # G0 takes L_G0 either way
    # independent phase: G1 never sees L_G0
    ind, _, _ = _g1_state(cfg(True, 0.01, independent_steps=5))
    ind_plain, _, _ = _g1_state(cfg(False, 0.01, independent_steps=5))
    assert all(torch.equal(a, b) for a, b in zip(ind, ind_plain))


@pytest.mark.parametrize("phase_steps", [5, 0])  # independent, joint
def test_entropy_term_trains_q_head_and_d_trunk(cifar_root, phase_steps):
    states = {}
    for use_ent in (True, False):
        cfg = sgan_cfg(cifar_root, independent_steps=phase_steps)
        cfg["loss"]["use_ent"] = use_ent
        m, batch = method_and_batch(cfg)
        before = {d: {k: v.clone() for k, v in m.nets[d].state_dict().items()} for d in ("D0", "D1")}
        run_step(m, batch, 0)
        states[use_ent] = (before, {d: m.nets[d].state_dict() for d in ("D0", "D1")})
    for d in ("D0", "D1"):
        q_keys = [k for k in states[True][0][d] if k.startswith("q_head") and k.endswith("weight")]
        trunk = [k for k in states[True][0][d] if k.startswith("trunk") and k.endswith("weight")]
        assert q_keys and trunk
        for k in q_keys:
            assert torch.equal(states[True][0][d][k], states[False][0][d][k])  # same init
            assert not torch.equal(states[True][1][d][k], states[True][0][d][k])  # Q trained
            assert torch.equal(states[False][1][d][k], states[False][0][d][k])  # no ent: untouched
        assert any(not torch.equal(states[True][1][d][k], states[False][1][d][k]) for k in trunk)


def test_adaptive_g_steps_are_applied(cifar_root):
    cfg = sgan_cfg(cifar_root, name="cifar10-dcgan-adv", independent_steps=50)
    cfg["adaptive_g_steps"] = True
    cfg["optim"].update(lr_d=3e-2, lr_g=1e-7)  # D wins quickly, so its adversarial loss falls
    m, batch = method_and_batch(cfg)
    assert m.draw_noise(seeding.step_noise_generator(0, 0), BATCH)["z"].shape == (BATCH, 8, 50)
    g_param = next(m.nets["G"].parameters())
    counts = []
    for step in range(24):
        before = int(m.optims["G"].state[g_param]["step"]) if m.optims["G"].state else 0
        logs = run_step(m, batch, step)
        done = int(m.optims["G"].state[g_param]["step"]) - before
        assert done == float(logs["G/steps"]) == adaptive_g_steps(float(logs["D0/adv"]))
        counts.append(done)
    assert counts[0] == 1 and max(counts) > 3, f"D never took over: G steps {counts}"


def test_joint_phase_discriminators_get_the_run_switches(cifar_root):
    """The joint phase builds new D1/D0 modules; the run's switches (stackgan/speed.py) must
    reach them as they reached the first phase's networks."""
    cfg = sgan_cfg(cifar_root, independent_steps=1, channels_last=True)
    m, batch = method_and_batch(cfg)
    speed.apply(m.nets, m.c.train)
    old = {name: m.nets[name] for name in ("D1", "D0")}
    for step in range(2):
        run_step(m, batch, step)
    assert m.phase == "joint"
    assert all(m.nets[name] is not old[name] for name in old)
    convs = [p for p in m.nets["D0"].parameters() if p.dim() == 4]  # D1 judges features: no convolutions
    assert convs and all(p.is_contiguous(memory_format=torch.channels_last) for p in convs)


def test_smoke_phases_resume_sampling_and_grid(cifar_root, tmp_path):
    cfg = sgan_cfg(cifar_root, independent_steps=2, joint_steps=1)
    m, batch = method_and_batch(cfg)
    for step in range(3):
        logs = run_step(m, batch, step)
        # 0-d tensors, read by the engine on log steps only
        assert all(isinstance(v, torch.Tensor) and v.dim() == 0 and not v.requires_grad for v in logs.values())
        assert all(torch.isfinite(v) for v in logs.values())
    assert m.phase == "joint"
    state = m.state_dict()
    again, _ = method_and_batch(cfg, seed=5)
    again.load_state_dict(state)
    assert again.phase == "joint"
    assert all(torch.equal(a, b) for a, b in zip(again.nets["G0"].state_dict().values(),
                                                  m.nets["G0"].state_dict().values()))
    assert all(torch.equal(a, b) for a, b in zip(again.nets["D1"].state_dict().values(),
                                                  m.nets["D1"].state_dict().values()))
    g = m.eval_generator()
    labels = [3, 1, 4, 1, 5, 9]
    images = g.sample_images(labels, seed=100)
    assert images.shape == (6, 32, 32, 3) and images.dtype == np.uint8
    chunked = np.concatenate([g.sample_images(labels[:2], 100, 0), g.sample_images(labels[2:], 100, 2)])
    assert np.array_equal(images, chunked)  # noise depends on (seed, index) only
    payload = {"family": "sgan", "config": cfg, "step": 3, "generator": g.state_dict(), **m.export_extra()}
    loaded = load_generator(payload, torch.device("cpu"))
    assert np.array_equal(loaded.sample_images(labels, 100), images)
    cfg["eval"].update(num_samples=12, seed=100)
    batches = list(SGANMethod.sample_batches(cfg, payload, loaded, 5))
    items = [it for _, its, _ in batches for it in its]
    assert [it["label"] for it in items] == [i % 10 for i in range(12)] and len(batches) == 3
    assert all(branches is None for _, _, branches in batches)
    assert np.array_equal(batches[1][0], loaded.sample_images([5, 6, 7, 8, 9], 100, 5))
    assert items[3] == {"label": 3, "class_id": 3, "caption_index": None, "attributes": None}
    write = m.progress_grid(cfg["data"]["prepared_dir"])
    write(tmp_path / "grid.png")
    first = (tmp_path / "grid.png").read_bytes(), (tmp_path / "grid-fixed-fc3.png").read_bytes()
    write(tmp_path / "grid.png")  # the same rows and noise at every call
    assert first == ((tmp_path / "grid.png").read_bytes(), (tmp_path / "grid-fixed-fc3.png").read_bytes())
    assert output_resolution(cfg) == images.shape[1] == 32
    counts = parameter_counts(cfg)
    assert set(counts) == {"E", "G1", "G0", "D1", "D0"} and counts["E"] == 0  # E is frozen


def test_bad_configuration_is_user_error(cifar_root, tmp_path):
    cfg = sgan_cfg(cifar_root)
    cfg["encoder"] = str(tmp_path / "missing.pt")
    with pytest.raises(UserError, match="stackgan encoder"):
        SGANMethod(cfg, torch.device("cpu"))
    cfg = sgan_cfg(cifar_root)
    cfg["num_classes"] = 12
    with pytest.raises(UserError, match="retrain the encoder"):
        build_method(cfg, torch.device("cpu"))
    cfg = sgan_cfg(cifar_root, max_steps=7)
    with pytest.raises(UserError, match="max_steps"):
        build_method(cfg, torch.device("cpu"))
    other = sgan_cfg(cifar_root)
    m = build_method(other, torch.device("cpu"))
    m.encoder_payload["prepared_train"] = "0" * 64
    with pytest.raises(UserError, match="another version"):
        m.make_dataset(PreparedSplit(other["data"]["prepared_dir"], "train"))


def test_synthetic_label_attributes():
    # synthetic class 7 = shape 1 (square), colour 1 (green); the rest is not fixed by the class
    assert label_attributes(7, "synthetic") == [1, 1, -1, -1, -1]
    assert label_attributes(7, "cifar10") is None


@pytest.mark.slow
def test_synthetic_sgan_generates_the_conditioned_class(tmp_path):
    """synthetic-sgan, briefly: the encoder recognises the conditioning class in G's images more
    often than chance."""
    from stackgan.data import cub, synthetic
    from stackgan.train import EpochItems, StepBatches

    params = load_params()
    synthetic.generate(tmp_path / "raw", num_images=1200, seed=0)
    view = params["datasets"]["synthetic"]["views"]["sq32"]
    cub.prepare(tmp_path / "raw", tmp_path / "prepared", views={"sq32": view})
    enc_cfg = encoder_config(params, "synthetic")
    enc_cfg.update(steps=300)
    train_encoder(enc_cfg, tmp_path / "prepared", tmp_path / "enc", device="cpu")
    cfg = experiment_config(params, "synthetic-sgan")
    cfg["data"]["prepared_dir"] = str(tmp_path / "prepared")
    cfg["encoder"] = str(tmp_path / "enc" / "encoder.pt")
    cfg["train"].update(independent_steps=150, joint_steps=50)
    torch.manual_seed(0)
    m = build_method(cfg, torch.device("cpu"))
    data = m.make_dataset(PreparedSplit(tmp_path / "prepared", "train"))
    t = cfg["train"]
    steps = StepBatches(len(data), t["batch_size"], 0, 1, t["seed"], 0, 200)
    for step, batch in enumerate(torch.utils.data.DataLoader(EpochItems(data), batch_sampler=steps)):
        torch.manual_seed(seeding.step_torch_seed(t["seed"], step, 0))
        m.train_step(batch, m.draw_noise(seeding.step_noise_generator(t["seed"], step), t["batch_size"]), step)
    k = cfg["num_classes"]
    labels = torch.arange(300) % k
    images = torch.from_numpy(m.eval_generator().sample_images(labels, seed=100)).permute(0, 3, 1, 2)
    x = images.float() / 255 - m.encoder_payload["image_mean"]
    accuracy = (m.nets["E"](x)[1].argmax(1) == labels).float().mean().item()
    assert accuracy > 2 / k, f"conditioning accuracy {accuracy:.3f}, chance {1 / k:.3f}"
