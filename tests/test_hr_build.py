"""`stackgan hr build` from tiny trained models (a 2-step StackGAN-v2 and a 2-step v1 Stage-I on
the synthetic fixture): the paper's sampling (captions per class, images per caption), seeded
(same seed, same manifest hash), a folder whose page never names a model, and refusals."""

import json
from collections import Counter
from pathlib import Path

import pytest
import yaml

from stackgan.cli import main as cli_main
from stackgan.data import cub, synthetic

REPO = Path(__file__).resolve().parents[1]
MODELS = ["synthetic-v2", "synthetic-v1-s1"]
STEPS = {"max_steps": 2, "batch_size": 8, "checkpoint_every": 2, "grid_every": 100, "log_every": 1}


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    """A scratch ci-profile project (unpinned, so this process keeps its settings) holding the
    two tiny trained models."""
    root = tmp_path_factory.mktemp("hr")
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    views = params["datasets"]["synthetic"]["views"]
    raw = synthetic.generate(root / "raw", num_images=160, seed=3)
    cub.prepare(raw, root / "data/prepared/ci/synthetic", views={v: views[v] for v in ("short76", "sq38")})
    params["profile"] = "ci"
    params["profiles"]["ci"]["cpu"] = {"pinned": False}
    params["profiles"]["ci"]["overrides"] = {"v1": {"train": STEPS}, "v2": {"train": STEPS}}
    params["experiments"]["synthetic-v2"].update(gf_dim=4, df_dim=4, ef_dim=8, z_dim=16)
    params["experiments"]["synthetic-v1-s1"].update(gf_dim=8, df_dim=4, ef_dim=8, z_dim=16)
    params["experiments"]["synthetic-v2-images-only"] = {**params["experiments"]["synthetic-v2"], "conditional": False}
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)
        for name in MODELS:
            assert cli_main(["train", name, "--device", "cpu"]) == 0
    return root


def build(project, monkeypatch, out, *extra):
    monkeypatch.chdir(project)
    return cli_main(["hr", "build", "--experiments", *MODELS, "--dataset", "synthetic", "--captions-per-class", "3",
                     "--images-per-caption", "2", "--device", "cpu", "--out", str(out), *extra])


def test_study_follows_the_protocol_and_hides_the_models(project, monkeypatch, tmp_path):
    assert build(project, monkeypatch, tmp_path / "a") == 0
    manifest = json.loads((tmp_path / "a/manifest.json").read_text())
    assert [m["experiment"] for m in manifest["models"]] == MODELS
    per_class = Counter(c["class_id"] for c in manifest["captions"])
    assert len(per_class) == 5 and set(per_class.values()) == {3}  # the fixture's 5 test classes
    assert manifest["protocol"] == {"captions_per_class": 3, "captions": 15, "classes": 5, "images_per_caption": 2}
    for caption in manifest["captions"]:
        assert [len(files) for files in caption["images"]] == [2, 2]
    files = sorted(p.relative_to(tmp_path / "a").as_posix() for p in (tmp_path / "a").rglob("*") if p.is_file())
    assert files == sorted([*manifest["files"], "manifest.json"])
    for name in manifest["files"]:  # neither a file's name nor the page's text names a model
        assert not any(m in name for m in (*MODELS, "v1", "v2"))
    page = (tmp_path / "a/index.html").read_text() + (tmp_path / "a/rank.js").read_text()
    assert not any(m in page for m in MODELS)

    assert build(project, monkeypatch, tmp_path / "b") == 0
    again = json.loads((tmp_path / "b/manifest.json").read_text())
    assert again["sha256"] != manifest["sha256"]  # the study's name is part of it
    assert {k: v for k, v in again.items() if k not in ("study", "sha256")} == \
        {k: v for k, v in manifest.items() if k not in ("study", "sha256")}

    assert build(project, monkeypatch, tmp_path / "c" / "a") == 0
    assert json.loads((tmp_path / "c/a/manifest.json").read_text())["sha256"] == manifest["sha256"]
    assert build(project, monkeypatch, tmp_path / "d" / "a", "--seed", "1") == 0
    other = json.loads((tmp_path / "d/a/manifest.json").read_text())
    assert other["files"] != manifest["files"] and other["sha256"] != manifest["sha256"]


def test_refusals_are_one_line(project, monkeypatch, tmp_path, capsys):
    monkeypatch.chdir(project)
    (tmp_path / "full").mkdir()
    (tmp_path / "full/answers.jsonl").write_text("{}\n")
    cases = [
        (["--experiments", "synthetic-v2", "synthetic-sgan", "--dataset", "synthetic"], "not a text-conditional"),
        (["--experiments", "synthetic-v2", "synthetic-v2-images-only", "--dataset", "synthetic"],
         "not a text-conditional"),
        (["--experiments", "synthetic-v2", "--dataset", "synthetic"], "two or more"),
        (["--experiments", "synthetic-v2", "synthetic-v2", "--dataset", "synthetic"], "twice"),
        (["--experiments", "synthetic-v2", "cub-v2", "--dataset", "synthetic"], "different datasets"),
        (["--experiments", *MODELS, "--dataset", "cub"], "not --dataset cub"),
        (["--experiments", *MODELS, "--dataset", "synthetic", "--out", str(tmp_path / "full")], "not empty"),
    ]
    for args, expected in cases:
        capsys.readouterr()
        out = [] if "--out" in args else ["--out", str(tmp_path / "new")]
        assert cli_main(["hr", "build", *args, *out]) == 2
        err = capsys.readouterr().err
        assert expected in err and err.count("\n") == 1, err
    assert (tmp_path / "full/answers.jsonl").read_text() == "{}\n"  # nothing it did not make is touched
    assert not (tmp_path / "new").exists()
