"""Prepared data as a trust boundary: prepare (and synthetic.generate) replace only folders they
wrote, clean what killed runs left, and a damaged prepared folder is named in one line on load."""

import io
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from stackgan.data import cub, labelled, staging, synthetic
from stackgan.data.encoded_shards import EncodedShardReader, EncodedShardWriter, encoded_paths
from stackgan.data.loader import TextImageDataset
from stackgan.data.prepared import PreparedSplit, check_prepared, verify_prepared
from stackgan.data.views import check_views
from stackgan.errors import UserError
from stackgan.prepare import prepare

VIEW = "short20"
DS = {"name": "synthetic", "layout": "cub", "views": {VIEW: {"mode": "short", "size": 20, "resample": "bilinear"}}}
REFUSED = ("is not empty and was not written by `stackgan prepare`; refusing to replace it: move it away or "
           "pass another --out")
DAMAGED = "; the prepared data is damaged: run `stackgan prepare synthetic` again (or `dvc repro`)"


@pytest.fixture(scope="module")
def raw(tmp_path_factory):
    return synthetic.generate(tmp_path_factory.mktemp("integrity") / "raw", num_images=20, seed=0)


@pytest.fixture
def out(raw, tmp_path):
    return prepare(DS, raw, tmp_path / "prep", limit=3)


def tree(root: Path) -> dict:
    """Every entry under root (links not followed) with its bytes, or None for folders."""
    return {p.relative_to(root).as_posix(): None if p.is_dir() and not p.is_symlink() else p.read_bytes()
            for p in sorted(root.rglob("*"))}


def one_line(err) -> str:
    message = str(err.value)
    assert "\n" not in message
    return message


def make_legacy(folder: Path):
    """What prepare wrote before markers and sizes existed."""
    manifest = json.loads((folder / "manifest.json").read_text())
    del manifest["sizes"]
    (folder / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    (folder / staging.MARKER).unlink()


def dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


# ---------------------------------------------------------------- what prepare may replace

def test_foreign_folder_holding_manifest_json_is_refused_unchanged(raw, out, tmp_path):
    foreign = tmp_path / "thesis"
    foreign.mkdir()
    (foreign / "manifest.json").write_bytes((out / "manifest.json").read_bytes())  # even our own manifest
    (foreign / "chapter1.tex").write_text("years of work")
    (foreign / "figures").mkdir()
    (foreign / "figures" / "plot.png").write_bytes(b"\x89PNG")
    before, beside = tree(foreign), sorted(p.name for p in tmp_path.iterdir())
    pixels = (np.zeros((2, 4, 4, 3), dtype=np.uint8), np.array([0, 1]))
    for run in (lambda: prepare(DS, raw, foreign, limit=3), lambda: cub.prepare(raw, foreign, DS["views"], limit=3),
                lambda: labelled.write_prepared(foreign, "mnist", {"train": pixels}, [])):
        with pytest.raises(UserError) as err:
            run()
        assert one_line(err) == f"{foreign} {REFUSED}"
        assert tree(foreign) == before
        assert sorted(p.name for p in tmp_path.iterdir()) == beside  # no staging folder left either


def test_a_file_or_link_in_the_way_is_refused(raw, out, tmp_path):
    (tmp_path / "file").write_text("notes")
    (tmp_path / "link").symlink_to(out)
    for name in ("file", "link"):
        with pytest.raises(UserError, match=r"exists and is not a folder; refusing to replace it"):
            prepare(DS, raw, tmp_path / name, limit=3)
    assert (tmp_path / "file").read_text() == "notes" and (tmp_path / "link").resolve() == out.resolve()
    assert (out / "manifest.json").is_file()


def test_own_folder_and_empty_folder_are_replaced(raw, out, tmp_path):
    (out / "stale.txt").write_text("left by hand")
    prepare(DS, raw, out, limit=2)
    assert not (out / "stale.txt").exists()
    assert json.loads((out / "manifest.json").read_text())["limit"] == 2
    (tmp_path / "empty").mkdir()
    prepare(DS, raw, tmp_path / "empty", limit=2)
    assert tree(tmp_path / "empty") == tree(out)  # same input, same bytes, marker included
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty", "prep"]


def test_marker_is_small_fixed_and_outside_the_files_list(out):
    assert (out / staging.MARKER).read_text() == '{"dataset": "synthetic", "written_by": "stackgan prepare"}\n'
    manifest = json.loads((out / "manifest.json").read_text())
    data = staging.listing(out) - {"manifest.json", staging.MARKER}
    assert set(manifest["files"]) == set(manifest["sizes"]) == data
    assert all(manifest["sizes"][rel] == (out / rel).stat().st_size for rel in data)


def test_folder_of_an_earlier_version_is_recognised_only_exactly(raw, out):
    make_legacy(out)
    prepare(DS, raw, out, limit=2)  # manifest of the old schema, nothing else: replaced
    assert (out / staging.MARKER).is_file()
    make_legacy(out)
    (out / "train" / "my_notes.txt").write_text("not listed in the manifest")
    before = tree(out)
    with pytest.raises(UserError) as err:
        prepare(DS, raw, out, limit=3)
    assert one_line(err) == f"{out} {REFUSED}"
    assert tree(out) == before
    (out / "train" / "my_notes.txt").unlink()
    manifest = json.loads((out / "manifest.json").read_text())
    (out / "manifest.json").write_text(json.dumps({**manifest, "owner": "someone else"}))
    with pytest.raises(UserError, match="was not written by"):  # a key our manifests never had
        prepare(DS, raw, out, limit=3)


# ---------------------------------------------------------------- staging folders

def test_rerun_removes_what_a_killed_run_left_and_nothing_else(raw, out, tmp_path):
    pid = dead_pid()
    stale = [f".prep.{pid}.abc_1234.tmp", f".prep.{pid}.zz9zz9zz.old", ".prep.a1b2c3d4.tmp"]  # last: pid-less
    kept = [f".prep.{os.getpid()}.abcdefgh.tmp",  # a run still going (this process)
            ".prep.notes.tmp", ".prep.abcdefgh.tmp.bak", f".other.{pid}.abcdefgh.tmp", ".prep-copy"]
    for name in stale + kept:
        (tmp_path / name).mkdir()
        (tmp_path / name / "shard.u8").write_bytes(b"x" * 10)
    prepare(DS, raw, out, limit=2)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["prep", *kept])


def test_failure_mid_prepare_removes_its_staging_and_keeps_the_output(raw, out, tmp_path, monkeypatch):
    before = tree(out)

    def full_disk(*_args):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(staging, "make_view", full_disk)
    with pytest.raises(OSError):
        prepare(DS, raw, out, limit=2)
    assert tree(out) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["prep"]


def test_a_failed_rename_puts_the_previous_output_back(raw, out, tmp_path, monkeypatch):
    before, replace = tree(out), os.replace

    def refuse_staging(src, dst):
        if Path(src).name.endswith(".tmp"):
            raise OSError(30, "Read-only file system")
        replace(src, dst)

    monkeypatch.setattr(os, "replace", refuse_staging)
    with pytest.raises(OSError):
        prepare(DS, raw, out, limit=2)
    assert tree(out) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["prep"]


def test_synthetic_generate_owns_its_folder_like_prepare(raw, tmp_path):
    foreign = tmp_path / "data"
    foreign.mkdir()
    (foreign / synthetic.ATTRIBUTE_FILE).write_text("my own attributes\n")
    (foreign / "train").mkdir()
    before = tree(foreign)
    with pytest.raises(UserError) as err:
        synthetic.generate(foreign, num_images=20)
    assert one_line(err) == (f"{foreign} is not empty and was not written by `stackgan fetch synthetic`; "
                             "refusing to replace it: move it away or pass another --out")
    assert tree(foreign) == before
    ours = synthetic.generate(tmp_path / "ours", num_images=20)
    assert tree(ours) == tree(raw)
    (ours / synthetic.MARKER).unlink()  # as generated before markers existed: still recognised
    (tmp_path / f".ours.{dead_pid()}.abcdefgh.tmp").mkdir()
    synthetic.generate(ours, num_images=21)
    assert len((ours / "CUB_200_2011/images.txt").read_text().splitlines()) == 21
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data", "ours"]


# ---------------------------------------------------------------- damaged prepared data

def test_truncated_shard_is_named_when_the_split_opens(out):
    shard = out / "train" / f"images_{VIEW}.u8"
    size = shard.stat().st_size
    os.truncate(shard, size - 7)
    with pytest.raises(UserError) as err:
        PreparedSplit(out, "train")
    assert one_line(err) == f"{shard} is {size - 7} bytes, the manifest says {size}{DAMAGED}"
    assert len(PreparedSplit(out, "test")) == 3  # the other split is intact and still opens


def test_truncated_files_of_an_earlier_version_are_named_too(out):
    make_legacy(out)  # no sizes recorded: the shard's own index and numpy's header tell
    shard = out / "train" / f"images_{VIEW}.u8"
    size = shard.stat().st_size
    os.truncate(shard, size - 7)
    split = PreparedSplit(out, "train")
    with pytest.raises(UserError) as err:
        TextImageDataset(split, VIEW, [16])
    assert one_line(err) == f"{shard} is {size - 7} bytes, its index images_{VIEW}.idx.npy describes {size}{DAMAGED}"
    class_ids = out / "test" / "class_ids.npy"
    os.truncate(class_ids, class_ids.stat().st_size - 8)
    with pytest.raises(UserError, match=rf"^{re.escape(str(class_ids))} cannot be read as a numpy array .*"
                                        rf"{re.escape(DAMAGED)}$"):
        PreparedSplit(out, "test")


def test_truncated_encoded_shard_is_named(tmp_path):
    views = check_views({"sq8": {"mode": "square", "size": 8}})
    with EncodedShardWriter(tmp_path, views) as writer:
        for k in range(3):
            buf = io.BytesIO()
            Image.new("RGB", (10 + k, 12), (k * 40, 90, 200)).save(buf, "PNG")
            writer.append(buf.getvalue(), Image.open(io.BytesIO(buf.getvalue())).convert("RGB"))
    data = encoded_paths(tmp_path)[0]
    size = data.stat().st_size
    os.truncate(data, size - 1)
    with pytest.raises(UserError) as err:
        EncodedShardReader(tmp_path, "lsun-bedroom")
    assert one_line(err) == (f"{data} is {size - 1} bytes, its index source_images.idx.npy describes {size}; the "
                             "prepared data is damaged: run `stackgan prepare lsun-bedroom` again (or `dvc repro`)")


@pytest.mark.parametrize("damage,needle,named", [
    (lambda m: "{\"files\": ", "cannot be parsed", "<dataset>"),
    (lambda m: b"\xff\xfe".decode("latin1"), "cannot be parsed", "<dataset>"),
    (lambda m: "[1, 2]", "holds a list, not a manifest", "<dataset>"),
    (lambda m: json.dumps({k: v for k, v in m.items() if k != "files"}), "lacks files or holds the wrong type",
     "synthetic"),
    (lambda m: json.dumps({**m, "views": ["short20"]}), "lacks views or holds the wrong type", "synthetic"),
    (lambda m: json.dumps({**m, "files": {"../../outside.txt": "0" * 64}}), "relative paths inside the folder",
     "synthetic"),
    (lambda m: json.dumps({**m, "sizes": {"train/keys.txt": -1}}), "'sizes' is not a map", "synthetic"),
])
def test_corrupt_manifest_is_one_line_with_the_remedy(out, damage, needle, named):
    manifest_path = out / "manifest.json"
    manifest_path.write_text(damage(json.loads(manifest_path.read_text())), encoding="latin1")
    with pytest.raises(UserError) as err:
        PreparedSplit(out, "train")
    message = one_line(err)
    assert message.startswith(str(manifest_path)) and needle in message, message
    assert message.endswith(f"the prepared data is damaged: run `stackgan prepare {named}` again (or `dvc repro`)")
    with pytest.raises(UserError):
        verify_prepared(out)


def test_verify_finds_what_the_cheap_check_cannot(out):
    assert verify_prepared(out)["problems"] == []
    embeddings = out / "train" / "embeddings.npy"
    data = bytearray(embeddings.read_bytes())
    data[-1] ^= 0xFF  # same size, other content
    embeddings.write_bytes(bytes(data))
    (out / "test" / "keys.txt").unlink()
    (out / "test" / "extra.bin").write_bytes(b"?")
    PreparedSplit(out, "train")  # sizes all match: opens
    assert verify_prepared(out, hashes=False)["problems"] == [f"{out}/test/keys.txt is missing (the manifest lists it)",
                                                              f"{out}/test/extra.bin is not listed in the manifest"]
    report = verify_prepared(out, hashes=True)
    assert report["problems"] == [f"{out}/test/keys.txt is missing (the manifest lists it)",
                                  f"{embeddings} does not have the sha256 the manifest records",
                                  f"{out}/test/extra.bin is not listed in the manifest"]
    with pytest.raises(UserError) as err:
        check_prepared(out)
    assert one_line(err) == f"{out}/test/keys.txt is missing (the manifest lists it) (and 2 more problems){DAMAGED}"
    with pytest.raises(UserError, match=r"test/keys.txt is missing \(the manifest lists it\)"):
        PreparedSplit(out, "test")


def test_check_data_command_lists_every_problem_in_one_error(out, capsys):
    from stackgan.cli import main

    assert main(["check-data", "synthetic", "--dir", str(out)]) == 0
    assert capsys.readouterr().out.strip().endswith("sizes and sha256 match the manifest")
    shard = next(p for p in sorted(out.rglob("*.u8")))
    flipped = bytearray(shard.read_bytes())
    flipped[0] ^= 0xFF
    shard.write_bytes(bytes(flipped))  # same size: only the hash can tell
    (out / "train" / "stray.txt").write_text("not ours")
    assert main(["check-data", "synthetic", "--dir", str(out)]) == 2
    captured = capsys.readouterr()
    assert captured.out.splitlines() == [f"{shard} does not have the sha256 the manifest records",
                                         f"{out / 'train' / 'stray.txt'} is not listed in the manifest"]
    assert captured.err == (f"stackgan: error: {out}: 2 problem(s), listed above{DAMAGED}\n")
