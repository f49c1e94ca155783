"""`stackgan hr aggregate` on hand-made answers: known average ranks and stds, ties, a rater who
quits early, Kendall's W at known values, malformed answer lines refused by line, and the HR
cells of Table 2 filled by `stackgan report` from the metrics file it writes."""

import json

import pytest
from test_hr_server import fake_study

from stackgan.errors import UserError
from stackgan.hr.aggregate import aggregate, kendall_w
from stackgan.report import load_paper_numbers, write_tables

A, B, C = "exp-alpha", "exp-beta", "exp-gamma"


def line(rater, caption, ranks):
    return json.dumps({"rater": rater, "caption": caption, "presentation": "p", "shown": [A, B, C],
                       "ranks": ranks, "time": "2026-12-02T00:00:00+00:00"})


ANSWERS = [line("ann", "c0000", {A: 1, B: 2, C: 3}), line("ann", "c0001", {A: 1, B: 3, C: 2}),
           line("bob", "c0000", {A: 2, B: 1, C: 3}), line("bob", "c0001", {A: 1.5, B: 1.5, C: 3}),
           line("cat", "c0000", {A: 1, B: 2, C: 3})]  # cat quits after one of the two captions


@pytest.fixture
def study(tmp_path):
    fake_study(tmp_path / "study", n_captions=2)
    return tmp_path / "study"


def test_average_ranks_ties_and_a_rater_who_quits_early(study, tmp_path):
    (study / "answers.jsonl").write_text("\n".join(ANSWERS) + "\n")
    out, record = aggregate(study, tmp_path / "hr.json")
    m = record["metrics"]
    assert m[f"hr_{A}"]["value"] == pytest.approx(1.3) and m[f"hr_{A}"]["std"] == pytest.approx(0.4)
    assert m[f"hr_{B}"]["value"] == pytest.approx(1.9) and m[f"hr_{C}"]["value"] == pytest.approx(2.8)
    # per-rater mean ranks: ann (1, 2.5, 2.5), bob (2, 1, 3), cat (1, 2, 3): S = 10.5, ties 6
    assert m["kendall-w"]["value"] == pytest.approx(12 * 10.5 / (9 * 24 - 3 * 6))
    study_info = record["human_study"]
    assert (study_info["raters"], study_info["answers"], study_info["captions_ranked"]) == (3, 5, 2)
    assert study_info["raters_who_ranked_every_caption"] == 2
    assert study_info["answers_per_rater"] == {"min": 1, "max": 2} and study_info["images_per_caption"] == 2
    assert record["protocols"][f"hr_{A}"]["ruler"].startswith("human rank, study `study`: 3 raters, 2 captions, "
                                                            "2 images per caption, Kendall's W 0.64")
    assert json.loads(out.read_text()) == record


def test_kendall_w_known_values():
    assert kendall_w([[1, 2, 3]] * 4) == pytest.approx(1.0)
    assert kendall_w([[1, 2, 3], [3, 2, 1]]) == pytest.approx(0.0)
    assert kendall_w([[1, 2, 3], [1, 3, 2], [2, 1, 3]]) == pytest.approx(96 / 216)
    assert kendall_w([[1, 2.5, 2.5], [1, 2.5, 2.5]]) == pytest.approx(1.0)  # tie-corrected
    assert kendall_w([[1, 2, 3]]) is None  # one rater: no agreement to measure
    assert kendall_w([[2, 2, 2], [2, 2, 2]]) is None  # everything tied


@pytest.mark.parametrize("bad, why", [
    ("{not json", "is not JSON"),
    (json.dumps({"rater": "ann"}), "needs exactly the fields"),
    (line("ann", "c0000", {A: 1, B: 2, C: 4}), "ranks must"),
    (line("ann", "c0000", {A: 1, B: 1, C: 1}), "ranks must"),
    (line("ann", "c0000", {A: 1, B: 2}), "ranks must"),
    (line("ann", "c0009", {A: 1, B: 2, C: 3}), "not in the study"),
    (line("../ann", "c0000", {A: 1, B: 2, C: 3}), "rater must"),
    (ANSWERS[0], "repeats rater 'ann'"),
])
def test_malformed_answer_lines_are_refused_by_line(study, tmp_path, bad, why):
    (study / "answers.jsonl").write_text("\n".join([*ANSWERS[:2], bad]) + "\n")
    with pytest.raises(UserError, match=f"answers.jsonl line 3: .*{why}"):
        aggregate(study, tmp_path / "hr.json")
    assert not (tmp_path / "hr.json").exists()


def test_no_answers_is_an_error(study, tmp_path):
    with pytest.raises(UserError, match="no answers yet"):
        aggregate(study, tmp_path / "hr.json")


def test_report_places_each_models_hr_in_its_row(tmp_path):
    study = tmp_path / "cub-study"
    fake_study(study, experiments=["cub-v1", "cub-v2", "gan-x"], n_captions=2, profile="paper")
    ranks = [{"cub-v1": 1, "cub-v2": 2, "gan-x": 3}, {"cub-v1": 2, "cub-v2": 1, "gan-x": 3}]
    answers = [{"rater": r, "caption": c, "presentation": "p", "shown": ["cub-v1", "cub-v2", "gan-x"],
                "ranks": ranks[i], "time": "t"} for i, r in enumerate(["ann", "bob"]) for c in ("c0000", "c0001")]
    (study / "answers.jsonl").write_text("".join(json.dumps(a) + "\n" for a in answers))
    aggregate(study, tmp_path / "metrics/paper/hr-cub.json")
    write_tables(tmp_path / "metrics", tmp_path / "tables")
    table2 = (tmp_path / "tables/table2.md").read_text()
    rows = [[c.strip() for c in r.strip("|").split("|")] for r in table2.splitlines() if r.startswith("| cub ")]
    cells = next(r for r in rows if r[3:5] == ["hr", "cub-v1"])
    paper = float(load_paper_numbers().query("table == '2' and experiment == 'cub-v1' and metric == 'hr'")["value"]
                  .iloc[0])
    assert cells[7] == "1.50 ± 0.50" and cells[8] == f"{1.5 - paper:+.2f}" and cells[9] == "not reproduced"
    assert "2 raters, 2 captions, 2 images per caption" in cells[10]
    table3 = (tmp_path / "tables/table3.md").read_text()
    assert "| cub-v2 " in table3 and "1.50 ± 0.50" in table3
    assert "gan-x" not in table2  # a model no paper row asks for stays out of the paper tables
    assert "Measured by `stackgan hr`" in table2
