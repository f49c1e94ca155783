"""`stackgan fetch NAME`: put a dataset's raw files in data/raw/<dataset>/, or a scoring network's
weights in data/weights/<weights name>/, verified.

Every file is downloaded into `<file>.part` (HTTP resumes it with a Range request; Google Drive
goes through gdown), checked against its pinned size and checksum, unpacked into a temporary
folder beside its destination and only then renamed into place, so an interrupted run never
leaves something that looks complete. `.fetched/<file>.json` records what was verified and
unpacked, so a re-run skips that work. A file with no pinned checksum has the sha256 and size of
its first verified download recorded in `<raw>/../.checksums.json` (data/raw/.checksums.json,
data/weights/.checksums.json); later fetches verify against that. A file whose name publishes only
the start of its sha256 (torch.hub's convention) is checked against that prefix and recorded too.
Such a first download is only accepted when it looks like the file (magic bytes, a plausible
size), so an error page is never recorded as the file. Archives are extracted member by member
by us, after every member's final path and link target has been checked to stay inside the raw
folder. ImageNet needs an account: it is never downloaded, only checked. The embedded
`synthetic` dataset is generated.
"""

import errno
import gzip
import hashlib
import http.client
import json
import os
import re
import shutil
import stat
import sys
import tarfile
import tempfile
import time
import urllib.error
import urllib.request
import zipfile
import zlib
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from tqdm import tqdm

from stackgan import sources
from stackgan.atomic import write_json
from stackgan.errors import UserError

CHUNK = 1 << 20
TIMEOUT_S = 60
NETWORK_ATTEMPTS = 3
RECORDS = ".checksums.json"
MARKERS = ".fetched"
# What a truncated or damaged archive raises while it is read.
ARCHIVE_ERRORS = (tarfile.TarError, zipfile.BadZipFile, EOFError, zlib.error, gzip.BadGzipFile)
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".ppm", ".bmp"}  # StackGAN-v2 datasets.py IMG_EXTENSIONS
# What a read-only, foreign or full disk raises while we write into the raw folder.
DISK_ERRNOS = {errno.EROFS, errno.EACCES, errno.EPERM, errno.ENOSPC, errno.EDQUOT}
OUTSIDE = "points outside the folder"


class RefusedMember(Exception):
    """An archive member that extraction will not write. Not a damaged download: it is neither
    retried nor reported as one."""

    def __init__(self, name: str, reason: str):
        super().__init__(f"member {name!r} {reason}")


def fetch(ds, out: Path):
    out = Path(out)
    if ds["source"] == "generated":
        from stackgan.data import synthetic

        synthetic.generate(out, num_images=ds["num_images"], seed=ds["seed"])
        return out
    if ds["source"] == "user":
        return verify_imagenet(ds, out)
    if ds["name"] not in sources.SOURCES:
        raise UserError(f"dataset '{ds['name']}' has no download sources in stackgan/sources.py; add its files there")
    files = [f for f in sources.SOURCES[ds["name"]] if not f.optional or ds.get("fetch_optional")]
    fetch_files(ds["name"], files, out)
    return out


def fetch_weights(name: str, out: Path):
    """Download a WEIGHTS entry of stackgan/sources.py into `out` (data/weights/<name>)."""
    out = Path(out)
    fetch_files(name, sources.WEIGHTS[name], out)
    return out


def fetch_files(dataset: str, files, raw: Path, records: Path | None = None):
    """Download, verify and unpack `files` (sources.RemoteFile) into `raw`."""
    raw = Path(raw)
    records = Path(records) if records else raw.parent / RECORDS
    for f in files:
        try:
            raw.mkdir(parents=True, exist_ok=True)
            _fetch_one(dataset, f, raw, records)
        except OSError as err:
            if err.errno not in DISK_ERRNOS:
                raise
            raise UserError(_disk_message(err, f, raw)) from None


def _disk_message(err: OSError, f, raw: Path) -> str:
    where = err.filename or raw / f.name  # a failed write() names no file
    reason = err.strerror or os.strerror(err.errno)
    # _unpack removes its staging folder whatever happens; a .part is valid progress.
    part = raw / f"{f.name}.part"
    kept = f"; {part} (downloaded so far) is kept, so a re-run continues from it" if part.exists() else ""
    if err.errno in (errno.ENOSPC, errno.EDQUOT):
        return (f"writing {where} failed ({reason}) while fetching {f.name}; free space on that disk and run fetch "
                f"again, or pass `stackgan fetch --out` a folder on a larger disk{kept}; no half-unpacked folder "
                f"is left")
    return (f"cannot write {where} ({reason}) while fetching {f.name}; make {raw} writable for this user, or pass "
            f"`stackgan fetch --out` a writable folder, and run fetch again{kept}")


# ---------------------------------------------------------------- one file

def _fetch_one(dataset, f, raw: Path, records: Path):
    expected, origin = _expected(dataset, f, records)
    final, part = raw / f.name, raw / f"{f.name}.part"
    if _marker_is_current(raw, f, final, expected):
        return
    for attempt in (1, 2):
        candidate = final if final.exists() else part  # an existing final file is a hand-placed copy
        if candidate is part:
            _download(f, part, final, expected.get("size"))
        actual = _digests(candidate)
        if origin is None:  # no full checksum vouches for it: is it the file at all?
            _check_looks_like(f, candidate, final, actual["size"], ours=candidate is part)
        problem = _mismatch(expected, actual)
        if problem is None:
            try:
                unpacked = _unpack(f, candidate, raw)
            except ARCHIVE_ERRORS as err:
                problem, actual["archive"] = "archive", f"{type(err).__name__}: {err}"
            except RefusedMember as err:
                raise UserError(f"archive {candidate} {err}; refusing: the archive is hostile or not the published "
                                f"one, so it is not downloaded again and is left at {candidate} for inspection; "
                                f"delete it and get the official file: {_by_hand(f, final)}") from None
        if problem is None:
            if candidate is part:
                os.replace(part, final)
            if not expected.get("md5") and not expected.get("sha256"):
                _record(records, f"{dataset}/{f.name}", actual, f.location())
            _write_marker(raw, f, final, actual, unpacked)
            return
        candidate.unlink()
        if attempt == 1:
            print(f"{candidate}: {problem} check failed; deleted it, fetching it once more", file=sys.stderr)
    raise UserError(_failure_message(f"{dataset}/{f.name}", final, f, problem, expected, actual, origin, records))


def _mismatch(expected: dict, actual: dict):
    """The first expected value the file does not have (size, md5, sha256, sha256_prefix), or None."""
    prefix = expected.get("sha256_prefix")
    if prefix is not None and not actual["sha256"].startswith(prefix):
        return "sha256_prefix"
    return next((k for k in ("size", "md5", "sha256") if expected.get(k) not in (None, actual[k])), None)


def _failure_message(key, final, f, problem, expected, actual, origin, records):
    if problem == "sha256_prefix":
        return (f"{final}: sha256 is {actual['sha256']}, expected one starting with {expected['sha256_prefix']} "
                f"(the hash in its published file name, pinned in stackgan/sources.py), after 2 downloads from "
                f"{f.location()}; the file was deleted; the server may have sent another file or the download "
                f"was damaged: download {f.location()} by hand to {final} and compare")
    if problem == "archive":
        return (f"{final} is a truncated or corrupt archive after 2 downloads ({actual['archive']}); it was deleted: "
                f"check the disk space and the network, then run fetch again, or download {f.location()} by hand "
                f"to {final}")
    remedy = (f"if the upstream file really changed, delete the '{key}' entry from {records} and run fetch again"
              if origin == str(records) else
              f"the official file may have changed or the server sent an error page; download {f.location()} by "
              f"hand to {final} and compare")
    return (f"{final}: {problem} is {actual[problem]}, expected {expected[problem]} ({origin}), after 2 downloads "
            f"from {f.location()}; the file was deleted; {remedy}")


def _by_hand(f, final: Path) -> str:
    if f.drive_id:
        key = f"&resourcekey={f.resourcekey}" if f.resourcekey else ""
        return (f"open https://drive.google.com/uc?id={f.drive_id}{key} in a browser, download the file and place "
                f"it at {final}")
    return f"download {f.location()} by hand to {final}"


# ---------------------------------------------------------------- what a file looks like

MAGIC = {kind: re.compile(pattern, re.DOTALL) for kind, pattern in {
    "zip": rb"PK\x03\x04|PK\x05\x06", "tar": rb".{257}ustar", "gzip": rb"\x1f\x8b", "bzip2": rb"BZh",
    "xz": rb"\xfd7zXZ\x00", "mat": rb"MATLAB",
    # protocol 2+ opens with PROTO; Python 2's default protocol 0 with MARK, an empty container or GLOBAL
    "pickle": rb"\x80[\x02-\x05]|[(\]})]|c[\w.]+\n\w+\n",
    "t7": rb"[\x03\x04]\x00\x00\x00",  # Torch7 serialisation: a table or an object
}.items()}
COMPRESSED_TAR = {"tar", "gzip", "bzip2", "xz"}  # a compressed tar shows its compressor's magic
KINDS_BY_UNPACK = {"zip": {"zip"}, "tar": COMPRESSED_TAR, "auto": {"zip", "pickle", "t7"} | COMPRESSED_TAR}
# torch.save writes a zip (torch >= 1.6) or, before that, a pickle stream.
KINDS_BY_SUFFIX = {".mat": {"mat"}, ".gz": {"gzip"}, ".pickle": {"pickle"}, ".pth": {"zip", "pickle"}}


def _is_html(head: bytes) -> bool:
    start = head.removeprefix(b"\xef\xbb\xbf").lstrip()[:14].lower()
    return start.startswith((b"<!doctype html", b"<html"))


def _check_looks_like(f, path: Path, final: Path, size: int, ours: bool):
    """Refuse a file that no checksum vouches for unless it has the magic bytes of what `f` is and
    a plausible size. Nothing is recorded for a refused file; one we downloaded is deleted."""
    with open(path, "rb") as fh:
        head = fh.read(512)
    kinds = KINDS_BY_UNPACK.get(f.unpack) or KINDS_BY_SUFFIX.get(Path(f.name).suffix, set())
    if _is_html(head):
        page = "Google Drive's quota or \"can't scan for viruses\" page" if f.drive_id else "an error or login page"
        what = f"is an HTML page ({page}), not the file"
    elif kinds and not any(MAGIC[kind].match(head) for kind in kinds):
        what = f"is not a {' or '.join(sorted(kinds))} file (it starts with {head[:8]!r})"
    elif f.min_size and size < f.min_size:
        what = f"is {size} bytes, too small to be the file (at least {f.min_size} expected)"
    else:
        return
    if ours:
        path.unlink()
    shown = f"the download of {final.name} from {f.location()}" if ours else f"{final}"
    fate = "it was deleted" if ours else "it was left in place"
    raise UserError(f"{shown} {what}; {fate} and no checksum was recorded: {_by_hand(f, final)}, then run fetch again")


def _expected(dataset, f, records: Path):
    """(expected size/md5/sha256/sha256_prefix, where the full checksum comes from): pinned values
    first, then the record of an earlier first download; None where no full checksum is known."""
    pinned = {k: getattr(f, k) for k in ("size", "md5", "sha256", "sha256_prefix") if getattr(f, k) is not None}
    if "md5" in pinned or "sha256" in pinned:
        return pinned, "pinned in stackgan/checksums.json"
    recorded = _load_records(records).get(f"{dataset}/{f.name}")
    if recorded:
        return {**pinned, **{k: recorded[k] for k in ("size", "sha256") if k in recorded}}, str(records)
    return pinned, None


def _digests(path: Path) -> dict:
    md5, sha256, size = hashlib.md5(), hashlib.sha256(), 0
    with open(path, "rb") as fh:
        while block := fh.read(CHUNK):
            md5.update(block)
            sha256.update(block)
            size += len(block)
    return {"size": size, "md5": md5.hexdigest(), "sha256": sha256.hexdigest()}


# ---------------------------------------------------------------- records and markers

def _load_records(path: Path) -> dict:
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text())["files"]
    except (ValueError, KeyError, TypeError):
        raise UserError(f"{path} is not a checksum record (JSON with a 'files' object); fix it or delete it "
                        f"(later downloads are then verified against a new first download)") from None


def _record(path: Path, key: str, actual: dict, source: str):
    files = _load_records(path)
    files[key] = {"sha256": actual["sha256"], "size": actual["size"], "source": source,
                  "recorded": datetime.now(timezone.utc).strftime("%Y-%m-%d")}
    write_json(path, {"about": "sha256 and size of first verified downloads that stackgan/checksums.json does "
                               "not pin; `stackgan fetch` verifies later downloads against them",
                      "files": files})
    print(f"{key}: no full checksum pinned; recorded sha256 {actual['sha256']} ({actual['size']} bytes) in {path}",
          file=sys.stderr)


def _marker_path(raw: Path, f) -> Path:
    return raw / MARKERS / f"{f.name}.json"


def _write_marker(raw, f, final: Path, actual: dict, unpacked):
    write_json(_marker_path(raw, f), {"file": f.name, "source": f.location(), "size": actual["size"],
                                      "md5": actual["md5"], "sha256": actual["sha256"],
                                      "mtime_ns": final.stat().st_mtime_ns, "unpacked": unpacked})


def _marker_is_current(raw, f, final: Path, expected) -> bool:
    """True when a previous run verified (and unpacked) this very file: its marker agrees with
    the expected checksum and the file is unchanged, or the file was removed after unpacking and
    everything it unpacked is still there."""
    try:
        marker = json.loads(_marker_path(raw, f).read_text())
    except (OSError, ValueError):
        return False
    if any(expected.get(k) not in (None, marker.get(k)) for k in ("size", "md5", "sha256")):
        return False
    if not str(marker.get("sha256", "")).startswith(expected.get("sha256_prefix", "")):
        return False
    if final.is_file():
        stat = final.stat()
        return stat.st_size == marker.get("size") and stat.st_mtime_ns == marker.get("mtime_ns")
    return bool(marker.get("unpacked")) and all((raw / name).exists() for name in marker["unpacked"])


# ---------------------------------------------------------------- transfer

def _download(f, part: Path, final: Path, size):
    if f.drive_id and f.resourcekey:
        # gdown rebuilds a Drive URL from the bare id, dropping the resourcekey that old "0B..."
        # ids need; Drive's direct endpoint takes it, and our HTTP path resumes.
        _download_http(sources.drive_direct_url(f.drive_id, f.resourcekey), part, final, size)
    elif f.drive_id:
        _download_drive(f, part, final)
    else:
        _download_http(f.url, part, final, size)


def _download_http(url: str, part: Path, final: Path, size=None):
    """Fill `part` with the body of `url`, resuming what an earlier run left there."""
    for attempt in range(1, NETWORK_ATTEMPTS + 1):
        start = part.stat().st_size if part.exists() else 0
        if size is not None and start >= size:
            return  # complete already; verification rejects a file that is too long
        try:
            _http_get(url, part, start)
            return
        except urllib.error.HTTPError as err:
            if err.code == 416 and start:
                return  # nothing left beyond `start`: the .part is complete
            if err.code < 500:
                raise UserError(f"{url} answered HTTP {err.code} {err.reason}; the official location may have "
                                f"moved: download the file by hand to {final}") from None
            reason = f"HTTP {err.code}"
        except (OSError, http.client.HTTPException) as err:  # URLError, timeouts, resets, IncompleteRead
            if isinstance(err, OSError) and err.errno in DISK_ERRNOS:
                raise  # writing the .part failed: retrying cannot help
            reason = f"{type(err).__name__}: {err}"
        if attempt < NETWORK_ATTEMPTS:
            print(f"{url}: {reason}; retrying ({attempt}/{NETWORK_ATTEMPTS})", file=sys.stderr)
            time.sleep(attempt)
    kept = f"the partial file {part} is kept: " if part.exists() else ""
    raise UserError(f"downloading {url} failed {NETWORK_ATTEMPTS} times ({reason}); {kept}run fetch again to resume, "
                    f"or download the file by hand to {final}")


def _http_get(url: str, part: Path, start: int):
    headers = {"User-Agent": "stackgan-repro-fetch"}
    if start:
        headers["Range"] = f"bytes={start}-"
    with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=TIMEOUT_S) as resp:
        resumed = bool(start) and resp.status == 206
        if start and not resumed:
            print(f"{url}: the server does not resume downloads; starting {part.name} again", file=sys.stderr)
        offset = start if resumed else 0
        length = resp.headers.get("Content-Length")
        total = offset + int(length) if length else None
        with open(part, "ab" if resumed else "wb") as out, \
                tqdm(total=total, initial=offset, unit="B", unit_scale=True, desc=part.name[:-5], disable=None) as bar:
            received = 0
            while block := resp.read(CHUNK):
                out.write(block)
                bar.update(len(block))
                received += len(block)
    # http.client returns a short body silently when the connection drops; treat it as an
    # interruption so the caller resumes from what arrived.
    if length and received < int(length):
        raise http.client.IncompleteRead(b"", int(length) - received)


def _download_drive(f, part: Path, final: Path):
    if part.exists():
        return  # only ever renamed from gdown's finished output: verification decides
    by_hand = _by_hand(f, final)
    try:
        import gdown
    except ImportError:
        raise UserError(f"{final.name} is on Google Drive, which needs the gdown client: `pip install gdown` and run "
                        f"fetch again, or {by_hand}") from None
    staged = part.with_name(f"{f.name}.gdown")
    try:
        # gdown handles Drive's confirmation page and resumes its own temporary file (<staged>*).
        got = gdown.download(url=f.location(), output=str(staged), quiet=False, resume=True)
        reason = "no file returned"
    except Exception as err:  # noqa: BLE001 -- gdown raises many types for refused or rate-limited files
        if isinstance(err, OSError) and err.errno in DISK_ERRNOS:
            raise
        got, reason = None, f"{type(err).__name__}: {err}"
    if not got or not staged.is_file():
        raise UserError(f"Google Drive did not deliver {final.name} ({reason}; often a permission or quota "
                        f"limit); {by_hand}, then run fetch again")
    os.replace(staged, part)


# ---------------------------------------------------------------- unpacking

def _archive_kind(f, path: Path):
    if f.unpack != "auto":
        return f.unpack
    if zipfile.is_zipfile(path):
        return "zip"
    return "tar" if tarfile.is_tarfile(path) else None


def _unpack(f, archive: Path, raw: Path):
    """Extract into a temporary folder inside `raw`, check it, then rename its top-level entries
    into `raw`. Returns the names placed there (None when the file is not unpacked)."""
    kind = _archive_kind(f, archive)
    if kind is None:
        return None
    for stale in raw.glob(f".{f.name}.*.unpack"):  # left by a killed run
        shutil.rmtree(stale, ignore_errors=True)
    stage = Path(tempfile.mkdtemp(prefix=f".{f.name}.", suffix=".unpack", dir=raw))
    try:
        _extract(kind, archive, stage, f.strip, f.keep)
        missing = [p for p in f.expect if not (stage / p).exists() and not (raw / p).exists()]
        if missing:
            raise UserError(f"{archive} unpacked without {missing[0]}; the upstream archive differs from the one "
                            f"stackgan/sources.py describes: unpack it by hand so that {raw / missing[0]} exists")
        names = sorted(entry.name for entry in stage.iterdir())
        for entry in stage.iterdir():
            _merge(entry, raw / entry.name)
        return names
    finally:
        shutil.rmtree(stage, ignore_errors=True)


@dataclass
class _Member:
    name: str  # as stored in the archive
    type: str  # file, dir, symlink, hardlink, device (character, block, FIFO) or other
    target: str | None  # a link's target as stored
    info: object  # the ZipInfo or TarInfo that reads a file's data


def _extract(kind, archive: Path, stage: Path, strip, keep):
    """Write the archive's members to their paths after `strip` and `keep`, once every one of
    them has been checked (_plan)."""
    if kind == "zip":
        with zipfile.ZipFile(archive) as zf:
            _write(stage, _plan([_zip_member(zf, info) for info in zf.infolist()], strip, keep), zf.open)
        return  # zipfile checks every member's CRC as it is read
    with tarfile.open(archive, "r:*") as tf:
        _write(stage, _plan([_tar_member(m) for m in tf.getmembers()], strip, keep), tf.extractfile)


def _zip_member(zf, info) -> _Member:
    mode = info.external_attr >> 16  # the Unix mode, where the zip was made on Unix
    if info.is_dir() or stat.S_ISDIR(mode):
        return _Member(info.filename, "dir", None, info)
    if stat.S_ISLNK(mode):  # the member's data is the link's target
        with zf.open(info) as fh:
            target = fh.read(4097)
        if len(target) > 4096:  # longer than any path the OS takes
            return _Member(info.filename, "other", None, info)
        return _Member(info.filename, "symlink", target.decode("utf-8", "surrogateescape"), info)
    if stat.S_IFMT(mode) in (0, stat.S_IFREG):
        return _Member(info.filename, "file", None, info)
    device = stat.S_ISCHR(mode) or stat.S_ISBLK(mode) or stat.S_ISFIFO(mode)
    return _Member(info.filename, "device" if device else "other", None, info)


def _tar_member(m) -> _Member:
    kind = ("dir" if m.isdir() else "file" if m.isreg() else "symlink" if m.issym() else
            "hardlink" if m.islnk() else "device" if m.ischr() or m.isblk() or m.isfifo() else "other")
    return _Member(m.name, kind, m.linkname if kind in ("symlink", "hardlink") else None, m)


def _parts(name: str):
    """The path components of an archive name; None for an absolute name or one with `..`."""
    parts = tuple(p for p in name.split("/") if p not in ("", "."))
    return None if name.startswith("/") or ".." in parts else parts


def _rewrite(parts: tuple, strip: tuple, keep):
    """The components after `strip`, or None for a member that is not extracted."""
    if strip:
        if parts[:len(strip)] != strip:
            return None
        parts = parts[len(strip):]
    rel = "/".join(parts)
    return None if keep and not any(rel.startswith(k) for k in keep) else parts


def _plan(members, strip, keep):
    """(path in the stage, member, hard-link source) for each member to write. Every check runs on
    the path after strip, before anything is written: a path must stay inside and not pass
    through a link or file; a link's target, followed from the link's own place (through the
    archive's other links), must stay inside; devices, FIFOs and other kinds are refused."""
    named = []
    for m in members:  # refused wherever they are: no published archive holds them
        parts = _parts(m.name)
        if parts is None:
            raise RefusedMember(m.name, OUTSIDE)
        if m.type == "device":
            raise RefusedMember(m.name, "is a device/FIFO")
        if m.type == "other":
            raise RefusedMember(m.name, "is not a regular file, folder or link")
        named.append((parts, m))
    strip = tuple(strip.split("/")) if strip else ()
    # As documented in sources.py, strip applies only when the archive has that folder.
    if strip and not any(p[:len(strip)] == strip and (len(p) > len(strip) or m.type == "dir") for p, m in named):
        strip = ()
    rewritten = [(rel, m) for parts, m in named if (rel := _rewrite(parts, strip, keep)) is not None]
    links = {"/".join(rel): m.target for rel, m in rewritten if m.type == "symlink"}
    for rel, m in rewritten:
        if m.type == "symlink" and _resolve(list(rel[:-1]), m.target, links) is None:
            raise RefusedMember(m.name, _outside(m))
    plan, seen = [], {}
    for rel, m in rewritten:
        if not rel:  # the stripped folder itself: anything but a folder would replace the raw folder
            if m.type == "dir":
                continue
            raise RefusedMember(m.name, _outside(m))
        for i in range(1, len(rel)):
            above = "/".join(rel[:i])
            if seen.setdefault(above, "dir") != "dir":
                raise RefusedMember(m.name, f"would be written through {above!r}, which is a link or a file")
        path, kind, source = "/".join(rel), "file" if m.type == "hardlink" else m.type, None
        if m.type == "hardlink":  # its target is an earlier member's stored name
            target = _parts(m.target)
            target = target and _rewrite(target, strip, keep)
            source = "/".join(target) if target else None
            if seen.get(source) != "file" or source == path:
                raise RefusedMember(m.name, _outside(m))
        if seen.setdefault(path, kind) != kind:
            raise RefusedMember(m.name, "clashes with another member of the same path")
        plan.append((path, m, source))
    return plan


def _outside(m) -> str:
    return f"(a link to {m.target!r}) {OUTSIDE}" if m.target is not None else OUTSIDE


def _resolve(folder: list, target: str, links: dict, depth=0):
    """The stage-relative components that `target` reaches from `folder`, following the archive's
    links as the OS would; None when it leaves the stage (or loops)."""
    if target.startswith("/") or depth > 40:
        return None
    path = list(folder)
    for part in target.split("/"):
        if part in ("", "."):
            continue
        if part == "..":
            if not path:
                return None
            path.pop()
            continue
        path.append(part)
        if "/".join(path) in links:
            path = _resolve(path[:-1], links["/".join(path)], links, depth + 1)
            if path is None:
                return None
    return path


def _write(stage: Path, plan, open_member):
    for path, m, source in plan:
        dest = stage / path
        if m.type == "dir":
            dest.mkdir(parents=True, exist_ok=True)
            continue
        dest.parent.mkdir(parents=True, exist_ok=True)
        if os.path.lexists(dest):  # a later member of the same path replaces the earlier one, as tar does
            dest.unlink()
        if m.type == "symlink":
            os.symlink(m.target, dest)
        elif m.type == "hardlink":
            os.link(stage / source, dest)
        else:
            with open_member(m.info) as src, open(dest, "xb") as out:
                shutil.copyfileobj(src, out, CHUNK)


def _merge(src: Path, dst: Path):
    """Rename src to dst; folders that both exist are merged entry by entry (never through a link)."""
    if src.is_dir() and not src.is_symlink() and dst.is_dir() and not dst.is_symlink():
        for child in src.iterdir():
            _merge(child, dst / child.name)
        return
    if dst.is_dir() and not dst.is_symlink():
        shutil.rmtree(dst)
    os.replace(src, dst)


# ---------------------------------------------------------------- ImageNet

def verify_imagenet(ds, out: Path):
    """Check the user-provided ILSVRC-2012 class folders, count their images and, when they live
    elsewhere (`user_dir`, data/user/imagenet tracked by data.dvc), record in `out` what was
    verified so that `prepare` reads exactly that."""
    from stackgan.data import imagenet

    out = Path(out)
    raw = Path(ds.get("user_dir") or out)
    wnids = sources.IMAGENET[ds["name"]]
    listed, required = wnids["listed"], wnids["required"]
    train = raw / "train"
    which = " ".join(required) if len(required) <= 5 else f"listed in stackgan/sources.py for {ds['name']}"
    how = (f"ImageNet needs an account and is never downloaded: get {sources.IMAGENET_ARCHIVE} (ILSVRC-2012 "
           f"training images) from {sources.IMAGENET_URL}, then for each of the {len(required)} wnids "
           f"({which}) run `tar -xf {sources.IMAGENET_ARCHIVE} WNID.tar && mkdir -p "
           f"{train}/WNID && tar -xf WNID.tar -C {train}/WNID`, and run fetch again to verify")
    if not train.is_dir():
        loose = [w for w in required if (raw / w).is_dir()]
        hint = f"; the wnid folders in {raw}/ belong in {train}/" if loose else ""
        raise UserError(f"{train}/ not found{hint}; {how}")
    missing = [w for w in required if not (train / w).is_dir()]
    if missing:
        raise UserError(f"{train}/ lacks {len(missing)} of the {len(required)} wnid folders {ds['name']} needs "
                        f"(first: {', '.join(missing[:3])}); {how}")
    counts = {w: sum(1 for p in (train / w).rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
              for w in listed if (train / w).is_dir()}
    empty = [w for w in required if counts[w] == 0]
    if empty:
        raise UserError(f"{train / empty[0]}/ holds no images (.JPEG); {how}")
    total = sum(counts.values())
    expected = (ds.get("expected_counts") or {}).get("all")
    if expected is not None and total != expected:
        raise UserError(f"{train}/ holds {total} images in {len(counts)} of {ds['name']}'s wnid folders, expected "
                        f"{expected} (ILSVRC-2012 train); re-extract the incomplete class folders from "
                        f"{sources.IMAGENET_ARCHIVE}")
    if raw != out:
        imagenet.write_record(out, raw, ds["subset"])
    print(f"{ds['name']}: {total} images in {len(counts)} wnid folders under {train}/ (verified)", file=sys.stderr)
    return out
