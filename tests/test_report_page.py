"""results/report.md and .html: per profile the tables, the figures the figures stage indexed and
the training curves, linked relative to results/; hostile index files give one-line errors and
nothing they hold becomes markup."""

import json

import pytest

from stackgan.errors import UserError
from stackgan.report import reference_words
from stackgan.report_page import to_html, write_report


def results_tree(root):
    (root / "tables").mkdir(parents=True)
    (root / "tables/ci.md").write_text("# Profile `ci`: NOT a reproduction\n\n| a | b |\n|---|---|\n| 1 | 2 |\n")
    (root / "tables/table5.md").write_text("# StackGAN++ Table 5\n\nrows\n")
    figures = root / "figures/ci/synthetic-v1"
    figures.mkdir(parents=True)
    (figures / "index.json").write_text(json.dumps({
        "figures": {"stages": {"file": "stages.png", "paper": "Fig. 10", "shows": "same noise, two stages"}},
        "skipped": {"baselines": "no baseline experiments"}}))
    curves = root / "curves/ci"
    curves.mkdir(parents=True)
    (curves / "synthetic-v1.json").write_text(json.dumps({
        "num_samples": 400, "seed": 100, "points": [{"step": 15}, {"step": 30}],
        "protocols": {"is400_synthetic-clf": {"variant_of": "is2k_synthetic-clf"}}}))
    return root


def test_each_profile_gathers_its_tables_figures_and_curves(tmp_path):
    root = results_tree(tmp_path / "results")
    md, html = write_report(root, root / "tables")
    text = md.read_text()
    assert text.index("## The `paper` profile") < text.index("## The `ci` profile")  # the paper first
    assert "#### StackGAN++ Table 5" in text.split("## The `ci` profile")[0]  # paper tables under paper
    ci = text.split("## The `ci` profile")[1]
    assert "#### Profile `ci`: NOT a reproduction" in ci and "| 1 | 2 |" in ci
    assert "**stages** (Fig. 10). same noise, two stages" in ci
    assert "![stages](figures/ci/synthetic-v1/stages.png)" in ci and "baselines (no baseline experiments)" in ci
    assert "steps 15, 30; 400 samples each" in ci and "`is400_synthetic-clf` (of `is2k_synthetic-clf`)" in ci
    assert "![synthetic-v1 curves](curves/ci/synthetic-v1.png)" in ci
    page = html.read_text()
    assert '<img src="figures/ci/synthetic-v1/stages.png"' in page and "<table>" in page
    assert write_report(root, root / "tables") and md.read_text() == text  # a pure function of the files


def test_index_text_never_becomes_markup(tmp_path):
    page = to_html("**x** <script>alert(1)</script> [y](javascript:alert(1))\n")
    assert "<script>" not in page and 'href="javascript:' not in page


def test_a_malformed_index_names_the_file_and_the_remedy(tmp_path):
    root = results_tree(tmp_path / "results")
    (root / "figures/ci/synthetic-v1/index.json").write_text("{not json")
    with pytest.raises(UserError, match=r"index.json: unreadable .*stackgan figures synthetic-v1"):
        write_report(root, root / "tables")


def test_the_reference_set_is_said_in_words():
    recorded = {"cache_name": "ref-c246", "num_images": 750, "resized_to": [64, 64], "source": "ReferenceImages",
                "resize_rule": "bilinear, antialiased", "split": "test"}
    assert reference_words(recorded) == "test split, 750 images at 64x64 (bilinear, antialiased)"
    assert reference_words({"num_images": 12}) == "reference folder, 12 images"
