"""`stackgan fetch DATASET`: put a dataset's raw files in data/raw/<dataset>/, verified.

Every file is downloaded into `<file>.part` (HTTP resumes it with a Range request; Google Drive
goes through gdown), checked against its pinned size and checksum, unpacked into a temporary
folder beside its destination and only then renamed into place, so an interrupted run never
leaves something that looks complete. `.fetched/<file>.json` records what was verified and
unpacked, so a re-run skips that work. A file with no pinned checksum has the sha256 and size of
its first verified download recorded in `<raw>/../.checksums.json` (data/raw/.checksums.json);
later fetches verify against that. ImageNet needs an account: it is never downloaded, only
checked. The embedded `synthetic` dataset is generated.
"""

import gzip
import hashlib
import http.client
import json
import os
import shutil
import sys
import tarfile
import tempfile
import time
import urllib.error
import urllib.request
import zipfile
import zlib
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


def fetch_files(dataset: str, files, raw: Path, records: Path | None = None):
    """Download, verify and unpack `files` (sources.RemoteFile) into `raw`."""
    raw = Path(raw)
    raw.mkdir(parents=True, exist_ok=True)
    records = Path(records) if records else raw.parent / RECORDS
    for f in files:
        _fetch_one(dataset, f, raw, records)


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
        problem = next((k for k in ("size", "md5", "sha256") if expected.get(k) not in (None, actual[k])), None)
        if problem is None:
            try:
                unpacked = _unpack(f, candidate, raw)
            except ARCHIVE_ERRORS as err:
                problem, actual["archive"] = "archive", f"{type(err).__name__}: {err}"
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


def _failure_message(key, final, f, problem, expected, actual, origin, records):
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


def _expected(dataset, f, records: Path):
    """(expected size/md5/sha256, where they come from): pinned values first, then the record
    of an earlier first download."""
    pinned = {k: getattr(f, k) for k in ("size", "md5", "sha256") if getattr(f, k) is not None}
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
    print(f"{key}: no pinned checksum; recorded sha256 {actual['sha256']} ({actual['size']} bytes) in {path}",
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
    if final.is_file():
        stat = final.stat()
        return stat.st_size == marker.get("size") and stat.st_mtime_ns == marker.get("mtime_ns")
    return bool(marker.get("unpacked")) and all((raw / name).exists() for name in marker["unpacked"])


# ---------------------------------------------------------------- transfer

def _download(f, part: Path, final: Path, size):
    if f.drive_id:
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
    by_hand = f"download https://drive.google.com/uc?id={f.drive_id} in a browser and place it at {final}"
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
        root = stage / f.strip if f.strip and (stage / f.strip).is_dir() else stage
        missing = [p for p in f.expect if not (root / p).exists() and not (raw / p).exists()]
        if missing:
            raise UserError(f"{archive} unpacked without {missing[0]}; the upstream archive differs from the one "
                            f"stackgan/sources.py describes: unpack it by hand so that {raw / missing[0]} exists")
        names = sorted(entry.name for entry in root.iterdir())
        for entry in root.iterdir():
            _merge(entry, raw / entry.name)
        return names
    finally:
        shutil.rmtree(stage, ignore_errors=True)


def _member_path(name: str, strip, keep):
    """The member's path after `strip`, or None when `keep` excludes it."""
    rel = name[len(strip) + 1:] if strip and name.startswith(f"{strip}/") else name
    return None if keep and not any(rel.startswith(k) for k in keep) else rel


def _extract(kind, archive: Path, stage: Path, strip, keep):
    if kind == "zip":
        with zipfile.ZipFile(archive) as zf:
            members = [n for n in zf.namelist() if _member_path(n, strip, keep) is not None]
            zf.extractall(stage, members=members)  # zipfile checks every member's CRC
        return
    with tarfile.open(archive, "r:*") as tf:
        members = (m for m in tf if _member_path(m.name.removeprefix("./"), strip, keep) is not None)
        # The "data" filter refuses absolute paths and links out of the stage (Python >= 3.10.12 / 3.11.4).
        tf.extractall(stage, members=members, **({"filter": "data"} if hasattr(tarfile, "data_filter") else {}))


def _merge(src: Path, dst: Path):
    """Rename src to dst; folders that both exist are merged entry by entry."""
    if src.is_dir() and dst.is_dir() and not dst.is_symlink():
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
