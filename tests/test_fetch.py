"""`stackgan fetch` against a local HTTP server (no internet): verified, resumable, atomic."""

import hashlib
import io
import json
import sys
import tarfile
import threading
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import yaml

from stackgan import fetch as F
from stackgan import sources
from stackgan.errors import UserError
from stackgan.sources import RemoteFile


class _Handler(BaseHTTPRequestHandler):
    """Serves server.files; honours `Range: bytes=N-` only when server.ranges is set. With
    server.cut_next set, the next answer announces the full length but sends half and closes."""

    def do_GET(self):
        srv = self.server
        body, rng = srv.files.get(self.path), self.headers.get("Range")
        srv.log.append((self.path, rng))
        if body is None:
            self.send_error(404)
            return
        start = int(rng.removeprefix("bytes=").split("-")[0]) if rng and srv.ranges else 0
        if start >= len(body) > 0:
            self.send_response(416)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        self.send_response(206 if start else 200)
        if start:
            self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
        chunk = body[start:]
        self.send_header("Content-Length", str(len(chunk)))
        self.end_headers()
        if srv.cut_next:
            srv.cut_next = False
            chunk = chunk[: len(chunk) // 2]
            self.close_connection = True
        srv.sent.append(len(chunk))  # before writing: the client may finish before this thread resumes
        self.wfile.write(chunk)

    def log_message(self, *args):
        pass


@pytest.fixture
def server():
    srv = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    srv.files, srv.log, srv.sent, srv.ranges, srv.cut_next = {}, [], [], True, False
    srv.url = lambda path: f"http://127.0.0.1:{srv.server_address[1]}{path}"
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()
    thread.join(timeout=5)


def _tar_gz(files: dict) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def _zip(files: dict) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:  # stored: equal-length contents give equal-length zips
        for name, data in files.items():
            zf.writestr(name, data)
    return buf.getvalue()


def _payload(n=200_000, seed=1) -> bytes:
    # Incompressible bytes, so archives of them stay large enough to truncate meaningfully.
    out, block = bytearray(), str(seed).encode()
    while len(out) < n:
        block = hashlib.sha256(block).digest()
        out += block
    return bytes(out[:n])


def md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _no_temporaries(raw: Path):
    left = [p.name for p in raw.iterdir() if p.name.endswith((".part", ".unpack"))]
    assert left == [], left


def test_full_verified_download_unpacks_once_and_rerun_skips(server, tmp_path):
    archive = _tar_gz({"CUB_200_2011/images.txt": b"1 a.jpg\n", "CUB_200_2011/images/a.jpg": _payload(5000),
                       "attributes.txt": b"1 x\n"})
    server.files["/CUB_200_2011.tgz"] = archive
    f = RemoteFile("CUB_200_2011.tgz", url=server.url("/CUB_200_2011.tgz"), md5=md5(archive), size=len(archive),
                   unpack="tar", expect=("CUB_200_2011/images.txt",))
    raw = tmp_path / "raw" / "cub"
    F.fetch_files("cub", [f], raw)
    assert (raw / "CUB_200_2011.tgz").read_bytes() == archive
    assert (raw / "CUB_200_2011" / "images" / "a.jpg").read_bytes() == _payload(5000)
    assert (raw / "attributes.txt").read_bytes() == b"1 x\n"
    marker = json.loads((raw / ".fetched" / "CUB_200_2011.tgz.json").read_text())
    assert marker["md5"] == md5(archive) and marker["unpacked"] == ["CUB_200_2011", "attributes.txt"]
    assert not (raw.parent / ".checksums.json").exists()  # pinned: nothing to record
    _no_temporaries(raw)
    assert len(server.log) == 1

    F.fetch_files("cub", [f], raw)  # verified work is skipped: no request, no re-extraction
    (raw / "CUB_200_2011.tgz").unlink()  # the archive removed to save space: its contents still count
    F.fetch_files("cub", [f], raw)
    assert len(server.log) == 1


def test_resume_requests_only_the_remainder(server, tmp_path):
    body = _payload(300_000)
    server.files["/train_32x32.mat"] = body
    raw = tmp_path / "svhn"
    raw.mkdir()
    (raw / "train_32x32.mat.part").write_bytes(body[:123_456])
    F.fetch_files("svhn", [RemoteFile("train_32x32.mat", url=server.url("/train_32x32.mat"), md5=md5(body))], raw)
    assert server.log == [("/train_32x32.mat", "bytes=123456-")]
    assert server.sent == [len(body) - 123_456]
    assert (raw / "train_32x32.mat").read_bytes() == body
    _no_temporaries(raw)


def test_server_without_range_support_restarts_from_zero(server, tmp_path):
    body = _payload(100_000)
    server.files["/x.mat"], server.ranges = body, False
    raw = tmp_path / "svhn"
    raw.mkdir()
    (raw / "x.mat.part").write_bytes(b"stale bytes from another version")
    F.fetch_files("svhn", [RemoteFile("x.mat", url=server.url("/x.mat"), sha256=sha256(body))], raw)
    assert server.log == [("/x.mat", "bytes=32-")] and server.sent == [len(body)]
    assert (raw / "x.mat").read_bytes() == body


def test_connection_cut_mid_transfer_is_resumed(server, tmp_path):
    body = _payload(400_000)
    server.files["/big.mat"], server.cut_next = body, True
    raw = tmp_path / "svhn"
    F.fetch_files("svhn", [RemoteFile("big.mat", url=server.url("/big.mat"), md5=md5(body), size=len(body))], raw)
    assert [r for _, r in server.log] == [None, f"bytes={len(body) // 2}-"]
    assert (raw / "big.mat").read_bytes() == body


def test_wrong_checksum_refetches_once_then_names_file_and_checksums(server, tmp_path):
    body = _payload(50_000)
    server.files["/t10k.gz"] = body
    raw = tmp_path / "mnist"
    wrong = "0" * 32
    with pytest.raises(UserError) as err:
        F.fetch_files("mnist", [RemoteFile("t10k.gz", url=server.url("/t10k.gz"), md5=wrong)], raw)
    msg = str(err.value)
    assert str(raw / "t10k.gz") in msg and wrong in msg and md5(body) in msg
    assert len(server.log) == 2
    assert not (raw / "t10k.gz").exists() and not (raw / "t10k.gz.part").exists()


def test_hand_placed_file_is_verified_without_download(server, tmp_path):
    body = _payload(10_000)
    raw = tmp_path / "mnist"
    raw.mkdir()
    (raw / "a.gz").write_bytes(body)
    F.fetch_files("mnist", [RemoteFile("a.gz", url=server.url("/a.gz"), md5=md5(body))], raw)
    assert server.log == [] and (raw / ".fetched" / "a.gz.json").is_file()


def test_truncated_archive_is_detected(server, tmp_path):
    archive = _tar_gz({"jpg/image_00001.jpg": _payload(100_000)})
    server.files["/102flowers.tgz"] = archive[: len(archive) // 2]
    raw = tmp_path / "raw" / "oxford102"
    f = RemoteFile("102flowers.tgz", url=server.url("/102flowers.tgz"), unpack="tar")
    with pytest.raises(UserError, match="truncated or corrupt archive") as err:
        F.fetch_files("oxford102", [f], raw)
    assert str(raw / "102flowers.tgz") in str(err.value)
    assert len(server.log) == 2
    assert not (raw / "jpg").exists() and not (raw / ".fetched").exists()
    assert not (raw.parent / ".checksums.json").exists()  # nothing verified, nothing recorded
    _no_temporaries(raw)


def test_first_download_records_checksum_and_later_fetches_verify_it(server, tmp_path):
    metadata = _zip({"birds/train/filenames.pickle": b"train keys", "birds/test/filenames.pickle": b"test keys"})
    server.files["/birds.zip"] = metadata
    raw = tmp_path / "raw" / "cub"
    f = RemoteFile("birds.zip", url=server.url("/birds.zip"), unpack="zip", strip="birds",
                   expect=("train/filenames.pickle",))
    F.fetch_files("cub", [f], raw)
    assert (raw / "train" / "filenames.pickle").read_bytes() == b"train keys"  # birds/ stripped
    records = json.loads((tmp_path / "raw" / ".checksums.json").read_text())["files"]
    assert records["cub/birds.zip"]["sha256"] == sha256(metadata)
    assert records["cub/birds.zip"]["size"] == len(metadata)

    changed = _zip({"birds/train/filenames.pickle": b"train KEYS", "birds/test/filenames.pickle": b"test keys"})
    assert len(changed) == len(metadata)
    server.files["/birds.zip"] = changed
    (raw / "birds.zip").unlink()
    (raw / ".fetched" / "birds.zip.json").unlink()
    with pytest.raises(UserError) as err:
        F.fetch_files("cub", [f], raw)
    assert f"sha256 is {sha256(changed)}, expected {sha256(metadata)}" in str(err.value)
    assert str(tmp_path / "raw" / ".checksums.json") in str(err.value)
    assert len(server.log) == 3


def test_archive_without_expected_content_is_refused(server, tmp_path):
    server.files["/birds.zip"] = _zip({"other/readme.txt": b"x"})
    f = RemoteFile("birds.zip", url=server.url("/birds.zip"), unpack="zip", strip="birds",
                   expect=("train/filenames.pickle",))
    with pytest.raises(UserError, match="unpacked without train/filenames.pickle"):
        F.fetch_files("cub", [f], tmp_path / "cub")


def test_missing_file_on_server_is_a_user_error(server, tmp_path):
    with pytest.raises(UserError, match="HTTP 404"):
        F.fetch_files("svhn", [RemoteFile("gone.mat", url=server.url("/gone.mat"))], tmp_path / "svhn")


def test_google_drive_without_gdown_says_what_to_do(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "gdown", None)  # import gdown -> ImportError
    raw = tmp_path / "cub"
    with pytest.raises(UserError) as err:
        F.fetch_files("cub", [RemoteFile("birds.zip", drive_id="0B3y_msrWZaXLT1BZdVdycDY5TEE", unpack="zip")], raw)
    msg = str(err.value)
    assert "pip install gdown" in msg
    assert "https://drive.google.com/uc?id=0B3y_msrWZaXLT1BZdVdycDY5TEE" in msg and str(raw / "birds.zip") in msg


def fake_gdown(monkeypatch, body) -> list:
    """A stand-in for the gdown client (not installed here): writes `body` to `output` as gdown
    does; returns the list of URLs it was asked for."""
    calls = []

    def download(url, output, quiet, resume):
        calls.append(url)
        Path(output).write_bytes(body)
        return output

    monkeypatch.setitem(sys.modules, "gdown", type(sys)("gdown"))
    monkeypatch.setattr(sys.modules["gdown"], "download", download, raising=False)
    return calls


def test_google_drive_download_through_gdown_is_verified_and_unpacked(tmp_path, monkeypatch):
    metadata = _zip({"flowers/train/filenames.pickle": b"keys"})
    calls = fake_gdown(monkeypatch, metadata)
    raw = tmp_path / "raw" / "oxford102"
    f = RemoteFile("flowers.zip", drive_id="ID123", unpack="zip", strip="flowers")  # keyed files: test_fetch_weights
    F.fetch_files("oxford102", [f], raw)
    assert calls == ["https://drive.google.com/uc?id=ID123&export=download"]
    assert (raw / "train" / "filenames.pickle").read_bytes() == b"keys"
    assert json.loads((raw.parent / ".checksums.json").read_text())["files"]["oxford102/flowers.zip"]["sha256"] \
        == sha256(metadata)
    _no_temporaries(raw)
    assert not (raw / "flowers.zip.gdown").exists()


def _imagenet(tmp_path, wnids, per_class=2):
    raw = tmp_path / "imagenet-cat"
    for w in wnids:
        (raw / "train" / w).mkdir(parents=True)
        for i in range(per_class):
            (raw / "train" / w / f"{w}_{i}.JPEG").write_bytes(b"jpeg")
    return raw


def test_imagenet_missing_folder_explains_what_to_download(tmp_path):
    ds = {"name": "imagenet-dog", "source": "user", "expected_counts": {"all": 147873}}
    with pytest.raises(UserError) as err:
        F.fetch(ds, tmp_path / "imagenet-dog")
    msg = str(err.value)
    assert "ILSVRC2012_img_train.tar" in msg and str(tmp_path / "imagenet-dog" / "train") in msg
    assert "account" in msg


def test_imagenet_folders_are_verified_and_counted(tmp_path):
    ds = {"name": "imagenet-cat", "source": "user", "subset": "cat", "expected_counts": {"all": 10}}
    raw = _imagenet(tmp_path, sources.CAT_WNIDS_IN_ILSVRC)
    assert F.fetch(ds, raw) == raw  # 5 of the 17 listed wnids, 2 images each
    ds["expected_counts"]["all"] = 6500
    with pytest.raises(UserError, match="holds 10 images in 5 .* expected 6500"):
        F.fetch(ds, raw)
    dog = {"name": "imagenet-dog", "source": "user"}
    with pytest.raises(UserError, match="lacks 118 of the 118 wnid folders"):
        F.fetch(dog, raw)


def test_imagenet_missing_one_required_wnid(tmp_path):
    raw = _imagenet(tmp_path, sources.CAT_WNIDS_IN_ILSVRC[1:])
    with pytest.raises(UserError, match=f"lacks 1 of the 5 .*{sources.CAT_WNIDS_IN_ILSVRC[0]}"):
        F.fetch({"name": "imagenet-cat", "source": "user"}, raw)


def test_every_downloaded_dataset_has_sources_and_every_pin_an_entry():
    params = yaml.safe_load((Path(__file__).parents[1] / "params.yaml").read_text())
    downloaded = {n for n, d in params["datasets"].items() if d["source"] == "download"}
    assert downloaded <= set(sources.SOURCES)
    entries = {f"{ds}/{f.name}" for ds, files in sources.SOURCES.items() for f in files}
    pins = sources.pinned_checksums()
    assert set(pins) <= entries
    for pin in pins.values():
        assert len(pin.get("md5", "0" * 32)) == 32 and len(pin.get("sha256", "0" * 64)) == 64
    assert len(sources.DOG_WNIDS) == len(set(sources.DOG_WNIDS)) == 118
    assert len(sources.CAT_WNIDS) == 17 and set(sources.CAT_WNIDS_IN_ILSVRC) <= set(sources.CAT_WNIDS)
    cifar = sources.SOURCES["cifar10"][0]
    assert (cifar.md5, cifar.size) == ("c58f30108f718f92721af3b95e74349a", 170498071)
