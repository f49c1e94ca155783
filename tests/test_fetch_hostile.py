"""`stackgan fetch` against hostile or wrong input: archives that try to write outside the raw
folder, error pages in place of unpinned files, and disks that refuse writes. Each case is built
here; downloads are faked, so no network is used."""

import dataclasses
import errno
import io
import os
import pickle
import stat
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

from stackgan import fetch as F
from stackgan import sources
from stackgan.errors import UserError
from stackgan.sources import RemoteFile

DRIVE_PAGE = (b"\n  <!DOCTYPE html><html><head><title>Google Drive - Virus scan warning</title></head><body>"
              b"Google Drive can't scan this file for viruses.</body></html>\n")


def _tar(entries) -> bytes:
    """entries: (name, kind, data or link target); kind is a tarfile type."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        for name, kind, value in entries:
            info = tarfile.TarInfo(name)
            info.type = kind
            if kind == tarfile.REGTYPE:
                info.size = len(value)
                tf.addfile(info, io.BytesIO(value))
                continue
            if kind in (tarfile.SYMTYPE, tarfile.LNKTYPE):
                info.linkname = value
            if kind in (tarfile.CHRTYPE, tarfile.BLKTYPE):
                info.devmajor, info.devminor = 1, 3  # /dev/null
            tf.addfile(info)
    return buf.getvalue()


def _zip(entries) -> bytes:
    """entries: (name, unix mode, data); a symlink's data is its target."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, mode, data in entries:
            info = zipfile.ZipInfo(name)
            info.create_system, info.external_attr = 3, mode << 16
            zf.writestr(info, data)
    return buf.getvalue()


REG, DIR, SYM, LNK = tarfile.REGTYPE, tarfile.DIRTYPE, tarfile.SYMTYPE, tarfile.LNKTYPE
FILE_MODE, LINK_MODE = stat.S_IFREG | 0o644, stat.S_IFLNK | 0o777


@pytest.fixture
def place(tmp_path):
    """raw = <tmp>/data/raw/cub beside a sibling folder <tmp>/data/raw/other and <tmp>/outside."""
    raw = tmp_path / "data" / "raw" / "cub"
    other = tmp_path / "data" / "raw" / "other"
    other.mkdir(parents=True)
    (other / "secret").write_bytes(b"keep me")
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "notes.txt").write_bytes(b"mine")
    return raw


def _snapshot(root: Path, skip: Path) -> dict:
    """Everything under root except skip: path -> (link target or content, link count)."""
    seen = {}
    for folder, dirs, files in os.walk(root):
        if Path(folder) == skip or skip in Path(folder).parents:
            continue
        for name in dirs + files:
            p = Path(folder) / name
            if p == skip:
                continue
            info = p.lstat()
            content = os.readlink(p) if p.is_symlink() else p.read_bytes() if p.is_file() else "dir"
            seen[str(p.relative_to(root))] = (content, info.st_nlink if p.is_file() else None)
    return seen


@pytest.fixture
def downloads(monkeypatch):
    """Every download writes `downloads.body` to the .part; `downloads.calls` counts them."""
    state = type("Downloads", (), {"body": b"", "calls": 0})()

    def download(f, part, final, size):
        state.calls += 1
        part.write_bytes(state.body)

    monkeypatch.setattr(F, "_download", download)
    return state


def _refused(raw, downloads, body, f, member_text):
    """Fetch `f` serving `body`; assert the one-line refusal and that nothing outside raw changed."""
    before = _snapshot(raw.parents[2], raw)
    downloads.body = body
    with pytest.raises(UserError) as err:
        F.fetch_files("cub", [f], raw)
    msg = str(err.value)
    part = raw / f"{f.name}.part"
    assert f"archive {part} member {member_text}; refusing" in msg
    assert "\n" not in msg and "not downloaded again" in msg and f"left at {part}" in msg
    assert downloads.calls == 1
    assert part.read_bytes() == body  # left for inspection
    assert _snapshot(raw.parents[2], raw) == before
    assert sorted(p.name for p in raw.iterdir()) == [part.name]  # no stage, marker or extracted member
    assert not (raw.parent / ".checksums.json").exists()
    return msg


def _archive(name, **kw):
    return RemoteFile(name, url=f"http://example.invalid/{name}", **kw)


TARGZ = _archive("a.tar.gz", unpack="tar", strip="top")
ZIP = _archive("a.zip", unpack="zip", strip="top")


def test_tar_member_with_dotdot_is_refused(place, downloads):
    body = _tar([("top/ok.txt", REG, b"x"), ("top/../../other/pwned", REG, b"evil")])
    _refused(place, downloads, body, TARGZ, "'top/../../other/pwned' points outside the folder")


def test_zip_member_with_dotdot_is_refused(place, downloads):
    body = _zip([("top/ok.txt", FILE_MODE, b"x"), ("../other/pwned", FILE_MODE, b"evil")])
    _refused(place, downloads, body, ZIP, "'../other/pwned' points outside the folder")


@pytest.mark.parametrize("kind", ["tar", "zip"])
def test_absolute_member_is_refused(place, downloads, kind):
    target = place.parent / "other" / "pwned"
    body = (_tar([(str(target), REG, b"evil")]) if kind == "tar" else _zip([(str(target), FILE_MODE, b"evil")]))
    _refused(place, downloads, body, TARGZ if kind == "tar" else ZIP, f"'{target}' points outside the folder")
    assert not target.exists()


@pytest.mark.parametrize("kind", ["tar", "zip"])
def test_symlink_to_outside_is_refused(place, downloads, kind):
    target = "../../other/pwned"
    if kind == "tar":
        body = _tar([("top/ok.txt", REG, b"x"), ("top/evil", SYM, target)])
    else:
        body = _zip([("top/ok.txt", FILE_MODE, b"x"), ("top/evil", LINK_MODE, target.encode())])
    _refused(place, downloads, body, TARGZ if kind == "tar" else ZIP,
             f"'top/evil' (a link to '{target}') points outside the folder")


def test_absolute_symlink_is_refused(place, downloads):
    target = str(place.parent / "other" / "secret")
    _refused(place, downloads, _tar([("top/evil", SYM, target), ("top/evil2", REG, b"x")]), TARGZ,
             f"'top/evil' (a link to '{target}') points outside the folder")


@pytest.mark.parametrize("target", ["../other/secret", "absolute"])
def test_hard_link_to_outside_is_refused(place, downloads, target):
    secret = place.parent / "other" / "secret"
    target = str(secret) if target == "absolute" else target
    _refused(place, downloads, _tar([("top/ok.txt", REG, b"x"), ("top/h", LNK, target), ("top/h", REG, b"over")]),
             TARGZ, f"'top/h' (a link to '{target}') points outside the folder")
    assert secret.read_bytes() == b"keep me" and secret.stat().st_nlink == 1


def test_link_that_escapes_only_after_strip_is_refused(place, downloads):
    # Where it is stored, top/x -> ../pwned stays in the archive's folder; once top/ is stripped,
    # x -> ../pwned leaves it (raw/x would point at data/raw/pwned).
    body = _tar([("top/ok.txt", REG, b"x"), ("top/x", SYM, "../pwned")])
    _refused(place, downloads, body, TARGZ, "'top/x' (a link to '../pwned') points outside the folder")
    assert not (place.parent / "pwned").exists()


def test_zip_link_that_escapes_only_after_strip_is_refused(place, downloads):
    body = _zip([("top/ok.txt", FILE_MODE, b"x"), ("top/x", LINK_MODE, b"../pwned")])
    _refused(place, downloads, body, ZIP, "'top/x' (a link to '../pwned') points outside the folder")


def test_link_named_like_the_strip_root_is_refused(place, downloads):
    body = _tar([("top", SYM, "../../other"), ("top/pwned", REG, b"evil")])
    _refused(place, downloads, body, TARGZ, "'top' (a link to '../../other') points outside the folder")
    assert not (place.parent / "other" / "pwned").exists()


def test_strip_root_that_is_a_link_inside_is_refused(place, downloads):
    # Even pointing inside, a link in place of the stripped folder would replace the raw folder itself.
    body = _tar([("sub/a", REG, b"x"), ("top", SYM, "sub"), ("top/b", REG, b"y")])
    _refused(place, downloads, body, TARGZ, "'top' (a link to 'sub') points outside the folder")


def test_link_chain_that_escapes_is_refused(place, downloads):
    # a/b/d -> ../.. is the folder itself, so e -> a/b/d/../x is its parent: only following
    # the archive's own links, as the OS will, shows it.
    body = _tar([("a/b/d", SYM, "../.."), ("e", SYM, "a/b/d/../x")])
    _refused(place, downloads, body, _archive("a.tar.gz", unpack="tar"),
             "'e' (a link to 'a/b/d/../x') points outside the folder")


def test_member_written_through_a_link_is_refused(place, downloads):
    body = _tar([("top/sub/keep", REG, b"x"), ("top/d", SYM, "sub"), ("top/d/new", REG, b"y")])
    _refused(place, downloads, body, TARGZ, "'top/d/new' would be written through 'd', which is a link or a file")


@pytest.mark.parametrize("kind", [tarfile.FIFOTYPE, tarfile.CHRTYPE, tarfile.BLKTYPE])
def test_tar_fifo_and_device_members_are_refused(place, downloads, kind):
    _refused(place, downloads, _tar([("top/ok.txt", REG, b"x"), ("top/dev", kind, None)]), TARGZ,
             "'top/dev' is a device/FIFO")


def test_zip_device_member_is_refused(place, downloads):
    _refused(place, downloads, _zip([("top/ok.txt", FILE_MODE, b"x"), ("top/dev", stat.S_IFCHR | 0o600, b"")]),
             ZIP, "'top/dev' is a device/FIFO")


def test_links_inside_the_folder_are_kept(place, downloads):
    downloads.body = _tar([("top/train/a.txt", REG, b"a"), ("top/latest", SYM, "train"),
                           ("top/train/b.txt", LNK, "top/train/a.txt"), ("outer.txt", REG, b"dropped")])
    F.fetch_files("cub", [dataclasses.replace(TARGZ, expect=("train/a.txt",))], place)
    assert os.readlink(place / "latest") == "train" and (place / "latest" / "a.txt").read_bytes() == b"a"
    assert (place / "train" / "b.txt").read_bytes() == b"a"
    assert not (place / "outer.txt").exists() and not (place / "top").exists()  # outside the stripped folder
    assert not [p for p in place.iterdir() if p.name.endswith((".unpack", ".part"))]


# ---------------------------------------------------------------- unpinned first downloads

UNPINNED = [(ds, f) for ds, files in sources.SOURCES.items() for f in files if not f.md5 and not f.sha256]


def test_unpinned_files_are_the_ones_expected():
    names = {f"{ds}/{f.name}" for ds, f in UNPINNED}
    assert {"cub/birds.zip", "oxford102/flowers.zip", "coco/stackgan-coco-train",
            "lsun-bedroom/bedroom_train_lmdb.zip"} <= names
    assert all(f.min_size for _, f in UNPINNED)


@pytest.fixture
def fake_network(monkeypatch):
    """gdown (for Drive) and the HTTP transfer both deliver `net.body`; `net.calls` counts them."""
    net = type("Net", (), {"body": b"", "calls": 0})()

    def gdown_download(url, output, quiet, resume):
        net.calls += 1
        Path(output).write_bytes(net.body)
        return output

    def http_get(url, part, start):
        net.calls += 1
        part.write_bytes(net.body)

    monkeypatch.setitem(sys.modules, "gdown", type(sys)("gdown"))
    monkeypatch.setattr(sys.modules["gdown"], "download", gdown_download, raising=False)
    monkeypatch.setattr(F, "_http_get", http_get)
    return net


@pytest.mark.parametrize("ds,f", UNPINNED, ids=[f"{ds}/{f.name}" for ds, f in UNPINNED])
def test_html_page_in_place_of_an_unpinned_file_is_refused_and_not_recorded(tmp_path, fake_network, ds, f):
    raw = tmp_path / "raw" / ds
    fake_network.body = DRIVE_PAGE
    with pytest.raises(UserError) as err:
        F.fetch_files(ds, [f], raw)
    msg, final = str(err.value), raw / f.name
    assert "\n" not in msg and f"the download of {f.name} from {f.location()} is an HTML page" in msg
    assert "it was deleted and no checksum was recorded" in msg
    if f.drive_id:
        assert "quota or \"can't scan for viruses\" page" in msg
        assert f"open https://drive.google.com/uc?id={f.drive_id} in a browser, download the file and place it at " \
               f"{final}, then run fetch again" in msg
    else:
        assert f"download {f.url} by hand to {final}, then run fetch again" in msg
    assert fake_network.calls == 1
    assert not (tmp_path / "raw" / ".checksums.json").exists()
    assert not final.exists() and not (raw / f"{f.name}.part").exists() and not (raw / ".fetched").exists()


def _birds():
    return next(f for f in sources.SOURCES["cub"] if f.name == "birds.zip")


def test_wrong_kind_of_file_is_refused(tmp_path, fake_network):
    fake_network.body = pickle.dumps({"not": "a zip"}, protocol=2) * 1000
    raw = tmp_path / "raw" / "cub"
    with pytest.raises(UserError, match=r"birds.zip from .* is not a zip file \(it starts with b'\\x80\\x02") as err:
        F.fetch_files("cub", [_birds()], raw)
    assert "open https://drive.google.com/uc?id=0B3y_msrWZaXLT1BZdVdycDY5TEE in a browser" in str(err.value)
    assert not (tmp_path / "raw" / ".checksums.json").exists() and not (raw / "birds.zip.part").exists()


def test_implausibly_small_first_download_is_refused(tmp_path, fake_network):
    fake_network.body = _zip([("birds/train/filenames.pickle", FILE_MODE, b"keys")])
    with pytest.raises(UserError, match=r"is \d+ bytes, too small to be the file \(at least 52428800 expected\)"):
        F.fetch_files("cub", [_birds()], tmp_path / "raw" / "cub")
    assert fake_network.calls == 1 and not (tmp_path / "raw" / ".checksums.json").exists()


def test_hand_placed_html_page_is_refused_but_left_in_place(tmp_path, fake_network):
    raw = tmp_path / "raw" / "cub"
    raw.mkdir(parents=True)
    (raw / "birds.zip").write_bytes(DRIVE_PAGE)
    with pytest.raises(UserError, match=f"{raw / 'birds.zip'} is an HTML page .* it was left in place"):
        F.fetch_files("cub", [_birds()], raw)
    assert (raw / "birds.zip").read_bytes() == DRIVE_PAGE and fake_network.calls == 0


@pytest.mark.parametrize("body", [
    pickle.dumps([b"a" * 64] * 20, protocol=0),  # Python 2's default protocol
    pickle.dumps(list(range(1000)), protocol=2),
    _zip([("coco/train/filenames.pickle", FILE_MODE, b"k" * 2000)]),
    _tar([("coco/train/filenames.pickle", REG, bytes(range(256)) * 8)]),
], ids=["pickle-0", "pickle-2", "zip", "tar.gz"])
def test_first_download_of_an_expected_kind_is_recorded(tmp_path, fake_network, body):
    # The COCO Drive files' format is undocumented: each of these is a kind they may be.
    coco_eval = next(f for f in sources.SOURCES["coco"] if f.name == "stackgan-coco-eval")
    fake_network.body = body
    raw = tmp_path / "raw" / "coco"
    F.fetch_files("coco", [dataclasses.replace(coco_eval, min_size=len(body))], raw)
    assert (raw / "stackgan-coco-eval").read_bytes() == body
    assert "coco/stackgan-coco-eval" in (tmp_path / "raw" / ".checksums.json").read_text()


# ---------------------------------------------------------------- disks that refuse writes

def test_disk_full_during_download_keeps_the_part_and_does_not_retry(tmp_path, monkeypatch):
    calls = []

    def http_get(url, part, start):
        calls.append(start)
        with open(part, "ab") as out:
            out.write(b"x" * 1000)
        raise OSError(errno.ENOSPC, "No space left on device")  # as write() reports it: no file name

    monkeypatch.setattr(F, "_http_get", http_get)
    raw = tmp_path / "svhn"
    with pytest.raises(UserError) as err:
        F.fetch_files("svhn", [RemoteFile("x.mat", url="http://example.invalid/x.mat", md5="0" * 32)], raw)
    msg = str(err.value)
    assert msg == (f"writing {raw / 'x.mat'} failed (No space left on device) while fetching x.mat; free space on "
                   f"that disk and run fetch again, or pass `stackgan fetch --out` a folder on a larger disk; "
                   f"{raw / 'x.mat.part'} (downloaded so far) is kept, so a re-run continues from it; no "
                   f"half-unpacked folder is left")
    assert calls == [0] and (raw / "x.mat.part").stat().st_size == 1000


def test_disk_full_while_unpacking_removes_the_stage(place, downloads, monkeypatch):
    downloads.body = _tar([("top/a.txt", REG, b"a"), ("top/b.txt", REG, b"b" * 100)])
    real_copy, copies = F.shutil.copyfileobj, []

    def copy(src, dst, length=0):
        copies.append(dst.name)
        if len(copies) == 2:
            raise OSError(errno.ENOSPC, "No space left on device")
        real_copy(src, dst, length)

    monkeypatch.setattr(F.shutil, "copyfileobj", copy)
    with pytest.raises(UserError, match=r"failed \(No space left on device\) while fetching a.tar.gz; free space.*"
                                        r"a.tar.gz.part \(downloaded so far\) is kept"):
        F.fetch_files("cub", [TARGZ], place)
    assert len(copies) == 2
    assert sorted(p.name for p in place.iterdir()) == ["a.tar.gz.part"]  # the half-filled stage is gone


@pytest.mark.parametrize("code,reason", [(errno.EROFS, "Read-only file system"), (errno.EACCES, "Permission denied")])
def test_unwritable_raw_folder_is_one_line(tmp_path, monkeypatch, code, reason):
    def http_get(url, part, start):
        raise OSError(code, reason, str(part))

    monkeypatch.setattr(F, "_http_get", http_get)
    raw = tmp_path / "svhn"
    with pytest.raises(UserError) as err:
        F.fetch_files("svhn", [RemoteFile("x.mat", url="http://example.invalid/x.mat", md5="0" * 32)], raw)
    assert str(err.value) == (f"cannot write {raw / 'x.mat.part'} ({reason}) while fetching x.mat; make {raw} "
                              f"writable for this user, or pass `stackgan fetch --out` a writable folder, and run "
                              f"fetch again")


def test_unwritable_checksum_record_is_one_line(tmp_path, downloads, monkeypatch):
    def refuse(path, obj):
        raise PermissionError(errno.EACCES, "Permission denied", str(path))

    monkeypatch.setattr(F, "write_json", refuse)
    downloads.body = _zip([("top/a.txt", FILE_MODE, b"a")])
    raw = tmp_path / "raw" / "cub"
    with pytest.raises(UserError, match=f"cannot write {tmp_path / 'raw' / '.checksums.json'} \\(Permission denied\\)"):
        F.fetch_files("cub", [ZIP], raw)
    assert not [p for p in raw.iterdir() if p.name.endswith(".unpack")]
