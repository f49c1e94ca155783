"""Training refuses to go on silently wrong: a non-finite loss stops it (last good checkpoint kept,
no model.pt), caption embeddings must match the model's text width, and the DVCLive log holds
each step once, at its true step, also after a kill and resume."""

from pathlib import Path

import pytest
import torch
import yaml

from stackgan import config as C
from stackgan.cli import main as cli_main
from stackgan.data.loader import EpochDataset
from stackgan.errors import UserError
from stackgan.methods.v2 import V2Method
from stackgan.train import train, trim_live_log

REPO = Path(__file__).resolve().parents[1]
RUN = Path("runs/ci/synthetic-v2")


def project(tmp_path, prepared, name, monkeypatch, **experiment):
    """A scratch project (ci profile, unpinned so this process keeps its settings: a narrow
    8-step synthetic-v2 run) and chdir into it."""
    root = tmp_path / name
    (root / "data/prepared/ci").mkdir(parents=True)
    (root / "data/prepared/ci/synthetic").symlink_to(prepared)
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["profile"] = "ci"
    params["profiles"]["ci"]["cpu"] = {"pinned": False}
    params["profiles"]["ci"]["overrides"]["v2"] = {
        "train": {"max_steps": 8, "batch_size": 8, "checkpoint_every": 3, "grid_every": 100, "log_every": 2}}
    params["experiments"]["synthetic-v2"].update(gf_dim=4, df_dim=4, ef_dim=8, z_dim=16, **experiment)
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    monkeypatch.chdir(root)
    return root


def config():
    return C.experiment_config(C.load_params(), "synthetic-v2")


def logged(run_dir):
    """{tsv path: bytes} of the run's DVCLive metric files."""
    metrics = run_dir / RUN / "live/plots/metrics"
    return {p.relative_to(metrics).as_posix(): p.read_bytes() for p in sorted(metrics.rglob("*.tsv"))}


def test_non_finite_loss_stops_with_the_step_and_keeps_the_last_checkpoint(tmp_path, prepared, monkeypatch, capsys):
    root = project(tmp_path, prepared, "nan", monkeypatch)
    real_step = V2Method.train_step

    def diverging(self, batch, noise, step):
        logs = real_step(self, batch, noise, step)
        return {**logs, "loss_D64": float("nan")} if step == 4 else logs

    monkeypatch.setattr(V2Method, "train_step", diverging)
    assert cli_main(["train", "synthetic-v2"]) == 2
    err = capsys.readouterr().err  # the progress bar, closed, then the error on a line of its own
    assert "Traceback" not in err and err.endswith(
        "\nstackgan: error: training synthetic-v2 produced a non-finite loss at step 5 (loss_D64 = nan); the last "
        "good checkpoint (step 3) is kept and no model.pt was written; lower optim.lr_g / optim.lr_d (or turn "
        "train.amp off) or check the prepared data, then train again\n")
    assert torch.load(root / RUN / "checkpoint/state.pt", weights_only=False)["step"] == 3
    assert not (root / RUN / "model.pt").exists()
    assert not (root / RUN / "grids/final.png").exists()
    steps = logged(root)["train/loss_D64.tsv"].decode().split()[2::2]
    assert steps == ["2", "4"]  # nothing logged for the bad step


def test_infinite_loss_before_any_checkpoint(tmp_path, prepared, monkeypatch):
    project(tmp_path, prepared, "inf", monkeypatch)
    real_step = V2Method.train_step
    monkeypatch.setattr(V2Method, "train_step", lambda self, b, n, step: {**real_step(self, b, n, step),
                                                                        "loss_G": float("inf")})
    with pytest.raises(UserError, match=r"non-finite loss at step 1 \(loss_G = inf\); no checkpoint was written "
                                        r"and no model\.pt was written; "):
        train(config(), device_pref="cpu")
    assert not (tmp_path / "inf" / RUN / "checkpoint").exists()


def test_embedding_width_must_match_text_dim(tmp_path, prepared, monkeypatch, capsys):
    root = project(tmp_path, prepared, "width", monkeypatch, text_dim=512)
    assert cli_main(["train", "synthetic-v2"]) == 2
    assert capsys.readouterr().err == (
        f"stackgan: error: {Path('data/prepared/ci/synthetic/train/embeddings.npy')} holds 1024-wide caption "
        "embeddings but synthetic-v2 has text_dim 512; set text_dim: 1024 for it in params.yaml or prepare the "
        "dataset with 512-wide embeddings\n")
    assert not (root / "runs").exists()  # refused before anything was written


def test_resumed_log_has_each_step_once_with_the_uninterrupted_values(tmp_path, prepared, monkeypatch):
    straight = project(tmp_path, prepared, "straight", monkeypatch)
    train(config(), device_pref="cpu")
    reference = logged(straight)
    assert reference["train/loss_G.tsv"].decode().split()[2::2] == ["2", "4", "6", "8"]  # the true steps

    pieces = project(tmp_path, prepared, "pieces", monkeypatch)
    train(config(), device_pref="cpu", stop_after=3)  # checkpoint at 3; logs step 2 only
    ckpt = pieces / RUN / "checkpoint/state.pt"
    at_three = ckpt.read_bytes()
    train(config(), device_pref="cpu", stop_after=3)  # logs 4 and 6, checkpoint at 6
    # As if killed by SIGKILL after logging step 6 but before the checkpoint of step 6 was
    # written, in the middle of appending a row.
    ckpt.write_bytes(at_three)
    with open(pieces / RUN / "live/plots/metrics/train/loss_G.tsv", "ab") as f:
        f.write(b"8\t1.5")
    train(config(), device_pref="cpu")
    assert logged(pieces) == reference
    assert (pieces / RUN / "live/metrics.json").read_bytes() == (straight / RUN / "live/metrics.json").read_bytes()


def test_trim_keeps_whole_rows_up_to_the_step(tmp_path):
    metrics = tmp_path / "live/plots/metrics/train"
    metrics.mkdir(parents=True)
    (metrics / "a.tsv").write_bytes(b"step\ta\n2\t0.5\n4\t0.25\n6\t0.125\n7")
    (metrics / "b.tsv").write_bytes(b"step\tb\n2\t1.0\n")
    (metrics / "c.tsv").write_bytes(b"ste")  # the kill came while DVCLive wrote the header
    trim_live_log(tmp_path / "live", 4)
    assert (metrics / "a.tsv").read_bytes() == b"step\ta\n2\t0.5\n4\t0.25\n"
    assert (metrics / "b.tsv").read_bytes() == b"step\tb\n2\t1.0\n"
    assert not (metrics / "c.tsv").exists()
    assert sorted(p.name for p in metrics.iterdir()) == ["a.tsv", "b.tsv"]  # no temporary left behind


def test_train_verify_names_a_shard_whose_bytes_changed(tmp_path, prepared, monkeypatch, capsys):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(prepared, copy)
    shard = sorted((copy / "train").glob("*.u8"))[0]
    flipped = bytearray(shard.read_bytes())
    flipped[-1] ^= 0xFF
    shard.write_bytes(bytes(flipped))  # the size is right: only --verify's hashes can tell
    root = project(tmp_path, copy, "verify", monkeypatch)
    assert cli_main(["train", "synthetic-v2", "--verify"]) == 2
    err = capsys.readouterr().err
    assert err == (f"stackgan: error: data/prepared/ci/synthetic/train/{shard.name} does not have the sha256 the "
                   "manifest records; the prepared data is damaged: run `stackgan prepare synthetic` again (or "
                   "`dvc repro`)\n")
    assert not (root / RUN).exists()


class CountingTensor(torch.Tensor):
    """A 0-d loss that counts how often it is read as a number (each read is a device sync)."""
    reads = 0

    def __float__(self):
        CountingTensor.reads += 1
        return super().__float__()


def test_losses_are_read_on_log_checkpoint_and_grid_steps_only(tmp_path, prepared, monkeypatch):
    project(tmp_path, prepared, "reads", monkeypatch)
    real_step = V2Method.train_step
    sizes, seen = [], []  # losses per step; reads found at the start of each step

    def tensor_losses(self, batch, noise, step):
        seen.append(CountingTensor.reads)
        logs = real_step(self, batch, noise, step)
        sizes.append(len(logs))
        return {k: torch.as_tensor(v).as_subclass(CountingTensor) for k, v in logs.items()}

    CountingTensor.reads = 0
    monkeypatch.setattr(V2Method, "train_step", tensor_losses)
    train(config(), device_pref="cpu")
    # 8 steps, log every 2, checkpoint every 3: the losses are read after steps 2, 3, 4, 6 and 8,
    # all those of the steps since the previous read at once, never inside a step.
    done = [max(r for r in (0, 2, 3, 4, 6) if r <= i) for i in range(8)]
    assert seen == [sum(sizes[:d]) for d in done]
    assert CountingTensor.reads == sum(sizes)


@pytest.mark.parametrize("channels_last", [False, True], ids=["contiguous", "channels_last"])
def test_inputs_finished_on_the_device_train_the_same_bits(tmp_path, prepared, monkeypatch, channels_last):
    """train.input_on_device (uint8 crops resized where the step runs, stackgan/data/device_resize.py)
    trains the bits of the CPU path, whatever the memory format."""
    finished = []  # input_on_device of each batch the engine finished
    real_finish = EpochDataset.finish_on_device
    monkeypatch.setattr(EpochDataset, "finish_on_device",
                        lambda self, *a: (finished.append(self.input_on_device), real_finish(self, *a))[1])
    own = yaml.safe_load((REPO / "params.yaml").read_text())["experiments"]["synthetic-v2"]["train"]

    def trained(name, **switches):
        project(tmp_path, prepared, name, monkeypatch, train={**own, "channels_last": channels_last, **switches})
        train(config(), device_pref="cpu")
        return torch.load(tmp_path / name / RUN / "checkpoint/state.pt", weights_only=True)["method"]["nets"]

    host, device = trained("host"), trained("device", input_on_device=True)
    assert finished == [False] * 8 + [True] * 8
    assert host.keys() == device.keys()
    for net, weights in host.items():
        for k, v in weights.items():
            assert torch.equal(v, device[net][k]), (net, k)
