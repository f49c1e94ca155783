"""`evaluate` and the optional rulers: the authors' Inception is scored when its converted weights
are present and skipped, with the steps that fetch them, when they are not."""

import pytest
import torch

from stackgan.evaluate import measurable
from stackgan.metrics import weights


@pytest.fixture
def repo(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # data/weights is relative to the repository root
    return tmp_path


def test_authors_ruler_without_weights_is_skipped_with_the_fetch_steps(repo, capsys):
    kept, skipped = measurable(["is30k_cub-inc", "is30k_cub-ft", "fid30k_test"], repo / "classifiers")
    assert kept == ["is30k_cub-ft", "fid30k_test"]  # a missing stand-in or TF Inception stays an error later
    assert list(skipped) == ["is30k_cub-inc"]
    assert "stackgan fetch stackgan-inception" in skipped["is30k_cub-inc"]
    assert "convert-inception" in skipped["is30k_cub-inc"]
    assert "is30k_cub-inc skipped" in capsys.readouterr().err


def test_authors_ruler_with_converted_weights_is_scored(repo):
    path = repo / "data" / "weights" / "cub-inc.pth"
    path.parent.mkdir(parents=True)
    torch.save({"logits.weight": torch.zeros(51, 2048)}, path)
    kept, skipped = measurable(["is30k_cub-inc", "is30k64_oxford102-inc"], None)
    assert kept == ["is30k_cub-inc"] and list(skipped) == ["is30k64_oxford102-inc"]


def test_a_bad_file_is_not_mistaken_for_a_missing_one(repo):
    folder = repo / "data" / "weights" / "inception-2015-12-05"
    folder.mkdir(parents=True)
    (folder / "weights-inception-2015-12-05-6726825d.pth").write_bytes(b"not the weights")
    with pytest.raises(weights.UserError) as err:
        weights.locate("inception-2015-12-05")
    assert not isinstance(err.value, weights.MissingWeights)
