"""The real pipeline, end to end: `dvc repro` of the `ci` profile in a scratch git repository.

Checks the walking skeleton's contract: every stage runs and leaves metrics, tables and grids;
a second `dvc repro` does nothing; changing one experiment's parameter re-runs only that
experiment's stages, and `dvc metrics diff` shows the change.
"""

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.pipeline

REPO = Path(__file__).resolve().parents[1]


def run(cmd, cwd):
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
               DVC_NO_ANALYTICS="1")
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, shell=isinstance(cmd, str))
    assert proc.returncode == 0, f"{cmd} failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
    return proc.stdout


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory):
    work = tmp_path_factory.mktemp("pipeline")
    shutil.copytree(REPO / "stackgan", work / "stackgan", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("dvc.yaml", "params.yaml", ".gitignore"):
        shutil.copy(REPO / name, work / name)
    params = yaml.safe_load((work / "params.yaml").read_text())
    params["profile"] = "ci"
    (work / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    run("git init -q && git config user.email ci@example.invalid && git config user.name ci", work)
    run("dvc init -q && dvc config core.analytics false", work)
    run("git add -A && git commit -qm base", work)
    first = run(["dvc", "repro"], work)
    run("git add -A && git commit -qm 'ci run'", work)
    return work, params, first


def test_every_stage_leaves_its_outputs(pipeline):
    work, params, _ = pipeline
    for name in params["run"]["evaluate"]:
        record = json.loads((work / f"results/metrics/ci/{name}.json").read_text())["reproducibility"]
        assert record["train"]["pinned"] and record["evaluate"] == record["train"]  # the pins reached every stage
        assert (work / f"runs/ci/{name}/sample_grid.png").is_file()
        assert any((work / f"runs/ci/{name}/grids").glob("*.png"))
    tables = {p.name for p in (work / "results/tables").glob("*.md")}
    assert {"table4.md", "table5.md", "ci.md"} <= tables
    assert "NOT a reproduction" in (work / "results/tables/ci.md").read_text()


def test_dvc_plots_render_every_experiments_curves(pipeline, tmp_path):
    work, params, _ = pipeline
    run(["dvc", "plots", "show", "-o", str(tmp_path / "plots")], work)
    html = (tmp_path / "plots/index.html").read_text()
    for name in params["run"]["evaluate"]:
        record = json.loads((work / f"results/curves/ci/{name}.json").read_text())
        assert len(record["points"]) >= 2, record["points"]  # eval_every's snapshots and model.pt
        for series in record["losses"]:
            assert f"results/curves/ci/losses/{name}/{series}.tsv" in html
        for key in record["protocols"]:
            assert f"results/curves/ci/scores/{name}/{key}.tsv" in html
    report = (work / "results/report.md").read_text()
    assert "## The `ci` profile" in report and "curves/ci/" in report
    assert (work / "results/report.html").read_text().startswith("<!DOCTYPE html>")


def test_second_repro_does_nothing(pipeline):
    work, _, _ = pipeline
    out = run(["dvc", "repro"], work)
    assert "Running stage" not in out


def test_changing_one_experiment_reruns_only_it(pipeline):
    work, params, _ = pipeline
    target = params["run"]["train"][0]
    params["experiments"][target]["loss"] = {**params["experiments"][target].get("loss", {}), "kl": 1.0}
    (work / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    status = run(["dvc", "status"], work)
    changed = {line.strip().rstrip(":") for line in status.splitlines() if line and not line.startswith("\t")}
    changed = {c for c in changed if "@" in c or c == "report"}
    # this experiment's stages, plus the dataset's reference statistics (keyed by content: a no-op)
    assert f"train@{target}" in changed, status
    own = {f"{stage}@{target}" for stage in ("train", "sample", "evaluate", "curves", "figures")}
    assert changed <= own | {"refstats@synthetic"}, status
    out = run(["dvc", "repro"], work)
    ran = set(re.findall(r"Running stage '([^']+)'", out))
    assert f"train@{target}" in ran
    assert ran <= own | {"refstats@synthetic", "report"}, ran
    diff = run(["dvc", "metrics", "diff", "HEAD"], work)
    assert f"results/metrics/ci/{target}.json" in diff
