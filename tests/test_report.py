import csv
import json
from pathlib import Path

import pytest

from stackgan.errors import UserError
from stackgan.report import PAPER_NUMBERS, write_tables

# The experiment names of harness.md "Names", plus the two "real data" pseudo-experiments
# the report maps the papers' real-image rows to.
HARNESS_EXPERIMENTS = {
    "cub-v1-s1-64-noca", "cub-v1-s1-64", "cub-v1-s1-256-noca", "cub-v1-s1-256",
    "cub-v1-128-once", "cub-v1-128-noca", "cub-v1-128", "cub-v1-once", "cub-v1-noca", "cub-v1",
    "cub-v2", "cub-v2-nojcu", "cub-v2-g3", "cub-v2-3g3", "cub-v2-all256",
    *(f"{ds}-{m}" for ds in ("cub", "oxford102", "coco", "lsun-bedroom", "lsun-church",
                              "imagenet-dog", "imagenet-cat") for m in ("v1", "v2")),
    "imagenet-dog-v2-nocolor",
    "cifar10-dcgan-adv", "cifar10-dcgan-adv-ent", "cifar10-dcgan-adv-cond",
    "cifar10-dcgan-adv-cond-ent", "cifar10-sgan-nojoint", "cifar10-sgan", "mnist-sgan", "svhn-sgan",
}
PSEUDO_EXPERIMENTS = {"cifar10-real", "cub-real"}
PAPER_FILES = ["table2.md", "table3.md", "table4.md", "table5.md", "sgan.md", "text.md"]


def paper_rows():
    with open(PAPER_NUMBERS, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def write_metrics(root, profile, experiment, metrics, protocols=None):
    path = root / profile / f"{experiment}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    record = {"experiment": experiment, "profile": profile, "checkpoint_step": 600,
              "metrics": metrics, "protocols": protocols or {}}
    path.write_text(json.dumps(record))
    return path


def row_of(markdown_text, experiment, protocol):
    """The cells of the table row for (experiment, protocol)."""
    for line in markdown_text.splitlines():
        cells = [c.strip() for c in line.strip("|").split("|")]
        if len(cells) > 5 and cells[4] == experiment and cells[5] == protocol:
            return cells
    raise AssertionError(f"no row for {experiment} {protocol}")


# ------------------------------------------------------------ paper_numbers.csv


def test_paper_numbers_columns_and_counts():
    rows = paper_rows()
    assert list(rows[0]) == ["source", "table", "dataset", "model", "variant", "metric", "value",
                             "std", "note", "experiment", "protocol"]
    counts = {}
    for row in rows:
        counts[(row["source"], row["table"])] = counts.get((row["source"], row["table"]), 0) + 1
    assert counts == {("stackgan++", "1"): 10, ("stackgan++", "2"): 35, ("stackgan++", "3"): 42,
                      ("stackgan++", "4"): 10, ("stackgan++", "5"): 5, ("stackgan++", "text"): 5,
                      ("sgan", "is"): 17, ("sgan", "turing"): 3}


def test_paper_numbers_every_row_has_a_number_and_a_protocol():
    for row in paper_rows():
        float(row["value"])
        if row["std"]:
            assert float(row["std"]) >= 0
        assert row["protocol"], row


def test_paper_numbers_experiments_are_harness_names():
    rows = paper_rows()
    used = {row["experiment"] for row in rows} - {""}
    assert used <= HARNESS_EXPERIMENTS | PSEUDO_EXPERIMENTS
    # every table row the harness defines an experiment for is mapped
    for table, expected in (("4", 10), ("5", 5)):
        assert len({r["experiment"] for r in rows if r["table"] == table} - {""}) == expected
    table3 = {r["experiment"] for r in rows if r["table"] == "3"}
    assert len(table3) == 14
    sgan = {r["experiment"] for r in rows if r["table"] == "is"} - {""}
    assert sgan == {"cifar10-dcgan-adv", "cifar10-dcgan-adv-ent", "cifar10-dcgan-adv-cond",
                    "cifar10-dcgan-adv-cond-ent", "cifar10-sgan-nojoint", "cifar10-sgan",
                    "cifar10-real"}


def test_paper_numbers_spot_values():
    by_key = {(r["table"], r["experiment"], r["protocol"]): r for r in paper_rows()}
    assert by_key[("2", "cub-v1", "is30k64_cub-inc")]["value"] == "3.02"
    assert by_key[("2", "coco-v1", "fid30k_test")]["value"] == "74.05"
    assert by_key[("4", "cub-v1-s1-256-noca", "is30k_cub-inc")]["std"] == "0.00"
    assert by_key[("5", "cub-v2-nojcu", "is30k_cub-inc")]["value"] == "3.77"
    assert by_key[("3", "oxford102-v2", "is30k_oxford102-inc")]["value"] == "3.26"
    assert by_key[("3", "lsun-church-v2", "is30k_imagenet")]["value"] == "2.38"
    assert by_key[("is", "cifar10-real", "is50k_imagenet")]["value"] == "11.24"
    gan_int_cls = [r for r in paper_rows() if r["model"] == "gan-int-cls"]
    assert gan_int_cls and all(r["experiment"] == "" for r in gan_int_cls)


# ------------------------------------------------------------ tables


def test_no_metrics_gives_all_not_run(tmp_path):
    written = write_tables(tmp_path / "missing", tmp_path / "tables")
    assert [p.name for p in written] == PAPER_FILES
    table4 = (tmp_path / "tables" / "table4.md").read_text()
    assert table4.count("| not run") == 10
    for name in PAPER_FILES:
        text = (tmp_path / "tables" / name).read_text()
        assert "generated by `stackgan report`" in text.lower()
        assert "within" not in text.split("| dataset")[1]  # no verdict other than not run
    table2 = (tmp_path / "tables" / "table2.md").read_text()
    expected = ["3.70 ± 0.04", "—", "—", "not run"]
    assert row_of(table2, "cub-v1", "is30k_cub-inc")[6:11] == expected + ["—"]
    assert table2.count("reference (other paper)") == 20
    assert "30 users" in table2  # the paper's HR protocol is written down


def test_verdicts_from_paper_profile(tmp_path):
    metrics = tmp_path / "metrics"
    write_metrics(metrics, "paper", "cub-v1", {
        # paper 3.70 ± 0.04 with the authors' ruler: delta +0.03 -> within std
        "is30k_cub-inc": {"value": 3.73, "std": 0.02},
        "is30k_cub-ft": {"value": 3.10, "std": 0.02},  # the stand-in is not used when the ruler exists
        # paper 3.02 ± 0.03: delta -0.12 = 4.0% of 3.02 -> within the 5% IS tolerance
        "is30k64_cub-ft": {"value": 2.90, "std": 0.05},
        # paper 51.89, no std: delta +6.11 = 11.8% > 10% -> not reproduced
        "fid30k_test": {"value": 58.0, "std": None},
        # paper 35.11: delta -3.11 = 8.9% -> within the 10% FID tolerance
        "fid30k64_test": {"value": 32.0, "std": None},
    }, protocols={"is30k_cub-inc": {"metric": "is", "num_samples": 29330, "splits": 10,
                                    "resize": None, "extractor": "inception-v3-slim",
                                    "weights_sha256": "feedc0ffee1234567890", "seed": 100,
                                    "ruler": "the authors' ruler as recorded"}})
    write_tables(metrics, tmp_path / "tables")
    table2 = (tmp_path / "tables" / "table2.md").read_text()
    assert row_of(table2, "cub-v1", "is30k_cub-inc")[7:11] == ["3.73 ± 0.02", "+0.03", "within paper std",
                                                               "the authors' ruler as recorded"]
    # IS*: only the stand-in ruler was measured, and the cell says so
    stand_in = row_of(table2, "cub-v1", "is30k64_cub-inc")
    assert stand_in[7:10] == ["2.90 ± 0.05", "-0.12", "within tolerance (stand-in ruler)"]
    assert stand_in[10].startswith("stand-in `is30k64_cub-ft`: ")
    assert row_of(table2, "cub-v1", "fid30k_test")[7:10] == ["58.00", "+6.11", "not reproduced"]
    assert row_of(table2, "cub-v1", "fid30k64_test")[7:10] == ["32.00", "-3.11",
                                                               "within tolerance"]
    assert row_of(table2, "cub-v1", "hr")[7:10] == ["—", "—", "not run"]
    assert row_of(table2, "oxford102-v1", "fid30k_test")[9] == "not run"
    assert "feedc0ffee12" in table2 and "29330" in table2  # recorded protocol in the header
    # the same experiment fills Table 3 and Table 4 too
    table4 = (tmp_path / "tables" / "table4.md").read_text()
    assert row_of(table4, "cub-v1", "is30k_cub-inc")[9] == "within paper std"
    # the stand-in number the authors' ruler replaced is listed, not hidden
    text = (tmp_path / "tables" / "text.md").read_text()
    assert "| cub-v1       | is30k_cub-ft" in text and "is30k64_cub-ft" not in text


def test_embedded_profile_never_fills_paper_columns(tmp_path):
    metrics = tmp_path / "metrics"
    write_metrics(metrics, "embedded", "cub-v1", {"is30k_cub-ft": {"value": 3.70, "std": 0.04}})
    write_metrics(metrics, "embedded", "synthetic-v2", {
        "is2k_synthetic-clf": {"value": 2.3147, "std": 0.05},
        "capacc_synthetic": {"value": 0.61, "std": None}},
        protocols={"is2k_synthetic-clf": {"num_samples": 2000, "splits": 10,
                                          "extractor": "synthetic-clf"}})
    written = write_tables(metrics, tmp_path / "tables")
    assert [p.name for p in written] == PAPER_FILES + ["embedded.md"]
    table2 = (tmp_path / "tables" / "table2.md").read_text()
    assert row_of(table2, "cub-v1", "is30k_cub-inc")[9] == "not run"
    embedded = (tmp_path / "tables" / "embedded.md").read_text()
    assert "NOT a reproduction: synthetic/CPU profile, not comparable with the paper" in embedded
    assert "| 2.31 ± 0.05" in embedded and "| 0.6100" in embedded
    assert "synthetic-clf" in embedded and "| cub-v1" in embedded
    for name in PAPER_FILES:
        assert "synthetic-v2" not in (tmp_path / "tables" / name).read_text()


def test_rerun_is_byte_identical(tmp_path):
    metrics = tmp_path / "metrics"
    write_metrics(metrics, "paper", "cifar10-sgan", {
        "is50k_imagenet": {"value": 8.0, "std": 0.1},  # paper 8.59 ± 0.12; 5% = 0.43 < 0.59
        "fid50k_train": {"value": 30.1, "std": None}})
    write_metrics(metrics, "ci", "synthetic-sgan", {"is2k_synthetic-clf": {"value": 1.5,
                                                                           "std": 0.01}})
    first = {p.name: p.read_bytes() for p in write_tables(metrics, tmp_path / "a")}
    second = {p.name: p.read_bytes() for p in write_tables(metrics, tmp_path / "b")}
    assert first == second and set(first) == set(PAPER_FILES) | {"ci.md"}
    sgan = first["sgan.md"].decode()
    assert row_of(sgan, "cifar10-sgan", "is50k_imagenet")[7:10] == ["8.00 ± 0.10", "-0.59",
                                                                    "not reproduced"]
    assert "fid50k_train" in first["text.md"].decode()  # no evaluated number goes unseen


def test_malformed_json_names_the_file(tmp_path):
    bad = tmp_path / "metrics" / "paper" / "cub-v2.json"
    bad.parent.mkdir(parents=True)
    bad.write_text('{"experiment": "cub-v2", "metrics": {')
    with pytest.raises(UserError, match="cub-v2.json"):
        write_tables(tmp_path / "metrics", tmp_path / "tables")
    bad.write_text(json.dumps({"experiment": "cub-v2", "metrics": {"is30k_cub-ft": 4.0}}))
    with pytest.raises(UserError, match="cub-v2.json.*is30k_cub-ft"):
        write_tables(tmp_path / "metrics", tmp_path / "tables")
    bad.write_text(json.dumps({"experiment": "cub-v1", "metrics": {}}))
    with pytest.raises(UserError, match="cub-v2.json"):
        write_tables(tmp_path / "metrics", tmp_path / "tables")


def test_committed_tables_regenerate_byte_for_byte(tmp_path):
    repo = Path(__file__).resolve().parents[1]
    written = write_tables(repo / "results/metrics", tmp_path)
    committed = sorted((repo / "results/tables").glob("*.md"))
    assert sorted(p.name for p in written) == [p.name for p in committed]
    for path in committed:
        assert (tmp_path / path.name).read_bytes() == path.read_bytes(), path.name
