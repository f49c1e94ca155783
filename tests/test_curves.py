"""Training curves: train.eval_every's snapshots are what model.pt would be at that step, a resumed
run rewrites only its own later snapshots, and `stackgan curves` turns snapshots and the DVCLive
log into one TSV per series (DVC plots) at the true steps."""

from pathlib import Path

import pytest
import torch
import yaml

from stackgan import checkpoint
from stackgan import config as C
from stackgan import metric_names
from stackgan.curves import curves
from stackgan.errors import UserError
from stackgan.metrics.refstats import compute_refstats_for
from stackgan.metrics.synthetic_classifier import train_synthetic_classifier
from stackgan.train import drop_snapshots_after, train

REPO = Path(__file__).resolve().parents[1]
RUN = Path("runs/ci/synthetic-v2")


def project(tmp_path, prepared, monkeypatch, max_steps=8, eval_every=3):
    """A scratch ci project with a narrow synthetic-v2 that snapshots every 3 steps; chdir into it."""
    root = tmp_path / f"run{max_steps}-{eval_every}"
    (root / "data/prepared/ci").mkdir(parents=True)
    (root / "data/prepared/ci/synthetic").symlink_to(prepared)
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["profile"] = "ci"
    params["run"]["evaluate"] = ["synthetic-v2"]
    params["profiles"]["ci"]["cpu"] = {"pinned": False}
    params["profiles"]["ci"]["overrides"]["v2"] = {
        "train": {"max_steps": max_steps, "batch_size": 8, "checkpoint_every": 4, "grid_every": 100, "log_every": 2,
                  "eval_every": eval_every, "eval_samples": 40}}
    params["experiments"]["synthetic-v2"].update(gf_dim=4, df_dim=4, ef_dim=8, z_dim=16)
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    monkeypatch.chdir(root)
    return root


def config():
    return C.experiment_config(C.load_params(), "synthetic-v2")


def generator_state(path):
    return checkpoint.load_model(path, "")["generator"]


def test_small_variant_keeps_ruler_reference_and_resize():
    assert metric_names.with_count("is30k_cub-ft", 5000) == "is5k_cub-ft"
    assert metric_names.with_count("is30k64_cub-ft", 5000) == "is5k64_cub-ft"
    assert metric_names.with_count("fid2k_synthetic-clf", 500) == "fid500_synthetic-clf"
    with pytest.raises(ValueError, match="multiple of 1000"):
        metric_names.with_count("fid30k64_test", 500)


def test_snapshots_are_model_pt_at_their_step_and_curves_follow_them(tmp_path, prepared, monkeypatch):
    short = project(tmp_path, prepared, monkeypatch, max_steps=3)
    train(config(), device_pref="cpu")
    at_three = generator_state(short / RUN / "model.pt")
    plain = project(tmp_path, prepared, monkeypatch, eval_every=None)
    train(config(), device_pref="cpu")
    without = generator_state(plain / RUN / "model.pt")
    assert not any((plain / RUN / "snapshots").iterdir())  # the DVC output exists, empty

    root = project(tmp_path, prepared, monkeypatch)
    train(config(), device_pref="cpu")
    snapshots = sorted(p.name for p in (root / RUN / "snapshots").iterdir())
    assert snapshots == ["step0000003.pt", "step0000006.pt"]  # step 8 is model.pt itself
    snap = generator_state(root / RUN / "snapshots/step0000003.pt")
    assert snap.keys() == at_three.keys() and all(torch.equal(snap[k], at_three[k]) for k in snap)
    final = generator_state(root / RUN / "model.pt")
    assert all(torch.equal(final[k], without[k]) for k in final)  # snapshots change no trained bit

    params = C.load_params()
    ds = C.dataset_config(params, "synthetic", "ci")
    clf = {**params["classifiers"]["synthetic"], "steps": 3}
    train_synthetic_classifier(ds, clf, "runs/ci/classifiers/synthetic")
    compute_refstats_for(params, "synthetic", "ci", "runs/ci/refstats/synthetic", device="cpu")
    record = curves(config(), device="cpu")
    assert [p["step"] for p in record["points"]] == [3, 6, 8]
    assert set(record["protocols"]) == {"is40_synthetic-clf", "fid40_synthetic-clf"}
    assert record["protocols"]["fid40_synthetic-clf"]["variant_of"] == "fid2k_synthetic-clf"
    out = root / "results/curves/ci"
    rows = (out / "scores/synthetic-v2/fid40_synthetic-clf.tsv").read_text().splitlines()
    assert rows[0] == "step\tfid40_synthetic-clf" and [r.split("\t")[0] for r in rows[1:]] == ["3", "6", "8"]
    assert len({r.split("\t")[1] for r in rows[1:]}) == 3  # three generators, three values
    live = root / RUN / "live/plots/metrics/train"
    for tsv in live.glob("*.tsv"):
        assert (out / "losses/synthetic-v2" / tsv.name).read_bytes() == tsv.read_bytes()
    assert (out / "synthetic-v2.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert sorted(p.name for p in out.iterdir()) == ["losses", "scores", "synthetic-v2.json", "synthetic-v2.png"]


def test_a_resumed_run_drops_only_its_own_later_snapshots(tmp_path):
    folder = tmp_path / "snapshots"
    folder.mkdir()
    for name in ("step0000003.pt", "step0000006.pt", "step6.pt", "notes.pt", "step0000009.txt"):
        (folder / name).write_bytes(b"x")
    drop_snapshots_after(folder, 3)
    assert sorted(p.name for p in folder.iterdir()) == ["notes.pt", "step0000003.pt", "step0000009.txt", "step6.pt"]


def test_curves_without_a_trained_model_names_the_command(tmp_path, prepared, monkeypatch):
    project(tmp_path, prepared, monkeypatch)
    with pytest.raises(UserError, match="stackgan train synthetic-v2"):
        curves(config(), device="cpu")
