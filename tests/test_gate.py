"""The regression gate against a committed baseline, in a scratch git repository."""

import json
import subprocess

import pytest

from stackgan.errors import UserError
from stackgan.gate import compare, tolerance_of

TOL = {"is": {"abs": 0.15, "rel": 0.05}, "fid": {"rel": 0.10}, "capacc": {"abs": 0.05}, "default": {"rel": 0.05}}


def metrics(**values):
    return {"experiment": "x", "profile": "ci", "metrics": {k: {"value": v, "std": None} for k, v in values.items()}}


@pytest.fixture
def repo(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "results/metrics/ci/synthetic-v2.json"
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps(metrics(**{"is2k_synthetic-clf": 3.0, "fid2k_synthetic-clf": 100.0,
                                          "capacc_synthetic": 0.5})))
    for cmd in ("git init -q", "git config user.email t@example.invalid", "git config user.name t",
                "git add -A", "git commit -qm base"):
        subprocess.run(cmd, shell=True, check=True, cwd=tmp_path)
    return path


def test_tolerance_rules_by_metric_kind():
    assert tolerance_of("is30k_cub-ft", TOL) == (0.15, 0.05)
    assert tolerance_of("is30k64_cub-ft", TOL) == (0.15, 0.05)
    assert tolerance_of("fid2k_synthetic-clf", TOL) == (0.0, 0.10)
    assert tolerance_of("capacc_synthetic", TOL) == (0.05, 0.0)
    assert tolerance_of("msssim", TOL) == (0.0, 0.05)


def test_within_tolerance_passes_and_prints_every_metric(repo):
    repo.write_text(json.dumps(metrics(**{"is2k_synthetic-clf": 3.1, "fid2k_synthetic-clf": 109.0,
                                          "capacc_synthetic": 0.46})))
    rows, ok, _ = compare("results/metrics/ci", "HEAD", TOL)
    assert ok and len(rows) == 3 and {r[-1] for r in rows} == {"ok"}


@pytest.mark.parametrize("key,value", [("is2k_synthetic-clf", 3.2), ("fid2k_synthetic-clf", 111.0),
                                       ("capacc_synthetic", 0.44)])
def test_a_metric_past_its_tolerance_fails(repo, key, value):
    current = {"is2k_synthetic-clf": 3.0, "fid2k_synthetic-clf": 100.0, "capacc_synthetic": 0.5, key: value}
    repo.write_text(json.dumps(metrics(**current)))
    rows, ok, _ = compare("results/metrics/ci", "HEAD", TOL)
    assert not ok and [r[1] for r in rows if r[-1] == "MOVED"] == [key]


def test_missing_metric_or_uncommitted_file_fails(repo):
    repo.write_text(json.dumps(metrics(**{"is2k_synthetic-clf": 3.0, "fid2k_synthetic-clf": 100.0})))
    assert not compare("results/metrics/ci", "HEAD", TOL)[1]
    (repo.parent / "new.json").write_text(json.dumps(metrics(**{"is2k_synthetic-clf": 3.0})))
    rows, ok, _ = compare("results/metrics/ci", "HEAD", TOL)
    assert not ok and any("NEW" in r[-1] for r in rows)


def test_no_metrics_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(UserError, match="run the ci profile"):
        compare("results/metrics/ci", "HEAD", TOL)
