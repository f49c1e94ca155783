"""Content hashes: of files (weights, prepared data) and of JSON-able values (configs, cache keys).
Every hash the harness records or keys a cache with comes from here."""

import hashlib
import json
from pathlib import Path

_file_cache: dict[tuple, str] = {}


def sha256_file(path) -> str:
    """sha256 hex digest of a file, remembered per (path, size, mtime) within this process."""
    path = Path(path)
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    if key not in _file_cache:
        digest = hashlib.sha256()
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
        _file_cache[key] = digest.hexdigest()
    return _file_cache[key]


def sha256_json(value, length: int = 64, default=None) -> str:
    """sha256 of a value's canonical JSON (sorted keys), cut to `length` hex digits. `default`
    as json.dumps's, for values JSON cannot encode (e.g. str for paths)."""
    text = json.dumps(value, sort_keys=True, default=default)
    return hashlib.sha256(text.encode()).hexdigest()[:length]
