"""`stackgan fetch <weights name>` against a local HTTP server (no internet), and the offline lookup
of every scoring network's weights (stackgan/metrics/weights.py)."""

import dataclasses
import io
import json
import re
import sys
from pathlib import Path

import pytest
import torch

from stackgan import cli, sources
from stackgan import fetch as F
from stackgan.errors import UserError
from stackgan.metrics import weights
import test_fetch
from test_fetch import _zip, fake_gdown, sha256
from test_fetch_hostile import DRIVE_PAGE

server = test_fetch.server  # the local HTTP server fixture

TF_EXACT = "inception-2015-12-05"
ZIP_KEY = "stackgan-inception"


def _pth(n=4096) -> bytes:
    buf = io.BytesIO()
    torch.save({"w": torch.arange(n, dtype=torch.float32)}, buf)
    return buf.getvalue()


@pytest.fixture
def home(tmp_path, monkeypatch):
    """A scratch repository root (data/weights/ relative to it) and torch home."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))
    return tmp_path


def _pin(monkeypatch, key, body, url=None, prefix=None):
    """WEIGHTS[key] (and its lookup) with the sha256 prefix of `body` unless given, fetched from `url`."""
    entry = sources.WEIGHTS[key][0]
    local = dataclasses.replace(entry, url=url or entry.url, min_size=len(body) // 2,
                                sha256_prefix=prefix or sha256(body)[:8])
    monkeypatch.setitem(sources.WEIGHTS, key, [local])
    monkeypatch.setitem(weights.FETCHED, key, local)
    return local


def _serve(server, monkeypatch, key, body, prefix=None):
    name = sources.WEIGHTS[key][0].name
    server.files[f"/{name}"] = body
    return _pin(monkeypatch, key, body, server.url(f"/{name}"), prefix)


def _fetch(*argv):
    # the subcommand alone: main() would also pin the process's CPU threads
    args = cli.build_parser().parse_args(["fetch", *argv])
    args.fn(args)


def test_weights_table_names_files_as_torch_hub_does():
    assert set(sources.WEIGHTS) == {TF_EXACT, "torchvision-inception-v3", ZIP_KEY}
    for key in weights.FETCHED:
        (f,) = sources.WEIGHTS[key]
        assert re.fullmatch(r".*-([0-9a-f]{8})\.pth", f.name).group(1) == f.sha256_prefix
        assert f.url.endswith(f"/{f.name}") and f.unpack is None
    assert (weights.INCEPTION_FILE, weights.FETCHED[TF_EXACT].sha256_prefix) == \
        ("weights-inception-2015-12-05-6726825d.pth", "6726825d")
    (z,) = sources.WEIGHTS[ZIP_KEY]
    assert (z.drive_id, z.resourcekey, z.unpack) == ("0B3y_msrWZaXLMzNMNWhWdW0zVWs", "0-gBxxw4fU6ikmNtkfFSQALw", "zip")
    entries = {f"{n}/{f.name}" for table in (sources.SOURCES, sources.WEIGHTS) for n, fs in table.items() for f in fs}
    assert set(sources.pinned_checksums()) <= entries


def test_fetch_writes_verified_weights_to_data_weights_and_records_the_full_sha256(home, server, monkeypatch,
                                                                                   capsys):
    body = _pth()
    f = _serve(server, monkeypatch, TF_EXACT, body)
    _fetch(TF_EXACT)
    folder = Path("data/weights") / TF_EXACT
    assert capsys.readouterr().out.strip() == str(folder)
    assert (folder / f.name).read_bytes() == body
    record = json.loads(Path("data/weights/.checksums.json").read_text())["files"][f"{TF_EXACT}/{f.name}"]
    assert (record["sha256"], record["size"]) == (sha256(body), len(body))
    assert [p.name for p in folder.iterdir() if p.name.endswith(".part")] == []
    _fetch(TF_EXACT)  # verified already: no request
    assert len(server.log) == 1
    assert weights.locate(TF_EXACT) == folder / f.name


def test_resume_of_a_part_requests_only_the_remainder(home, server, monkeypatch):
    body = _pth(50_000)
    f = _serve(server, monkeypatch, "torchvision-inception-v3", body)
    folder = home / "data/weights/torchvision-inception-v3"
    folder.mkdir(parents=True)
    (folder / f"{f.name}.part").write_bytes(body[:70_000])
    _fetch("torchvision-inception-v3")
    assert server.log == [(f"/{f.name}", "bytes=70000-")] and server.sent == [len(body) - 70_000]
    assert (folder / f.name).read_bytes() == body


def test_wrong_sha256_prefix_is_fetched_once_more_then_named_in_one_line(home, server, monkeypatch):
    body = _pth()
    f = _serve(server, monkeypatch, TF_EXACT, body, prefix="00000000")
    with pytest.raises(UserError) as err:
        _fetch(TF_EXACT)
    msg, final = str(err.value), Path("data/weights") / TF_EXACT / f.name
    assert "\n" not in msg and len(server.log) == 2
    assert f"{final}: sha256 is {sha256(body)}, expected one starting with 00000000" in msg
    assert not final.exists() and not Path(f"{final}.part").exists()
    assert not Path("data/weights/.checksums.json").exists()


def test_html_page_in_place_of_the_weights_is_refused_and_not_recorded(home, server, monkeypatch):
    f = _serve(server, monkeypatch, TF_EXACT, DRIVE_PAGE * 50, prefix=sha256(_pth())[:8])
    with pytest.raises(UserError, match=f"the download of {f.name} from .* is an HTML page") as err:
        _fetch(TF_EXACT)
    assert "it was deleted and no checksum was recorded" in str(err.value) and len(server.log) == 1
    assert not Path("data/weights/.checksums.json").exists() and not any((home / "data/weights" / TF_EXACT).iterdir())


def test_a_file_that_is_neither_zip_nor_pickle_is_refused_as_pth(home, server, monkeypatch):
    body = b"GIF89a" + bytes(20_000)
    f = _serve(server, monkeypatch, TF_EXACT, body)  # even with a matching prefix: it is not a torch file
    with pytest.raises(UserError, match=f"{f.name} from .* is not a pickle or zip file"):
        _fetch(TF_EXACT)


def test_hand_placed_correct_file_is_accepted_without_download(home, server, monkeypatch):
    body = _pth()
    f = _serve(server, monkeypatch, TF_EXACT, body)
    folder = home / "data/weights" / TF_EXACT
    folder.mkdir(parents=True)
    (folder / f.name).write_bytes(body)
    _fetch(TF_EXACT)
    assert server.log == [] and (folder / ".fetched" / f"{f.name}.json").is_file()


def test_offline_fetch_says_where_to_put_the_file(home, monkeypatch):
    monkeypatch.setattr(F, "NETWORK_ATTEMPTS", 1)
    entry = sources.WEIGHTS[TF_EXACT][0]
    monkeypatch.setitem(sources.WEIGHTS, TF_EXACT, [dataclasses.replace(entry, url="http://127.0.0.1:9/x.pth")])
    with pytest.raises(UserError) as err:
        _fetch(TF_EXACT, "--out", str(home / "w"))
    msg = str(err.value)
    assert "\n" not in msg and f"download the file by hand to {home / 'w' / entry.name}" in msg


@pytest.mark.parametrize("name,hint", [("inception-2015", "did you mean inception-2015-12-05?"),
                                       ("cubb", "did you mean cub?")])
def test_unknown_name_suggests_datasets_and_weights(name, hint):
    args = cli.build_parser().parse_args(["--params", str(Path(__file__).parents[1] / "params.yaml"), "fetch", name])
    with pytest.raises(UserError) as err:
        args.fn(args)
    assert str(err.value) == f"unknown dataset or weights '{name}'; {hint}"


def _fake_drive_endpoint(monkeypatch, body):
    """Drive's direct endpoint, which this machine cannot reach: records each URL asked for."""
    calls = []

    def download_http(url, part, final, size=None):
        calls.append(url)
        part.write_bytes(body)

    monkeypatch.setattr(F, "_download_http", download_http)
    return calls


def test_authors_zip_is_unpacked_and_named_in_the_convert_command(home, monkeypatch):
    ckpt = "inception_finetuned_models/birds_valid299/model.ckpt-5000"
    body = _zip({ckpt: b"\x00" * 5000, f"{ckpt}.meta": b"graph", "inception_finetuned_models/flowers_valid299/"
                 "model.ckpt-5000.index": b"i", "inception_finetuned_models/flowers_valid299/model.ckpt-5000."
                 "data-00000-of-00001": b"d" * 5000})
    monkeypatch.setitem(sources.WEIGHTS, ZIP_KEY, [dataclasses.replace(sources.WEIGHTS[ZIP_KEY][0], min_size=1000)])
    gdown_calls = fake_gdown(monkeypatch, b"")
    calls = _fake_drive_endpoint(monkeypatch, body)
    _fetch(ZIP_KEY)
    # gdown would drop the resourcekey: the keyed file goes to Drive's direct endpoint with it
    assert gdown_calls == [] and calls == [
        "https://drive.usercontent.google.com/download?id=0B3y_msrWZaXLMzNMNWhWdW0zVWs&export=download&confirm=t"
        "&resourcekey=0-gBxxw4fU6ikmNtkfFSQALw"]
    folder = Path("data/weights") / ZIP_KEY
    assert (folder / ckpt).read_bytes() == b"\x00" * 5000
    assert f"{ZIP_KEY}/inception_finetuned_models.zip" in Path("data/weights/.checksums.json").read_text()
    with pytest.raises(UserError) as err:
        weights.locate("cub-inc")
    assert str(err.value).endswith(f"run `stackgan convert-inception {folder / ckpt} --out data/weights/cub-inc.pth`")
    flowers = folder / "inception_finetuned_models/flowers_valid299/model.ckpt-5000"
    assert f"`stackgan convert-inception {flowers} --out data/weights/oxford102-inc.pth`" in weights.remedy(
        "oxford102-inc")


def test_html_page_in_place_of_the_authors_zip_is_refused(home, monkeypatch):
    _fake_drive_endpoint(monkeypatch, DRIVE_PAGE)
    with pytest.raises(UserError, match="is an HTML page \\(Google Drive's quota") as err:
        _fetch(ZIP_KEY)
    assert "resourcekey=0-gBxxw4fU6ikmNtkfFSQALw in a browser" in str(err.value)
    assert not Path("data/weights/.checksums.json").exists()


def test_locate_prefers_data_weights_over_the_hub_cache(home, monkeypatch):
    body = _pth()
    f = _pin(monkeypatch, TF_EXACT, body)
    hub = home / "torch-home" / "hub" / "checkpoints" / f.name
    hub.parent.mkdir(parents=True)
    hub.write_bytes(body)
    assert weights.locate(TF_EXACT) == hub  # today's place, still found
    fetched = Path("data/weights") / TF_EXACT / f.name
    fetched.parent.mkdir(parents=True)
    fetched.write_bytes(body)
    assert weights.locate(TF_EXACT) == fetched
    fetched.write_bytes(body[:-10])  # a damaged copy is not passed over for the hub's
    with pytest.raises(UserError, match=f"{fetched} does not match its sha256 prefix .*stackgan fetch {TF_EXACT}"):
        weights.locate(TF_EXACT)


@pytest.mark.parametrize("key,needles", [
    (TF_EXACT, ["stackgan fetch inception-2015-12-05", "data/weights/inception-2015-12-05",
                weights.INCEPTION_URL, "hub/checkpoints"]),
    ("torchvision-inception-v3", ["stackgan fetch torchvision-inception-v3",
                                  "https://download.pytorch.org/models/inception_v3_google-0cc3c7bd.pth"]),
    ("cub-inc", ["missing data/weights/cub-inc.pth", "run `stackgan fetch stackgan-inception`, then `stackgan "
                 "convert-inception data/weights/stackgan-inception/<birds checkpoint, e.g. inception_finetuned_models/"
                 "birds_valid299/model.ckpt-5000> --out data/weights/cub-inc.pth`"]),
    ("oxford102-inc", ["missing data/weights/oxford102-inc.pth", "stackgan fetch stackgan-inception",
                       "<flowers checkpoint, e.g. inception_finetuned_models/flowers_valid299/model.ckpt-5000> "
                       "--out data/weights/oxford102-inc.pth"]),
    ("cub-ft", ["cub-ft.pth", "`classifier` stage for cub"]),
    ("oxford102-ft", ["oxford102-ft.pth", "`classifier` stage for oxford102"]),
    ("synthetic-clf", ["synthetic-clf.pt", "`classifier` stage for synthetic"]),
])
def test_missing_weights_are_one_line_with_the_command_to_run(home, key, needles):
    assert key in weights.KEYS
    with pytest.raises(UserError) as err:
        weights.locate(key)
    msg = str(err.value)
    assert "\n" not in msg and "; " in msg
    for needle in needles:
        assert needle in msg, (needle, msg)


def test_unknown_weights_key_lists_the_known(home):
    with pytest.raises(UserError, match="no scoring weights are named 'imagenet'; known: inception-2015-12-05, "):
        weights.locate("imagenet")
